"""Text normalisers, one per purpose (each with its own rule and its own name).

* :func:`normalize_for_matching` — before every keyed code of near-duplicate matching (dedup's
  exact HMAC codes and MinHash shingles, origin's copy checks). Folds everything that should not
  make two records different:

  1. Unicode NFKC (compatibility forms fold: full-width letters, ligatures, ``\\u00a0``);
  2. ``str.casefold`` (aggressive lower-casing, e.g. ``ß`` -> ``ss``);
  3. characters that are neither word characters nor whitespace (Unicode punctuation and
     symbols, emoji included) are removed at the *start and end of every
     whitespace-separated token*; tokens made only of such characters disappear.
     Inner punctuation stays (``don't``, ``3.5``, ``u.s.a``);
  4. whitespace runs collapse to one ASCII space, and the ends are stripped.

  So ``"  Hello,  WORLD!! :)"`` and ``"hello world"`` match, while ``"hello-world"`` and
  ``"hello world"`` do not.

* :func:`normalize_for_fingerprint` — before hashing a dataset into its content fingerprint
  (:mod:`trustfl.data.fingerprint`). Folds only what re-saving a file may change: Unicode NFC
  composition, whitespace runs to one space, ends stripped. Case, punctuation and
  compatibility forms are content and change the fingerprint.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MATCHING_RULE", "normalize_for_fingerprint", "normalize_for_matching"]

MATCHING_RULE = "nfkc-casefold-edgepunct-space/1"
"""Identifier of :func:`normalize_for_matching`'s rule (recorded in reports; bump on any change)."""

# A run of non-word, non-space characters touching a token boundary (start/end of text or whitespace).
_EDGE_PUNCT = re.compile(r"(?:(?<!\S)[^\w\s]+)|(?:[^\w\s]+(?!\S))")


def _require_str(fn: str, text: object) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{fn} expects str, got {type(text).__name__}: {text!r:.60}")


def normalize_for_matching(text: str) -> str:
    """Matching form of ``text``: NFKC, casefold, strip token-edge punctuation, collapse spaces.

    Raises:
        TypeError: ``text`` is not a ``str`` (``None`` and numbers are refused, not stringified).

    Example:
        >>> normalize_for_matching("  Hello,  WORLD!! :)")
        'hello world'
    """
    _require_str("normalize_for_matching", text)
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_EDGE_PUNCT.sub("", folded).split())


def normalize_for_fingerprint(text: str) -> str:
    """Fingerprint form of ``text``: NFC, every whitespace run to one space, ends stripped.

    Raises:
        TypeError: ``text`` is not a ``str``.

    Example:
        >>> normalize_for_fingerprint("  Cafe\\u0301,\\t WORLD! ")
        'Café, WORLD!'
    """
    _require_str("normalize_for_fingerprint", text)
    return " ".join(unicodedata.normalize("NFC", text).split())
