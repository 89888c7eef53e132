"""Derived seeds: every random choice of a run comes from ``(seed, purpose, round, client)``.

Deriving instead of carrying RNG state is what makes a resumed run equal the uninterrupted
one: round 7 of client 3 draws the same numbers whether or not rounds 1-6 ran in this process.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "generator"]


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from ``seed`` and ``keys`` (stable across processes, unlike ``hash``)."""
    text = repr((int(seed),) + tuple(str(k) for k in keys)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") & ((1 << 63) - 1)


def generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))
