"""Client side of secure aggregation: fixed-point encoding and additive secret sharing over Z_2^64.

A client encodes its update with CrypTen's :class:`~crypten.encoder.FixedPointEncoder`
(``x -> trunc(x * 2^p)`` as int64, Knott et al. 2021, §3) and splits it into K additive shares
``x = s_0 + ... + s_{K-1} (mod 2^64)``. Shares ``s_0 .. s_{K-2}`` are the ChaCha20 keystreams of
fresh 256-bit keys from :mod:`secrets` (:mod:`~.prg`; a party regenerates its share from the key, so
it receives 32 bytes instead of ``8 d``); the last share is ``encode(x) - sum(...)`` and is sent in
full. Any K - 1 shares are indistinguishable from uniform and independent of ``x`` to anyone without
the keys (a one-time pad over the ring with a cryptographic stream), so no coalition of fewer than K
parties learns anything about ``x``. The same key-compression of shares is used by Prio
(Corrigan-Gibbs & Boneh 2017, §5, with AES-CTR) and CrypTen's pseudo-random zero sharings.

Error bound of the encoding: ``|decode(encode(x)) - x| < 2^-p`` per entry (truncation toward
zero), so a plain secure sum of n updates is within ``n * 2^-p`` of the float64 sum per entry
(the ring sum itself is exact while no true value leaves ``[-2^(63-p), 2^(63-p))``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trustfl.defenses.secure_aggregation.prg import new_key, ring_stream
from trustfl.errors import UpdateError

__all__ = ["ClientShares", "DEFAULT_PRECISION_BITS", "all_finite", "max_norm", "decode", "encode", "expand_key",
           "share_update", "sum_error_bound"]

DEFAULT_PRECISION_BITS = 16  # CrypTen's default encoder.precision_bits
def max_norm(precision_bits: int) -> float:
    """The largest L2 norm an update may have: its squares summed at scale 2^2p must stay below 2^60."""
    return math.ldexp(1.0, 30 - precision_bits)


def all_finite(x: torch.Tensor) -> bool:
    """Whether every entry is finite: a finite float64 sum proves it (NaN and +-Inf propagate); only a sum that
    overflowed needs the element-wise check (which allocates and is ~5x slower on a large vector)."""
    return math.isfinite(float(x.sum(dtype=torch.float64))) or bool(torch.isfinite(x).all())


def encode(x: torch.Tensor, *, precision_bits: int = DEFAULT_PRECISION_BITS, check_norm: bool = True) -> torch.Tensor:
    """CrypTen's fixed-point encoding of a float tensor (float64 arithmetic), as int64.

    Raises:
        UpdateError: NaN/Inf, or ``||x|| >= max_norm(p)`` (the parties' shared squares would wrap).
    """
    from trustfl.defenses.secure_aggregation.crypten_import import import_crypten

    encoder = import_crypten().encoder.FixedPointEncoder
    x = x.detach().to(torch.float64)
    if not all_finite(x):
        raise UpdateError("secure aggregation: the update contains NaN/Inf; a client cannot secret-share it")
    norm, limit = float(x.norm()), max_norm(precision_bits)
    if check_norm and norm >= limit:
        raise UpdateError(f"secure aggregation: the update has L2 norm {norm:.4g} >= {limit:.0f}, outside the "
                          f"fixed-point range (precision_bits={precision_bits}) the parties can square without "
                          "wrapping; clip the update first or lower precision_bits")
    return encoder(precision_bits=precision_bits).encode(x)


def decode(x: torch.Tensor, *, precision_bits: int = DEFAULT_PRECISION_BITS) -> torch.Tensor:
    """Inverse of :func:`encode` (float64): ``x / 2^p`` of int64 ring elements read as signed integers."""
    return x.to(torch.float64) / float(2 ** precision_bits)


def expand_key(key: bytes, size: int, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """The pseudo-random ring elements (int64, uniform over Z_2^64) a share key stands for (ChaCha20)."""
    return ring_stream(key, size, out=out)


@dataclass
class ClientShares:
    """One client's K shares of one vector: ``keys[j]`` (32 bytes) for parties ``0 .. K-2``, ``last`` for K-1."""

    keys: list[bytes]
    last: torch.Tensor

    @property
    def num_parties(self) -> int:
        return len(self.keys) + 1

    def share(self, party: int) -> torch.Tensor:
        """Party ``party``'s share as int64 (what that party holds)."""
        if party == len(self.keys):
            return self.last
        return expand_key(self.keys[party], self.last.numel())


def share_update(x: torch.Tensor, *, num_parties: int, precision_bits: int = DEFAULT_PRECISION_BITS,
                 check_norm: bool = True) -> ClientShares:
    """Encode ``x`` (1-D) and split it into ``num_parties`` additive shares over Z_2^64.

    Example:
        >>> s = share_update(torch.tensor([0.5, -1.25]), num_parties=3)
        >>> decode(sum(s.share(j) for j in range(3))).tolist()
        [0.5, -1.25]
    """
    if isinstance(num_parties, bool) or not isinstance(num_parties, int) or num_parties < 2:
        raise ValueError(f"num_parties: secret sharing needs at least 2 parties, got {num_parties!r}")
    if x.ndim != 1:
        raise UpdateError(f"secure aggregation: an update must be a 1-D vector, got shape {tuple(x.shape)}")
    enc = encode(x, precision_bits=precision_bits, check_norm=check_norm)
    keys = [new_key() for _ in range(num_parties - 1)]  # fresh per share: never reused, never from a run seed
    last = enc
    for key in keys:
        last -= expand_key(key, enc.numel())  # int64 arithmetic wraps: this is mod 2^64
    return ClientShares(keys=keys, last=last)


def sum_error_bound(num_clients: int, *, precision_bits: int = DEFAULT_PRECISION_BITS) -> float:
    """Per-entry bound on |secure sum - float64 sum| for an unweighted sum without norm bounding: n * 2^-p."""
    return num_clients * math.ldexp(1.0, -precision_bits)
