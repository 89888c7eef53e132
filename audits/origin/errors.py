"""Typed exceptions of ``trustfl.audits.origin``."""

from __future__ import annotations

from trustfl.errors import TrustFLError

__all__ = ["OriginError"]


class OriginError(TrustFLError, ValueError):
    """Bad origin-check input or parameters (missing file, empty corpus, missing column, bad
    threshold): the message names the argument, echoes the value and states the rule or fix."""
