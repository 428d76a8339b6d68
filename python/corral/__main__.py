"""`python -m corral ...` is the `corral` command."""

from corral.cluster.cli import main

if __name__ == "__main__":
    main()
