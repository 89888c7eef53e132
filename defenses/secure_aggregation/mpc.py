"""What the compute parties compute on shares (CrypTen MPC tensors); runs inside each party process.

Input per round: every included client's arithmetic shares ``Y[i]`` (fixed point at scale 2^p; with a
norm bound B the clients share ``y = x / B``, so every quantity below is in units of B), its public
weight ``w_i`` and, with DP, its shares of a noise vector. Output: this party's share of

    total = sum_i w_i * f_i * Y[i]  +  sum_i noise_i  (+ top-up noise for dropped clients),

with ``f_i = min(1, 1 / ||Y[i]||)`` (``mode="scale"``) or ``1[||Y[i]|| <= 1]`` (``mode="zero"``), and
optionally one anomaly bit per client, ``cos(Y[i], g) < tau`` for a public reference direction ``g``.
Nothing else is opened: the norms, clip decisions and factors stay secret-shared, and the result
shares go to the coordinator, not to the other parties.

How (semi-honest parties; Beaver triples, truncation and comparison tuples from CrypTen's trusted
third party, a separate process; Beaver 1991; Knott et al. 2021, "CrypTen", NeurIPS, §3-4):

1. One opening of the masked block ``eps = Y - b`` per client chunk, with a dealer tuple
   ``(a, b, c = a @ b, s = rowsum(b^2))`` from the trusted third party, gives the squared norms
   ``S_i = rowsum(eps^2) + 2 rowsum(eps b) + s`` at scale 2^2p (untruncated: no precision is lost on
   small norms) and, in step 4, the product with the clip factors. The tuple is a square/dot-product
   triple (one opening per element serves the whole row's squared norm) correlated with a matrix
   triple (Mohassel & Zhang 2017, "SecureML", §4.1) that reuses the same opened ``eps``. Its masks
   are ChaCha20 streams (:mod:`~.prg`) under a key each party shares with the dealer alone, at a
   nonce no tuple reuses; party 0 asks for its tuple before it expands its shares, so the dealer
   computes while the parties expand theirs and open ``eps`` (one in-place all-reduce).
2. Range reduction, no division: bits ``b_k = [S_i > t_k]``, ``t_k = 2^(k/8)``, k = 0 .. 16R - 1, by
   one vectorized comparison on the untruncated sums (as integers). The bits are monotone in k, so
   the bucket indicator ``e_k = b_k - b_(k+1)`` and the bucket's public constants are local linear
   maps; one multiplication gives ``u_i = S_i / t_k`` in (1, 2^(1/8)] for every clipped client.
3. ``1/sqrt(u)`` from a minimax quadratic (relative error 6.4e-6: no Newton-Raphson steps);
   ``F_i = 2^R f_i = G_i poly(u_i) + (1 - b_0) 2^R`` with ``G_i = 2^R t_k^(-1/2) (1 - 2^-(p-4))`` keeps
   a relative error of a few 2^-p on f_i whatever the norm, shrunk so that it is one-sided: a clipped
   update's norm is never above the bound (:func:`_clip_factors`, :func:`clip_margin`).
4. ``total = (w F) @ Y = (w F) @ eps + (w F - a) @ b + c``: only the n-vector ``w F - a`` is opened;
   the d-vector is accumulated in the ring and revealed *untruncated* at scale 2^(2p + R), so no
   probabilistic truncation ever touches it. The DP noise is encoded at that same scale, so it masks
   every low-order bit.

CrypTen truncates shared values by a public integer exactly except with probability about
|value| / 2^64 per entry (its ``wraps`` protocol ignores one carry; Knott et al. 2021, App. C).
Here only n-sized values are truncated, all below 2^43 (client updates are pre-clipped to
``||y|| <= 2^R``), 5 per client, so a round fails that way with probability below about 5 n 2^-21.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from trustfl.defenses.secure_aggregation.crypten_import import import_crypten
from trustfl.defenses.secure_aggregation.prg import new_key, nonce, normal_stream, ring_stream

__all__ = ["DealerKeys", "RANGE_STEPS", "RoundPlan", "TupleDealer", "clip_margin", "compute_round",
           "dealer_shares", "output_scale_bits", "tuple_part"]

RANGE_STEPS = 5  # R: clients pre-clip y = x / B to norm 2^R = 32; the MPC clip to 1 is exact below that


class RoundPlan:
    """Public parameters of one round's computation (the same at every party)."""

    def __init__(self, *, weights: Sequence[float], precision_bits: int, norm_bound: float | None, mode: str,
                 topup_std: float, reference: torch.Tensor | None, cosine_threshold: float | None,
                 chunk_elements: int) -> None:
        self.weights = [float(w) for w in weights]
        self.precision_bits = int(precision_bits)
        self.norm_bound = norm_bound
        self.mode = mode
        self.topup_std = float(topup_std)  # in units of B
        self.reference = reference
        self.cosine_threshold = cosine_threshold
        self.chunk_elements = int(chunk_elements)

    @property
    def integral_weights(self) -> bool:
        w = torch.tensor(self.weights, dtype=torch.float64)
        return bool((w == w.round()).all()) and float(w.abs().max()) < 2 ** 20


