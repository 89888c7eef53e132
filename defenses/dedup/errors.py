"""Typed exceptions of ``trustfl.defenses.dedup``."""

from __future__ import annotations

from trustfl.text.errors import TextError

__all__ = ["DedupError"]


class DedupError(TextError):
    """Bad dedup input or parameters: the message names the argument, echoes the value and states the rule.

    A :class:`~trustfl.text.TextError`, so ``except TextError`` also catches errors of the text
    primitives (keys, MinHash, SimHash, FAISS search) that dedup uses.
    """
