"""Typed exception of ``trustfl.text``."""

from __future__ import annotations

from trustfl.errors import TrustFLError

__all__ = ["TextError"]


class TextError(TrustFLError, ValueError):
    """Bad input to a text primitive (key, codes, shingles, index search, embeddings): the message
    names the argument, echoes the value and states the rule."""
