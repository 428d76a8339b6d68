"""corral: interactive parallel computing with a Rust core, speaking ipyparallel's protocol."""

from corral._core import __version__

__all__ = ["__version__"]
