"""SimHash codes of embeddings under a secret random rotation (Charikar 2002).

Bit ``j`` of a code is ``sign(<R_j, e>)`` for the ``j``-th of ``bits`` secret directions ``R_j``
drawn from the key (orthonormal blocks: a random rotation of the embedding space, whose rows
are each uniform on the sphere). For two unit vectors at angle ``theta``,
``P[bit differs] = theta / pi`` (Goemans & Williamson 1995; Charikar 2002), so

    E[hamming] = bits * theta / pi,   cos_est = cos(pi * hamming / bits).

Without the key the directions are unknown: the code of a guessed text cannot be computed,
and codes of one embedding under two keys differ in ~bits/2 positions.
"""

from __future__ import annotations

import math

import numpy as np

from trustfl.text.errors import TextError
from trustfl.text.keys import TextKey

__all__ = ["SimHasher", "hamming", "hamming_to_cosine", "cosine_to_hamming"]

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """Hamming distance between packed uint8 codes ``[..., nbytes]`` (broadcasting); int64."""
    x = np.bitwise_xor(np.asarray(codes_a, dtype=np.uint8), np.asarray(codes_b, dtype=np.uint8))
    return _POPCOUNT[x].sum(axis=-1, dtype=np.int64)


def hamming_to_cosine(distance: np.ndarray | float, bits: int) -> np.ndarray:
    """Cosine estimate ``cos(pi * d / bits)`` from a SimHash Hamming distance."""
    return np.cos(np.pi * np.asarray(distance, dtype=np.float64) / bits)


def cosine_to_hamming(cosine: float, bits: int) -> float:
    """Expected Hamming distance ``bits * arccos(cosine) / pi`` at a given cosine."""
    if not -1.0 <= cosine <= 1.0:
        raise TextError(f"cosine must be in [-1, 1], got {cosine}")
    return bits * math.acos(cosine) / math.pi


class SimHasher:
    """Random-hyperplane LSH codes from a secret rotation.

    Args:
        key: shared :class:`~trustfl.text.keys.TextKey`.
        dim: embedding dimension (384 for MiniLM).
        bits: code length, a multiple of 8 (default 256).

    Example:
        >>> h = SimHasher(TextKey(b"k" * 32), dim=4, bits=64)
        >>> e = np.eye(4, dtype=np.float32)[:2]
        >>> h.codes(e).shape
        (2, 8)
    """

    def __init__(self, key: TextKey, dim: int = 384, bits: int = 256) -> None:
        if not isinstance(key, TextKey):
            raise TextError(f"key must be a TextKey, got {type(key).__name__}")
        if not isinstance(dim, int) or dim < 1:
            raise TextError(f"dim must be a positive int, got {dim!r}")
        if not isinstance(bits, int) or bits < 8 or bits % 8:
            raise TextError(f"bits must be a positive multiple of 8, got {bits!r}")
        self.dim, self.bits, self.key_id = dim, bits, key.key_id
        rng = np.random.Generator(np.random.PCG64(key.seed(f"simhash/{dim}/{bits}")))
        blocks, left = [], bits
        while left > 0:  # orthonormal blocks of at most `dim` directions (a random rotation's rows)
            q, r = np.linalg.qr(rng.standard_normal((dim, min(dim, left))))
            blocks.append(q * np.sign(np.diag(r))[None, :])  # Haar-uniform (Mezzadri 2007)
            left -= min(dim, left)
        self._dirs = np.concatenate(blocks, axis=1).astype(np.float32)  # [dim, bits]

    def __repr__(self) -> str:
        return f"SimHasher(key={self.key_id}, dim={self.dim}, bits={self.bits})"

    def codes(self, embeddings: np.ndarray) -> np.ndarray:
        """Sign bits of the rotated embeddings, packed (``np.packbits``, big-endian bit order).

        Args:
            embeddings: ``[n, dim]`` float (need not be normalised: signs ignore scale).

        Returns:
            ``[n, bits // 8]`` uint8.
        """
        e = np.asarray(embeddings, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != self.dim:
            raise TextError(f"embeddings must have shape [n, {self.dim}], got {list(e.shape)}")
        if not np.isfinite(e).all():
            raise TextError("embeddings contain NaN or inf")
        return np.packbits(e @ self._dirs > 0, axis=1)