def output_scale_bits(precision_bits: int, *, bounded: bool, integral_weights: bool) -> int:
    """log2 of the scale at which the parties' result shares are revealed."""
    if bounded:
        return 2 * precision_bits + RANGE_STEPS
    return precision_bits if integral_weights else 2 * precision_bits


def _ast(share: torch.Tensor, precision: int):  # type: ignore[no-untyped-def]
    return import_crypten().mpc.primitives.ArithmeticSharedTensor.from_shares(share, precision=precision)


def _mpc(share: torch.Tensor, precision: int):  # type: ignore[no-untyped-def]
    return import_crypten().mpc.MPCTensor.from_shares(share, precision=precision)


def _truncate(share: torch.Tensor, divisor: int, precision: int) -> torch.Tensor:
    """Divide a shared integer tensor by a public power of two (CrypTen's truncation protocol)."""
    ast = _ast(share, precision)
    import_crypten().mpc.primitives.beaver.truncate(ast, divisor)
    return ast.share


def _chunks(n: int, d: int, chunk_elements: int) -> Iterator[slice]:
    step = max(1, chunk_elements // max(1, d))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


class DealerKeys:
    """A party's ChaCha20 key shared with the dealer (CrypTen's TTP process) and the tuple counter.

    Every party counts the tuples it uses in the same order, so tuple ``t`` is read from the stream at
    nonce ``(t, purpose)`` at every party and at the dealer, which refuses a counter it has served
    (one (key, nonce) pair never masks twice).
    """

    def __init__(self, key: bytes) -> None:
        self.key, self.counter = key, 0

    def next(self) -> int:
        self.counter += 1
        return self.counter


TUPLE_A, TUPLE_B, TUPLE_C, TUPLE_S = range(4)  # nonce purposes of a tuple's four parts


def tuple_part(key: bytes, counter: int, purpose: int, shape: tuple[int, ...]) -> torch.Tensor:
    """One party's stream share of part ``purpose`` of tuple ``counter`` (ChaCha20 at nonce (counter, purpose))."""
    return ring_stream(key, math.prod(shape), nonce(counter, purpose)).reshape(shape)


def dealer_shares(key: bytes, counter: int, m: int, d: int, *, with_products: bool) -> tuple[torch.Tensor, ...]:
    """One party's stream shares of tuple ``counter``: ``a [1, m]``, ``b [m, d]`` (and ``c [1, d]``, ``s [m]``)."""
    a, b = tuple_part(key, counter, TUPLE_A, (1, m)), tuple_part(key, counter, TUPLE_B, (m, d))
    if not with_products:
        return a, b
    return a, b, tuple_part(key, counter, TUPLE_C, (1, d)), tuple_part(key, counter, TUPLE_S, (m,))


class TupleDealer:
    """The dealer's side of trustfl's ``matmul_norms`` tuple, given the key it shares with each party.

    ``a = sum_j a_j``, ``b = sum_j b_j`` (party j's streams); returns party 0's shares of
    ``c = a @ b`` and ``s = rowsum(b * b)``, the others reading theirs from their streams. A counter
    is served once and only in increasing order (a reused nonce would reuse a mask).
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        self.keys, self.served = list(keys), 0

    def matmul_norms(self, m: int, d: int, counter: int) -> torch.Tensor:
        """Party 0's shares of ``c [d]`` and ``s [m]``, concatenated (c first)."""
        if counter <= self.served:
            raise RuntimeError(f"dealer: tuple counter {counter} was already served (last {self.served})")
        self.served = counter
        a = b = None
        for key in self.keys:
            a_j, b_j = dealer_shares(key, counter, m, d, with_products=False)
            a, b = (a_j, b_j) if a is None or b is None else (a + a_j, b.add_(b_j))
        assert a is not None and b is not None
        c, s = (a @ b).reshape(d), (b * b).sum(dim=1)
        for key in self.keys[1:]:  # the other parties read their shares of c and s from their streams
            c -= tuple_part(key, counter, TUPLE_C, (d,))
            s -= tuple_part(key, counter, TUPLE_S, (m,))
        return torch.cat([c, s])


class _DealerRequest:
    """Party 0's request for a ``matmul_norms`` tuple, sent now and collected later (CrypTen's TTP wire
    format: a pickled request to the TTP, the result size back, the result broadcast to party 0)."""

    def __init__(self, m: int, d: int, counter: int) -> None:
        crypten = import_crypten()
        self.comm = crypten.communicator.get()
        self.client = crypten.mpc.provider.ttp_provider.TTPClient.get()
        self.comm.send_obj({"function": "matmul_norms", "device": None, "args": (m, d, counter), "kwargs": {}},
                           self.comm.get_ttp_rank(), self.client.ttp_group)

    def result(self) -> torch.Tensor:
        size = self.comm.recv_obj(self.comm.get_ttp_rank(), self.client.ttp_group)
        out = torch.empty(size, dtype=torch.long)
        self.comm.broadcast(out, self.comm.get_ttp_rank(), self.client.comm_group)
        return out


def _open_inplace(share: torch.Tensor) -> torch.Tensor:
    """Open a shared int64 tensor to every party, summing the shares in place (CrypTen's reveal, minus its
    two copies of the tensor): one gloo all-reduce, wrapping mod 2^64."""
    import torch.distributed as dist

    dist.all_reduce(share, group=import_crypten().communicator.get().main_group)
    return share


class _Masked:
    """Per client chunk: the opened ``eps = Y - b`` and the dealer tuple, shared by the norm and sum passes.

    One opening of the ``[m, d]`` block serves both the squared norms
    ``S = rowsum(eps^2) + 2 rowsum(eps * b) + rowsum(b^2)`` and the Beaver product
    ``F @ Y = F @ eps + (F - a) @ b + c`` (only the m-vector ``F - a`` is opened for it).
    """

    def __init__(self, block_of, n: int, d: int, plan: RoundPlan, dealer: DealerKeys) -> None:  # type: ignore[no-untyped-def]
        comm = import_crypten().communicator
        self.parts = list(_chunks(n, d, plan.chunk_elements))
        self.p, self.rank = plan.precision_bits, comm.get().get_rank()
        self.eps, self.tuples = [], []
        sums = []
        for part in self.parts:
            m, counter = part.stop - part.start, dealer.next()
            # party 0 asks for its shares of c and s first: the dealer computes them while we expand and open
            request = _DealerRequest(m, d, counter) if self.rank == 0 else None
            eps = block_of(part)
            a, b, *products = dealer_shares(dealer.key, counter, m, d, with_products=request is None)
            eps = _open_inplace(eps.sub_(b))  # eps = Y - b, uniformly masked: reveals nothing
            share = (eps * b).sum(dim=1).mul_(2)
            if request is not None:
                share += (eps * eps).sum(dim=1)
                flat = request.result()
                c, s = flat[:d].reshape(1, d), flat[d:]
            else:
                c, s = products
            sums.append(share.add_(s))
            self.eps.append(eps)
            self.tuples.append((a, b, c))
        self.norms_sq = torch.cat(sums)  # shares of S at scale 2^2p, untruncated

    def dot(self, g: torch.Tensor) -> torch.Tensor:
        """Shares of ``Y @ g`` for a public integer vector g ([n], exact): ``eps @ g + b @ g``, no communication."""
        out = [(eps @ g if self.rank == 0 else 0) + b @ g for eps, (_, b, _) in zip(self.eps, self.tuples)]
        return torch.cat(out)

    def matmul(self, f_share: torch.Tensor) -> torch.Tensor:
        """Shares of ``F @ Y`` ([d], scale 2^2p when F is at 2^p), untruncated."""
        out = None
        for part, eps, (a, b, c) in zip(self.parts, self.eps, self.tuples):
            fp = f_share[part].unsqueeze(0)
            phi = _ast(fp - a, self.p).reveal()  # F - a, m values
            term = fp @ eps + phi @ b + c  # public x share products: each party on its own shares
            out = term.squeeze(0) if out is None else out + term.squeeze(0)
        assert out is not None
        return out


# 1/sqrt(u) on [1, 2^(1/8)]: the quadratic with the least maximum relative error (Lawson's iteration on 2,001
# Chebyshev nodes), 6.4e-6 (asserted in tests/test_secure_aggregation_prg.py)
RSQRT_POLY = (1.8348764312534878, -1.1710455588073092, 0.33616277780686676)
BUCKETS_PER_OCTAVE = 8  # thresholds 2^(k/8) on S = ||y||^2: u = S / t_k lies in (1, 2^(1/8)]


def clip_margin(precision_bits: int) -> float:
    """Bound on the relative error of the in-MPC clip factor, 2^-(p-4): the quadratic's 6.4e-6, five
    truncations at 2^-p on values of order 1 and the constants' rounding (asserted in the tests). The
    factor is shrunk by it, so a clipped update's norm lies in [B (1 - 2 margin), B], never above B."""
    return 2.0 ** -(precision_bits - 4)


def _mul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Shares of the exact ring product of two shared integer tensors (one Beaver multiplication, no truncation)."""
    return _ast(x, 0).mul(_ast(y, 0)).share


def _clip_factors(norms_sq: torch.Tensor, n: int, plan: RoundPlan):  # type: ignore[no-untyped-def]
    """MPC ``F = 2^R f`` per client (scale 2^p), f = min(1, 1 / sqrt(S)) the clip factor; never opened.

    One vectorized comparison gives the bits ``b_k = [S > t_k]`` for the thresholds ``t_k = 2^(k/8)``,
    k = 0 .. 8 * 2R - 1 (S < 4^R: clients pre-clip). The bits are monotone in k, so the bucket
    indicator ``e_k = b_k - b_(k+1)`` is a *local* linear map, and so are the bucket's public constants
    picked by it: ``C = sum_k e_k 2^(p+2R) / t_k`` and ``G = sum_k e_k 2^R t_k^(-1/2)``. Then
    ``u = S C / 2^(p+2R) = S / t_k`` is in (1, 2^(1/8)], where the quadratic :data:`RSQRT_POLY` is
    1/sqrt within 6.4e-6 (no Newton-Raphson steps), and ``F = G poly(u) + (1 - b_0) 2^R``. Sequential
    cost: the comparison, 3 Beaver multiplications and 5 truncations, whatever n (every truncated value
    is below 2^(2p+2R+1) = 2^43 at p = 16).
    """
    crypten = import_crypten()
    p, r = plan.precision_bits, RANGE_STEPS
    rank = crypten.communicator.get().get_rank()
    if plan.mode == "zero":
        wide = _mpc(norms_sq.unsqueeze(1).contiguous(), 0)
        over = wide.gt(torch.full((n, 1), 2 ** (2 * p), dtype=torch.int64))._tensor.share[:, 0]
        one = torch.full((n,), 2 ** (r + p) if rank == 0 else 0, dtype=torch.int64)
        return _mpc(one - over * 2 ** (r + p), p)  # 2^R 1[S <= 1], exact
    k = BUCKETS_PER_OCTAVE * 2 * r
    t = [2.0 ** (i / BUCKETS_PER_OCTAVE) for i in range(k)]
    # compared as integers at scale 2^2p (CrypTen's comparison mis-encodes a public value at scale 2^2p)
    thresholds = torch.tensor([round(ti * 2 ** (2 * p)) for ti in t], dtype=torch.int64)
    wide = _mpc(norms_sq.unsqueeze(1).expand(n, k).contiguous(), 0)
    bits = wide.gt(thresholds.unsqueeze(0).expand(n, k).contiguous())._tensor.share  # [n, k] 0/1 at scale 1
    buckets = bits.clone()
    buckets[:, :-1] -= bits[:, 1:]  # e_k = b_k - b_(k+1): exactly one 1 per clipped client, none otherwise
    c = torch.tensor([round(2 ** (p + 2 * r) / ti) for ti in t], dtype=torch.int64)
    # G shrunk by the factor's relative error bound CLIP_MARGIN (p): the clipped norm never exceeds 1 (one-sided),
    # so the sensitivity the DP noise and the accountant assume, B, holds exactly
    shrink = 1.0 - clip_margin(p)
    g = torch.tensor([round(2 ** r / ti ** 0.5 * 2 ** p * shrink) for ti in t], dtype=torch.int64)
    s_p = _truncate(norms_sq, 2 ** p, p)  # S at scale 2^p (< 2^(p+2R))
    u = _truncate(_mul(s_p, buckets @ c), 2 ** (p + 2 * r), p)  # u = S / t_k at scale 2^p (< 2^(2p+2R+1) before)
    u2 = _truncate(_mul(u, u), 2 ** p, p)  # u^2 at scale 2^p
    c0, c1, c2 = (round(ci * 2 ** p) for ci in RSQRT_POLY)
    poly = u2 * c2 + u * c1 + (c0 * 2 ** p if rank == 0 else 0)  # poly(u) at scale 2^2p (< 2^(2p+1))
    poly = _truncate(poly, 2 ** p, p)  # scale 2^p
    f = _truncate(_mul(buckets @ g, poly), 2 ** p, p)  # G poly(u): F for clipped clients, 0 for the others
    f = f - bits[:, 0] * 2 ** (r + p)
    if rank == 0:
        f = f + 2 ** (r + p)  # + (1 - b_0) 2^R
    return _mpc(f, p)


def _anomaly_bits(masked: _Masked, plan: RoundPlan):  # type: ignore[no-untyped-def]
    """MPC bits ``cos(Y_i, g) < tau`` (compared as signs and squares: no square root)."""
    assert plan.reference is not None and plan.cosine_threshold is not None
    p, tau = plan.precision_bits, float(plan.cosine_threshold)
    g = plan.reference.to(torch.float64)
    g_enc = torch.round(g / g.norm() * 2 ** p).to(torch.int64)  # public unit vector
    dot = _mpc(_truncate(masked.dot(g_enc), 2 ** p, p), p)  # local, exact at 2^2p, then truncated
    s = _mpc(_truncate(masked.norms_sq, 2 ** p, p), p)
    negative = dot.lt(0.0)
    lhs = dot.square()
    rhs = s * (tau * tau)
    if tau >= 0:  # cos < tau  <=>  dot < 0  or  dot^2 < tau^2 |y|^2
        small = lhs.lt(rhs)
        return negative + small - negative * small
    return negative * lhs.gt(rhs)  # cos < tau < 0  <=>  dot < 0  and  dot^2 > tau^2 |y|^2


def compute_round(block_of, noise_sum: torch.Tensor | None, n: int, d: int, plan: RoundPlan, *,
                  dealer: DealerKeys) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This party's shares of (total [d] at :func:`output_scale_bits`, anomaly bits [n] at 2^p or None).

    ``block_of(slice)`` returns this party's int64 shares of the clients in the slice, ``[m, d]`` (a
    new tensor: it is modified in place); ``noise_sum`` is its share of the clients' summed noise,
    already at the output scale; ``dealer`` its key shared with the dealer.
    """
    import_crypten()
    p = plan.precision_bits
    w = torch.tensor(plan.weights, dtype=torch.float64)
    integral = plan.integral_weights
    bounded = plan.norm_bound is not None
    bits_share = norms_sq = masked = None
    if bounded or plan.reference is not None:
        masked = _Masked(block_of, n, d, plan, dealer)
        norms_sq = masked.norms_sq
    if plan.reference is not None:
        bits_share = _anomaly_bits(masked, plan)._tensor.share
    total = torch.zeros(d, dtype=torch.int64)
    if not bounded:
        scaled = w.to(torch.int64) if integral else torch.round(w * 2 ** p).to(torch.int64)
        for part in _chunks(n, d, plan.chunk_elements):
            total += scaled[part] @ block_of(part)  # public weights: local and exact in the ring
    else:
        f = _clip_factors(norms_sq, n, plan)
        f = f * w.to(torch.int64) if integral else f * w.float()
        assert masked is not None
        total += masked.matmul(f._tensor.share)  # revealed untruncated at scale 2^(2p + R)
    if noise_sum is not None:
        total += noise_sum
    if plan.topup_std > 0:  # each party adds the whole missing variance: it survives any K-1 colluders
        scale = 2.0 ** output_scale_bits(p, bounded=bounded, integral_weights=integral)
        noise = normal_stream(new_key(), d) * plan.topup_std  # ChaCha20 under a fresh key (prg)
        total += torch.round(noise * scale).to(torch.int64)
    return total, bits_share
