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
   small norms) and, in step 4, the product with the clip factors.
2. Range reduction, no division: bits ``b_k = [S_i > 4^k]`` for k = 0..R by one vectorized comparison
   on the untruncated sums (as integers); then, in one log-depth product tree, the exact integers
   ``P_i = prod_{k>=1} (2 - b_k) = 2^(R - j_i)`` and ``P_i^2 = prod_{k>=1} (4 - 3 b_k)`` (b^2 = b), so
   ``u_i = S_i P_i^2 / 4^R = S_i / 4^(j_i)`` lies in (1, 4] for every clipped client.
3. ``1/sqrt(u)`` from the minimax line 1.067 - 0.1525 u and three Newton-Raphson steps (relative error
   6e-8 before fixed point); ``F_i = 2^R f_i = b_0 rsqrt(u_i) P_i + (1 - b_0) 2^R`` keeps a relative
   error of about 2^-p on f_i whatever the norm.
4. ``total = (w F) @ Y = (w F) @ eps + (w F - a) @ b + c``: only the n-vector ``w F - a`` is opened;
   the d-vector is accumulated in the ring and revealed *untruncated* at scale 2^(2p + R), so no
   probabilistic truncation ever touches it. The DP noise is encoded at that same scale, so it masks
   every low-order bit.

CrypTen truncates shared values by a public integer exactly except with probability about
|value| / 2^64 per entry (its ``wraps`` protocol ignores one carry; Knott et al. 2021, App. C).
Here only n-sized values are truncated, all below 2^42 (client updates are pre-clipped to
``||y|| <= 2^R``), so a round fails that way with probability below n * 30 * 2^-22.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from trustfl.defenses.secure_aggregation.crypten_import import import_crypten

__all__ = ["RANGE_STEPS", "RoundPlan", "compute_round", "output_scale_bits"]

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


def _dealer_tuple(m: int, d: int) -> tuple[torch.Tensor, ...]:
    """This party's shares of a dealer tuple ``(a [1, m], b [m, d], c = a @ b, s = rowsum(b * b))``.

    Party 0 receives its shares of c and s from the trusted third party (:class:`~.party.Dealer`,
    CrypTen's TTP server with this one extra tuple type); the others derive theirs, like a and b,
    from the generator they share with the TTP (CrypTen's TTP protocol).
    """
    crypten = import_crypten()
    comm, generate_random_ring_element = crypten.communicator, crypten.common.rng.generate_random_ring_element
    TTPClient = crypten.mpc.provider.ttp_provider.TTPClient  # noqa: N806
    gen = TTPClient.get().get_generator()
    a = generate_random_ring_element((1, m), generator=gen)
    b = generate_random_ring_element((m, d), generator=gen)
    if comm.get().get_rank() == 0:
        flat = TTPClient.get().ttp_request("matmul_norms", None, (1, m), (m, d))
        c, s = flat[:d].reshape(1, d), flat[d:]
    else:
        c = generate_random_ring_element((1, d), generator=gen)
        s = generate_random_ring_element((m,), generator=gen)
    return a, b, c, s


class _Masked:
    """Per client chunk: the opened ``eps = Y - b`` and the dealer tuple, shared by the norm and sum passes.

    One opening of the ``[m, d]`` block serves both the squared norms
    ``S = rowsum(eps^2) + 2 rowsum(eps * b) + rowsum(b^2)`` and the Beaver product
    ``F @ Y = F @ eps + (F - a) @ b + c`` (only the m-vector ``F - a`` is opened for it).
    """

    def __init__(self, block_of, n: int, d: int, plan: RoundPlan) -> None:  # type: ignore[no-untyped-def]
        comm = import_crypten().communicator
        self.parts = list(_chunks(n, d, plan.chunk_elements))
        self.p, self.rank = plan.precision_bits, comm.get().get_rank()
        self.eps, self.tuples = [], []
        sums = []
        for part in self.parts:
            a, b, c, s = _dealer_tuple(part.stop - part.start, d)
            eps = _ast(block_of(part) - b, self.p).reveal()  # uniformly masked: reveals nothing
            share = 2 * (eps * b).sum(dim=1) + s
            if self.rank == 0:
                share += (eps * eps).sum(dim=1)
            sums.append(share)
            self.eps.append(eps)
            self.tuples.append((a, b, c))
        self.norms_sq = torch.cat(sums)  # shares of S at scale 2^2p, untruncated

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


def _rsqrt_1_4(u):  # type: ignore[no-untyped-def]
    """1/sqrt(u) for u in [1, 4]: the minimax line 1.067 - 0.1525 u (relative error <= 0.087), then three
    Newton-Raphson steps y <- y (3 - u y^2) / 2 (0.087 -> 1.2e-2 -> 2e-4 -> 6e-8, below 2^-p)."""
    y = u * -0.1525 + 1.067
    half = u * 0.5
    for _ in range(3):
        y = y * (1.5 - half * y.square())
    return y


