"""Text normalisation applied before every code (exact, lexical) is computed.

The rule, in order:

1. Unicode NFKC (compatibility forms fold: full-width letters, ligatures, ``\u00a0``);
2. ``str.casefold`` (aggressive lower-casing, e.g. ``ß`` -> ``ss``);
3. characters that are neither word characters nor whitespace (Unicode punctuation and
   symbols, emoji included) are removed at the *start and end of every
   whitespace-separated token*; tokens made only of such characters disappear.
   Inner punctuation stays (``don't``, ``3.5``, ``u.s.a``);
4. whitespace runs collapse to one ASCII space, and the ends are stripped.

So ``"  Hello,  WORLD!! :)"`` and ``"hello world"`` normalise to the same string and are
exact duplicates, while ``"hello-world"`` is not the same as ``"hello world"``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = ["normalize_text", "normalize_texts"]

# A run of non-word, non-space characters touching a token boundary (start/end of text or whitespace).
_EDGE_PUNCT = re.compile(r"(?:(?<!\S)[^\w\s]+)|(?:[^\w\s]+(?!\S))")


def normalize_text(text: str) -> str:
    """Normalise ``text`` by the module's rule (NFKC, casefold, strip token-edge punctuation, collapse spaces).

    Raises:
        TypeError: ``text`` is not a ``str`` (``None`` and numbers are refused, not stringified).

    Example:
        >>> normalize_text("  Hello,  WORLD!! :)")
        'hello world'
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects str, got {type(text).__name__}: {text!r:.60}")
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_EDGE_PUNCT.sub("", folded).split())


def normalize_texts(texts: Iterable[str]) -> list[str]:
    """:func:`normalize_text` over an iterable (a list back)."""
    return [normalize_text(t) for t in texts]
