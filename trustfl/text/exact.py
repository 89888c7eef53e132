"""Exact-duplicate codes: keyed HMAC-SHA256 of the normalised text, truncated to 128 bits.

Two records get the same code iff their normalised texts are equal (up to a 2^-64
birthday bound over 2^32 records). The HMAC key makes the code useless to anyone without
the key: the server cannot hash a guessed text to see whether a client holds it.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

import numpy as np

from trustfl.text.keys import TextKey
from trustfl.text.normalize import normalize_for_matching

__all__ = ["EXACT_BYTES", "exact_codes"]

EXACT_BYTES = 16


def exact_codes(texts: Sequence[str], key: TextKey, *, normalized: bool = False) -> np.ndarray:
    """HMAC-SHA256(key.derive("exact"), normalize_for_matching(t)) truncated to 16 bytes, per text.

    Args:
        texts: raw texts (``normalized=True`` if :func:`normalize_for_matching` was already applied).
        key: the shared :class:`TextKey`.

    Returns:
        ``[n, 16]`` uint8 array.

    Example:
        >>> k = TextKey(b"0" * 32)
        >>> c = exact_codes(["Hi there!", "hi   THERE", "bye"], k)
        >>> bool((c[0] == c[1]).all()), bool((c[0] == c[2]).all())
        (True, False)
    """
    sub = key.derive("exact")
    out = np.empty((len(texts), EXACT_BYTES), dtype=np.uint8)
    buf = bytearray()
    for t in texts:
        s = t if normalized else normalize_for_matching(t)
        buf += hmac.digest(sub, s.encode("utf-8"), "sha256")[:EXACT_BYTES]
    if texts:
        out[:] = np.frombuffer(bytes(buf), dtype=np.uint8).reshape(len(texts), EXACT_BYTES)
    return out
