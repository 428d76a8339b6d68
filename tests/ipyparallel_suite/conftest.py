# Tooling for running ipyparallel's own test suite against corral (run.sh); nothing here is
# a test of this repository's default `pytest` run.
collect_ignore_glob = ["*"]
