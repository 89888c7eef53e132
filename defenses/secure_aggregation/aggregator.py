"""Secure aggregation by MPC: clients secret-share, K parties compute, the server gets only the result.

:class:`MPCSecureAggregator` is trustfl's :class:`~trustfl.types.SecureAggregator`: per round,
:meth:`~MPCSecureAggregator.open_round` returns a :class:`SecureRound` into which each client
*submits* its update (client side: encoded, split into shares and sent to the parties; the
plaintext is not kept) and :meth:`SecureRound.finish` returns the revealed
:class:`~trustfl.types.SecureSum` only. Inside MPC (:mod:`~.mpc`): per-client L2 norm bounding
(scale or zero), distributed Gaussian noise for client-level DP (each client a share; the parties
top up what dropped clients did not send), an optional cosine anomaly bit per client.

Distributed noise: with m clients sampled in the round, each adds N(0, z^2 B^2 / m) to its shares;
if only m' < m complete their shares, each of the K parties adds N(0, (m - m') z^2 B^2 / m), so the
released sum carries at least N(0, z^2 B^2) even if K - 1 parties collude (Kairouz, Liu & Steinke
2021, "The Distributed Discrete Gaussian Mechanism", §1 for the client-share design; here
continuous noise is encoded at 2^-p, a rounding that is post-processing of each share).

Use in your own loop::

    with MPCSecureAggregator(parties=3, norm_bound=1.0) as agg:
        for rnd in range(rounds):
            secure = agg.open_round(rnd, client_ids, dim=d)
            for cid in client_ids:
                secure.submit(cid, train(cid))      # plaintext leaves the client only as shares
            result = secure.finish()                # result.total, result.client_ids, result.anomalous
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from trustfl.defenses.dp.client_level import clip_rows
from trustfl.defenses.secure_aggregation.encoding import ClientShares, all_finite, decode, share_update
from trustfl.defenses.secure_aggregation.mpc import RANGE_STEPS, output_scale_bits
from trustfl.defenses.secure_aggregation.pool import PartyPool, SecureAggregationError
from trustfl.defenses.secure_aggregation.prg import KEY_BYTES, new_key, normal_stream
from trustfl.defenses.secure_aggregation.settings import SecureAggregationSettings
from trustfl.errors import UpdateError
from trustfl.types import SecureSum

__all__ = ["MPCSecureAggregator", "SecureRound"]


@dataclass
class _RoundState:
    round: int
    client_ids: list[int]
    dim: int
    weights: dict[int, float] = field(default_factory=dict)
    reference: torch.Tensor | None = None


class SecureRound:
    """One round's secure sum: clients submit, :meth:`finish` reveals the result (once)."""

    def __init__(self, agg: "MPCSecureAggregator", state: _RoundState) -> None:
        self._agg, self._state, self._done = agg, state, False

    @property
    def num_sampled(self) -> int:
        return len(self._state.client_ids)

    def client_shares(self, client_id: int, update: torch.Tensor) -> tuple[ClientShares, ClientShares | None]:
        """Client side: the shares of ``update`` (and of its DP noise share) for this round's parties."""
        agg, st = self._agg, self._state
        if client_id not in st.client_ids:
            raise UpdateError(f"secure aggregation: client {client_id} was not sampled in round {st.round}")
        if update.ndim != 1 or update.numel() != st.dim:
            raise UpdateError(f"client {client_id}: update has shape {tuple(update.shape)}, expected ({st.dim},)")
        p = agg.pool.precision_bits
        if not all_finite(update):
            raise UpdateError(f"client {client_id}: the update contains NaN/Inf; it cannot be secret-shared")
        if agg.norm_bound is not None:
            # in units of B, and the client's own loose pre-clip to norm 2^R, the range in which the MPC's
            # clip to 1 is exact (clip_1(clip_{2^R}(y)) = clip_1(y): the result is unchanged)
            y = update.detach().double().unsqueeze(0) / agg.norm_bound
            update = clip_rows(y, 2.0 ** RANGE_STEPS * (1 - 1e-6))[0][0]
        x = share_update(update, num_parties=agg.pool.parties, precision_bits=p)
        noise = None
        if agg.noise_multiplier is not None:  # in units of B, at the scale the result is revealed at
            std = agg.noise_multiplier / math.sqrt(self.num_sampled)
            draw = normal_stream(new_key(), st.dim)  # ChaCha20 under a fresh key: unpredictable to the server
            noise = share_update(draw * std,
                                 num_parties=agg.pool.parties, check_norm=False,
                                 precision_bits=output_scale_bits(p, bounded=True, integral_weights=True))
        return x, noise

    def deliver(self, client_id: int, shares: ClientShares, noise: ClientShares | None = None, *,
                weight: float = 1.0, parties: Sequence[int] | None = None) -> None:
        """Send a client's shares to ``parties`` (default all). A client whose shares do not reach every
        party (e.g. it crashed half-way) is excluded from the sum at :meth:`finish`."""
        agg, st = self._agg, self._state
        self._check_open()
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
            raise UpdateError(f"client {client_id}: weight must be a finite number > 0, got {weight!r}")
        if (noise is None) != (agg.noise_multiplier is None):
            raise UpdateError(f"client {client_id}: DP noise shares are {'missing' if noise is None else 'unexpected'}")
        for sh in (shares, noise):
            if sh is not None and not all(isinstance(k, bytes) and len(k) == KEY_BYTES for k in sh.keys):
                raise UpdateError(f"client {client_id}: every share key must be a {KEY_BYTES}-byte string")
        st.weights[int(client_id)] = float(weight)
        targets = range(agg.pool.parties) if parties is None else parties
        for j in targets:
            for what, sh in (("x", shares), ("n", noise)):
                if sh is None:
                    continue
                if j < len(sh.keys):
                    agg.pool.send(j, ("share", int(client_id), what, sh.keys[j]), what=f"round {st.round}")
                else:
                    agg.pool.send(j, ("share", int(client_id), what, None), sh.last.contiguous().numpy(),
                                  what=f"round {st.round}")

    def submit(self, client_id: int, update: torch.Tensor, weight: float = 1.0) -> None:
        """Client side, all in one: share ``update`` and send the shares; nothing of it is kept here."""
        x, noise = self.client_shares(client_id, update)
        self.deliver(client_id, x, noise, weight=weight)

    def _check_open(self) -> None:
        if self._done:
            raise SecureAggregationError(f"secure aggregation: round {self._state.round} is already finished")

    def finish(self) -> SecureSum:
        """Run the MPC on the clients whose shares reached every party; reveal the sum (and anomaly bits).

        Raises:
            PartyFailure: a party died or timed out (nothing is released).
        """
        agg, st = self._agg, self._state
        self._check_open()
        self._done = True
        pool, what = agg.pool, f"round {st.round}"
        pool.send_all(("status",), what=what)
        have = [set(pool.recv(j, expect="have", what=what)[2]) for j in range(pool.parties)]
        included = sorted(set.intersection(*have) & set(st.weights))
        dropped = sorted(set(st.client_ids) - set(included))
        if not included:
            pool.send_all(("abort",), what=what)
            agg.last = SecureSum(total=None, weight_sum=0.0, client_ids=[], dropped=dropped)
            return agg.last
        topup = 0.0
        if agg.noise_multiplier is not None:
            assert agg.norm_bound is not None
            missing = self.num_sampled - len(included)
            topup = agg.noise_multiplier * math.sqrt(missing / self.num_sampled)  # in units of B
        reference = st.reference if agg.cosine_threshold is not None else None
        msg = {"included": included, "weights": [st.weights[c] for c in included], "norm_bound": agg.norm_bound,
               "mode": agg.over_bound, "topup_std": topup, "reference": reference is not None,
               "cosine_threshold": agg.cosine_threshold, "chunk_elements": agg.chunk_elements}
        for j in range(pool.parties):
            pool.send(j, ("compute", msg), what=what)
            if reference is not None:
                pool.send(j, ("reference",), reference.to(torch.float64).numpy().tobytes(), what=what)
        total = torch.zeros(st.dim, dtype=torch.int64)
        bits = torch.zeros(len(included), dtype=torch.int64) if reference is not None else None
        for j in range(pool.parties):
            head = pool.recv(j, expect="result", what=what)
            total += torch.frombuffer(bytearray(pool.recv_bytes(j, what=what)), dtype=torch.int64)
            if head[2]:
                assert bits is not None
                bits += torch.frombuffer(bytearray(pool.recv_bytes(j, what=what)), dtype=torch.int64)
        p = pool.precision_bits
        anomalous = None
        if bits is not None:  # CrypTen's comparison bits: integers 0/1 at scale 1
            anomalous = [c for c, b in zip(included, bits.tolist()) if b == 1]
        weights = torch.tensor([st.weights[c] for c in included], dtype=torch.float64)
        scale = output_scale_bits(p, bounded=agg.norm_bound is not None,
                                  integral_weights=bool((weights == weights.round()).all()) and
                                  float(weights.abs().max()) < 2 ** 20)
        value = decode(total, precision_bits=scale) * (agg.norm_bound if agg.norm_bound is not None else 1.0)
        revealed = {"secure_dropped": float(len(dropped))}  # public facts of the round, for the metrics
        if agg.norm_bound is not None:
            revealed["secure_norm_bound"] = float(agg.norm_bound)
        if agg.noise_multiplier is not None:  # std of the Gaussian noise in the revealed sum (after the top-up)
            revealed["secure_noise_std"] = float(agg.noise_multiplier * agg.norm_bound)
        agg.last = SecureSum(total=value, weight_sum=sum(st.weights[c] for c in included),
                             client_ids=included, dropped=dropped, anomalous=anomalous, revealed=revealed)
        return agg.last


