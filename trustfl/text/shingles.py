"""Shingles: the overlapping character or word n-grams whose sets MinHash and Jaccard compare.

Character shingles are substrings of ``n`` characters of the normalised text; word shingles
are ``n`` consecutive words joined by one space. A text shorter than one shingle is a single
shingle (the whole normalised text), so no text has an empty shingle set.
"""

from __future__ import annotations

from typing import Literal

from trustfl.text.errors import TextError
from trustfl.text.normalize import normalize_for_matching

__all__ = ["ShingleUnit", "jaccard", "shingle_list", "shingle_set"]

ShingleUnit = Literal["char", "word"]


def shingle_list(text: str, unit: ShingleUnit = "char", n: int = 5, *, normalized: bool = False) -> list[str]:
    """Shingles of ``text`` in order (repeats kept); ``normalized=True`` if it already is
    :func:`~trustfl.text.normalize.normalize_for_matching` output.

    Example:
        >>> shingle_list("Hello!", "char", 3)
        ['hel', 'ell', 'llo']
    """
    if unit not in ("char", "word"):
        raise TextError(f"shingle unit must be 'char' or 'word', got {unit!r}")
    t = text if normalized else normalize_for_matching(text)
    if unit == "char":
        return [t] if len(t) < n else [t[i:i + n] for i in range(len(t) - n + 1)]
    words = t.split(" ") if t else []
    if len(words) < n:
        return [" ".join(words)]
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def shingle_set(text: str, unit: ShingleUnit = "char", n: int = 5, *, normalized: bool = False) -> set[str]:
    """The shingle *set* of ``text`` (what MinHash signatures summarise)."""
    return set(shingle_list(text, unit, n, normalized=normalized))


def jaccard(a: set[str], b: set[str]) -> float:
    """Jaccard index ``|a & b| / |a | b|`` of two sets (1.0 for two empty sets)."""
    return len(a & b) / len(a | b) if (a or b) else 1.0
