"""Typed exceptions of ``trustfl.defenses.dedup``."""

from __future__ import annotations

from trustfl.errors import TrustFLError

__all__ = ["DedupError"]


class DedupError(TrustFLError, ValueError):
    """Bad dedup input or parameters: the message names the argument, echoes the value and states the rule."""
