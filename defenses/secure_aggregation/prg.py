"""Keyed cryptographic pseudo-random streams for secret shares, masks, dealer tuples and DP noise.

Every pseudo-random value secure aggregation relies on for secrecy (a client's expanded shares, the
dealer tuples trustfl adds to CrypTen's trusted third party, the clients' and parties' DP noise) is
read from the ChaCha20 stream cipher (Bernstein 2008; IETF variant, RFC 8439) of the ``cryptography``
package (OpenSSL), keyed with 32 fresh bytes from :mod:`secrets` (``os.urandom``), never derived from
a run seed. Whoever lacks the key cannot tell the stream from uniform bytes, unlike torch's Mersenne
Twister, whose state is recovered from 624 outputs.

* :func:`ring_stream`: the keystream read as little-endian int64, i.e. uniform over Z_2^64 (every
  byte pattern equally likely: no modulo bias, no excluded value).
* :func:`normal_stream`: standard normal floats from the same stream (Box & Muller 1958, both
  outputs of each pair, on 53-bit uniforms in (0, 1]).

One (key, nonce) pair must never encrypt twice: callers give every use its own nonce
(:func:`nonce`), e.g. a per-session counter and a purpose tag.
"""

from __future__ import annotations

import math
import secrets

import numpy as np
import torch

__all__ = ["KEY_BYTES", "MAX_WORDS", "new_key", "nonce", "normal_stream", "ring_stream"]

KEY_BYTES = 32
MAX_WORDS = 2 ** 35  # 2^32 ChaCha20 blocks of 64 bytes per (key, nonce): 2^38 bytes = 2^35 int64
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)  # plaintext of the stream, encrypted a chunk at a time (the cipher state carries on)


def new_key() -> bytes:
    """A fresh 256-bit key from the operating system's CSPRNG (:mod:`secrets`)."""
    return secrets.token_bytes(KEY_BYTES)


def nonce(counter: int = 0, purpose: int = 0) -> bytes:
    """The 96-bit RFC 8439 nonce ``counter (8 bytes LE) || purpose (4 bytes LE)``."""
    if not (0 <= counter < 2 ** 64 and 0 <= purpose < 2 ** 32):
        raise ValueError(f"nonce: counter must be in [0, 2^64) and purpose in [0, 2^32), got {counter}, {purpose}")
    return int(counter).to_bytes(8, "little") + int(purpose).to_bytes(4, "little")


def _keystream_into(key: bytes, iv: bytes, out: np.ndarray) -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise ValueError(f"a stream key must be {KEY_BYTES} bytes, got {type(key).__name__} of length "
                         f"{len(key) if hasattr(key, '__len__') else '?'}")
    if len(iv) != 12:
        raise ValueError(f"a ChaCha20 nonce must be 12 bytes, got {len(iv)}")
    buf = out.view(np.uint8).reshape(-1)
    # cryptography's ChaCha20 takes the 16-byte RFC 8439 state words 12-15: block counter (LE, from 0) || nonce
    enc = Cipher(algorithms.ChaCha20(bytes(key), b"\0\0\0\0" + iv), mode=None).encryptor()
    zeros = memoryview(_ZEROS)
    for start in range(0, buf.size, _CHUNK):
        part = buf[start:start + _CHUNK]
        enc.update_into(zeros[:part.size], part)


def ring_stream(key: bytes, size: int, iv: bytes | None = None, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``size`` ring elements (int64, uniform over Z_2^64): the ChaCha20 keystream under ``key``/``iv``.

    ``out``: a contiguous int64 tensor of ``size`` elements to write into (e.g. a row of a block).

    Example:
        >>> k = new_key()
        >>> torch.equal(ring_stream(k, 4), ring_stream(k, 4))
        True
    """
    size = int(size)
    if not 0 <= size <= MAX_WORDS:
        raise ValueError(f"ring_stream: size must be in [0, 2^35], got {size}")
    if out is None:
        out = torch.empty(size, dtype=torch.int64)
    elif out.dtype != torch.int64 or out.numel() != size or not out.is_contiguous():
        raise ValueError(f"ring_stream: out must be a contiguous int64 tensor of {size} elements")
    if size:  # int64 in the platform's (little-endian) byte order: the keystream read as LE words
        _keystream_into(key, nonce() if iv is None else iv, out.numpy().reshape(-1))
    return out


def normal_stream(key: bytes, size: int, iv: bytes | None = None) -> torch.Tensor:
    """``size`` standard normal float64 values from the ChaCha20 stream (Box-Muller, both branches)."""
    size = int(size)
    half = (size + 1) // 2
    words = ring_stream(key, 2 * half, iv)
    u = (((words >> 11) & (2 ** 53 - 1)).to(torch.float64) + 1.0) * 2.0 ** -53  # 53 top bits, in (0, 1]
    radius, angle = torch.sqrt(-2.0 * torch.log(u[:half])), (2.0 * math.pi) * u[half:]
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[:size]  # both Box-Muller outputs
