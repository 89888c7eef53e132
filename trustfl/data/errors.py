"""Typed exceptions of `trustfl.data`.

Both subclass the shared `TrustFLError` and a builtin (`RuntimeError` / `ValueError`), so
callers can catch them narrowly or with the usual builtin.
"""

from __future__ import annotations

from trustfl.errors import TrustFLError


class DataSourceError(TrustFLError, RuntimeError):
    """A data source could not be located, read or mapped to `text`/`label` columns."""


class PartitionError(TrustFLError, ValueError):
    """A split or partition is impossible with the given arguments (the message names them)."""