class MPCSecureAggregator:
    """Secure aggregation by MPC over a :class:`PartyPool` (started lazily, reused every round).

    Args:
        parties / rendezvous / host / launch / precision_bits / timeout: the :class:`PartyPool`'s.
        norm_bound: B, per-client L2 bound applied on shares (None: plain secure sum).
        over_bound: ``"scale"`` (clip to B) or ``"zero"`` (drop the update from the sum).
        noise_multiplier: z; with it every client adds its share of N(0, z^2 B^2) (needs ``norm_bound``).
        cosine_threshold: tau; reveal per client the bit ``cos(update, previous global step) < tau``.
        chunk_elements: shares processed per MPC step (memory vs. latency).
        pool: an existing pool to use instead of starting one.
    """

    def __init__(self, *, parties: int = 3, rendezvous: str = "loopback", host: str = "127.0.0.1",
                 launch: str = "local", precision_bits: int = 16, timeout: float = 300.0, port: int = 0,
                 norm_bound: float | None = None, over_bound: str = "scale", noise_multiplier: float | None = None,
                 cosine_threshold: float | None = None, chunk_elements: int = 2 ** 24,
                 pool: PartyPool | None = None) -> None:
        # the config section's checks, one mechanism for the library and `[secure_aggregation]`
        SecureAggregationSettings(enabled=True, parties=parties, rendezvous=rendezvous, host=host,
                                  launch=launch, precision_bits=precision_bits, timeout=timeout,  # type: ignore[arg-type]
                                  port=port,
                                  norm_bound=norm_bound, over_bound=over_bound,  # type: ignore[arg-type]
                                  noise_multiplier=noise_multiplier, cosine_threshold=cosine_threshold)
        self.pool = pool if pool is not None else PartyPool(parties=parties, rendezvous=rendezvous, host=host,
                                                            launch=launch, precision_bits=precision_bits,
                                                            timeout=timeout, port=port)
        self.norm_bound = None if norm_bound is None else float(norm_bound)
        self.over_bound = over_bound
        self.noise_multiplier = None if noise_multiplier is None else float(noise_multiplier)
        self.cosine_threshold = None if cosine_threshold is None else float(cosine_threshold)
        self.chunk_elements = int(chunk_elements)
        self._previous_global: torch.Tensor | None = None
        self.last: SecureSum | None = None

    def __repr__(self) -> str:
        return (f"MPCSecureAggregator(parties={self.pool.parties}, norm_bound={self.norm_bound}, "
                f"over_bound={self.over_bound!r}, noise_multiplier={self.noise_multiplier}, "
                f"cosine_threshold={self.cosine_threshold})")

    def __enter__(self) -> "MPCSecureAggregator":
        self.pool.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()

    def open_round(self, round: int, client_ids: Sequence[int], *, dim: int,
                   global_vector: torch.Tensor | None = None) -> SecureRound:
        """Start round ``round`` with the sampled ``client_ids``; the parties expect ``dim``-long updates.

        ``global_vector`` (public) gives the anomaly reference: the previous global step
        ``global_vector - previous global_vector`` (none in the first round this object sees).
        """
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise UpdateError(f"secure aggregation: dim must be an int >= 1, got {dim!r}")
        ids = [int(c) for c in client_ids]
        if len(set(ids)) != len(ids) or not ids:
            raise UpdateError(f"secure aggregation: round {round} needs distinct client ids, got {ids}")
        self.pool.start()
        reference = None
        if global_vector is not None:
            g = global_vector.detach().to(torch.float64).reshape(-1)
            if self._previous_global is not None and self._previous_global.numel() == g.numel():
                step = g - self._previous_global
                reference = step if float(step.norm()) > 0 else None
            self._previous_global = g.clone()
        self.pool.send_all(("round", int(round), dim, self.noise_multiplier is not None), what=f"round {round}")
        return SecureRound(self, _RoundState(round=int(round), client_ids=ids, dim=dim, reference=reference))

    def secure_sum(self, updates: torch.Tensor, weights: torch.Tensor | None = None) -> SecureSum:
        """Library shortcut: secret-share each row of ``updates[n, d]`` and return the revealed result.

        (All rows are in this process here, so this is for experiments and tests; in a deployment each
        client calls :meth:`SecureRound.submit` on its own machine.)
        """
        if updates.ndim != 2 or updates.shape[0] < 1:
            raise UpdateError(f"secure aggregation: updates must be [n >= 1, d], got {tuple(updates.shape)}")
        n = updates.shape[0]
        w = torch.ones(n, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.numel() != n:
            raise UpdateError(f"weights: expected {n} entries (one per update), got {w.numel()}")
        secure = self.open_round(0, list(range(n)), dim=int(updates.shape[1]))
        for i in range(n):
            secure.submit(i, updates[i], float(w[i]))
        return secure.finish()
