"""Keel's version (one place; ``core.__version__`` re-exports it)."""

__version__ = "0.1.0"
