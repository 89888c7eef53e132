"""The single source of trustfl's version: pyproject reads it (``dynamic = ["version"]``) and
``trustfl.__version__`` re-exports it."""

__version__ = "0.1.0"