def _products(rows):  # type: ignore[no-untyped-def]
    """Product over dim 0 of an MPC tensor of integers (scale 1, exact), as a log-depth tree."""
    crypten = import_crypten()
    while rows.size(0) > 1:
        half = rows.size(0) // 2
        prod = rows[:half] * rows[half:2 * half]
        rows = crypten.cat([prod, rows[2 * half:]], dim=0) if rows.size(0) % 2 else prod
    return rows[0]


def _clip_factors(norms_sq: torch.Tensor, n: int, plan: RoundPlan):  # type: ignore[no-untyped-def]
    """MPC ``F = 2^R f`` per client (scale 2^p), f the clip factor; never opened."""
    crypten = import_crypten()
    p, k = plan.precision_bits, RANGE_STEPS
    # compared as integers (scale 1: CrypTen's comparison mis-encodes a public value at scale 2^2p)
    wide = _mpc(norms_sq.unsqueeze(1).expand(n, k + 1).contiguous(), 0)
    thresholds = torch.tensor([4 ** i * 2 ** (2 * p) for i in range(k + 1)], dtype=torch.int64)
    bits = wide.gt(thresholds.unsqueeze(0).expand(n, k + 1).contiguous())  # [n, R+1] 0/1 (exact comparison)
    over = bits[:, 0]  # CrypTen's comparison bits are integers at scale 1: products with them are exact
    if plan.mode == "zero":
        return _at_scale(1 - over, p) * (2 ** k)
    high = bits[:, 1:].t()  # [R, n]
    # P = prod_k (2 - b_k) = 2^(R - j) and P^2 = prod_k (4 - 3 b_k) (b^2 = b), both exact, one tree
    both = _products(crypten.cat([2 - high, 4 - high * 3], dim=1))
    powers, powers_sq = both[:n], both[n:]
    u = (_mpc(_truncate(norms_sq, 2 ** p, p), p) * powers_sq).div(4 ** k)  # S / 4^j, in (1, 4] when clipped
    u = over * (u - 1) + 1  # 1 for the others (keeps the iteration in range)
    f_scaled = _rsqrt_1_4(u) * powers
    return _at_scale(over * (f_scaled - float(2 ** k)) + float(2 ** k), p)


def _at_scale(x, p: int):  # type: ignore[no-untyped-def]
    """``x`` encoded at scale 2^p (exact: integers at scale 1 are multiplied up)."""
    if x.encoder.scale == 2 ** p:
        return x
    assert x.encoder.scale == 1, x.encoder.scale
    out = _mpc(x._tensor.share * (2 ** p), p)
    return out


def _anomaly_bits(block_of, norms_sq: torch.Tensor, n: int, d: int, plan: RoundPlan):  # type: ignore[no-untyped-def]
    """MPC bits ``cos(Y_i, g) < tau`` (compared as signs and squares: no square root)."""
    assert plan.reference is not None and plan.cosine_threshold is not None
    p, tau = plan.precision_bits, float(plan.cosine_threshold)
    g = plan.reference.to(torch.float64)
    g_enc = torch.round(g / g.norm() * 2 ** p).to(torch.int64)  # public unit vector
    dots = [block_of(part) @ g_enc for part in _chunks(n, d, plan.chunk_elements)]  # local, exact (2^2p)
    dot = _mpc(_truncate(torch.cat(dots), 2 ** p, p), p)
    s = _mpc(_truncate(norms_sq, 2 ** p, p), p)
    negative = dot.lt(0.0)
    lhs = dot.square()
    rhs = s * (tau * tau)
    if tau >= 0:  # cos < tau  <=>  dot < 0  or  dot^2 < tau^2 |y|^2
        small = lhs.lt(rhs)
        return negative + small - negative * small
    return negative * lhs.gt(rhs)  # cos < tau < 0  <=>  dot < 0  and  dot^2 > tau^2 |y|^2


def compute_round(block_of, noise_sum: torch.Tensor | None, n: int, d: int, plan: RoundPlan, *,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This party's shares of (total [d] at :func:`output_scale_bits`, anomaly bits [n] at 2^p or None).

    ``block_of(slice)`` returns this party's int64 shares of the clients in the slice, ``[m, d]``;
    ``noise_sum`` is its share of the clients' summed noise, already at the output scale.
    """
    import_crypten()
    p = plan.precision_bits
    if n * d <= plan.chunk_elements:  # one chunk: expand and stack the shares once, not per pass
        block = block_of(slice(0, n))
        block_of = lambda part: block[part]  # noqa: E731
    w = torch.tensor(plan.weights, dtype=torch.float64)
    integral = plan.integral_weights
    bounded = plan.norm_bound is not None
    bits_share = norms_sq = masked = None
    if bounded or plan.reference is not None:
        masked = _Masked(block_of, n, d, plan)
        norms_sq = masked.norms_sq
    if plan.reference is not None:
        bits_share = _anomaly_bits(block_of, norms_sq, n, d, plan)._tensor.share
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
        noise = torch.randn(d, generator=generator, dtype=torch.float64) * plan.topup_std
        total += torch.round(noise * scale).to(torch.int64)
    return total, bits_share
