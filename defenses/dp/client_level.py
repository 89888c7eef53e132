"""Client-level DP-FedAvg as pipeline stages: clip every client update, average, add noise.

McMahan, Ramage, Talwar & Zhang 2018, "Learning Differentially Private Recurrent Language
Models" (ICLR), Algorithm 1 (DP-FedAvg, flat clipping, fixed-denominator estimator f̃_f with
equal weights w_k = 1): with m sampled clients, the server releases

    Δ̃ = (Σ_k clip_C(Δ_k) + N(0, z² C² I)) / m,

so one client (its whole data) changes the noiseless sum by at most C in L2 and each round
is a Gaussian mechanism with noise multiplier z (their Theorem 1 gives the accounting).

Fixed denominator (``expected_clients = qN``, what trustfl's loop uses, with Poisson sampling of
clients at rate q): the server releases Δ̃ = (Σ_k clip_C(Δ_k) + N(0, z² C² I)) / (qN), McMahan
et al.'s f̃_f with the *expected* count as denominator. Adding or removing one client changes the
release by at most C/(qN), the noise std is z·C/(qN), and the realised number of clients m (which
differs between neighbouring datasets) enters nothing that is released. A round with m = 0 still
releases noise. The realised-count mean (``expected_clients=None``) is for fixed-size rounds only,
whose accounting is then the caller's (Opacus's Poisson bound does not cover it).
Adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021, "Differentially Private
Learning with Adaptive Clipping", NeurIPS, Algorithm 1) moves C geometrically towards the
γ-quantile of update norms, estimated from a noisy count
b̃ = (Σ_k 1[‖Δ_k‖ ≤ C] + N(0, σ_b²)) / m:  C ← C · exp(−η_C (b̃ − γ)). Releasing the count and
the update is one Gaussian mechanism of multiplier z when the update noise uses
z_Δ = (z⁻² − (2σ_b)⁻²)^(-1/2) (their Theorem 1). That composition needs the count's sensitivity
to be 1/2; with the fixed denominator (add/remove adjacency) the released count is therefore
centred, b̃ = (Σ_k (1[‖Δ_k‖ ≤ C] − ½) + N(0, σ_b²)) / (qN) + ½, so one client moves it by ½.

Stages (registered, so configs can name them):
* ``pre "dp_clip"`` — :class:`ClientClip` (fixed or adaptive C), records C in ``info.stats``.
* ``post "dp_fedavg"`` — :class:`GaussianNoise`, reads C from ``info.stats`` and adds the
  noise to the mean; it refuses to run without ``dp_clip`` or with unequal weights.

Distributed noise for secure aggregation: :func:`noise_share` lets each client add its share
so the (securely) summed noise has std z·C.
"""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

import torch

from trustfl.defenses.base import Aggregate, AggregateInfo, validate_updates
from trustfl.errors import UpdateError
from trustfl.types import PostStageBase, PreStage

__all__ = ["ClientClip", "GaussianNoise", "clip_rows", "noise_share", "update_noise_multiplier"]


def update_noise_multiplier(noise_multiplier: float, count_noise_std: float | None) -> float:
    """z_Δ such that (update with z_Δ, count with σ_b) compose to one Gaussian mechanism of multiplier z.

    Andrew et al. 2021, Theorem 1: z = (z_Δ⁻² + (2σ_b)⁻²)^(-1/2). With no count (fixed
    clipping) z_Δ = z.

    Raises:
        ValueError: 2σ_b <= z, so no z_Δ is left for the update.
    """
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier: must be > 0, got {noise_multiplier}")
    if count_noise_std is None:
        return float(noise_multiplier)
    rest = noise_multiplier ** -2 - (2.0 * count_noise_std) ** -2
    if rest <= 0:
        raise ValueError(f"count_noise_std: 2*count_noise_std must exceed noise_multiplier={noise_multiplier} "
                         f"(Andrew et al. 2021, Thm 1), got count_noise_std={count_noise_std}; raise it "
                         "(the paper uses clients_per_round / 20)")
    return float(rest ** -0.5)


def clip_rows(updates: torch.Tensor, clip_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each row of ``updates[n, d]`` to L2 norm at most ``clip_norm``; return (clipped, norms[n]).

    Norms are computed in float64; the input is not modified.
    """
    if not clip_norm > 0:
        raise ValueError(f"clip_norm: must be > 0, got {clip_norm}")
    norms = updates.double().norm(dim=1)
    factor = (clip_norm / norms.clamp_min(1e-300)).clamp(max=1.0)
    return updates * factor.to(updates.dtype).unsqueeze(1), norms


class ClientClip(PreStage):
    """Pre-stage ``"dp_clip"``: clip every client update to L2 norm C (fixed or adaptive).

    Args:
        clip_norm: C, or the initial C when ``adaptive``.
        adaptive: geometric update of C towards the ``target_quantile`` of update norms
            (Andrew et al. 2021, Algorithm 1), from a count with Gaussian noise ``count_noise_std``.
        target_quantile: γ in (0, 1).
        clip_lr: η_C > 0.
        count_noise_std: σ_b > 0 (required with ``adaptive``).
        expected_clients: qN, the fixed denominator of the noisy count (with Poisson sampling of
            clients); None divides by the realised count m (fixed-size rounds).

    The C used this round is in ``info.stats["dp_clip_norm"]`` (and ``dp_count_noise_std``);
    ``clip_norm`` stays the configured (initial) C; the current C is ``current_clip_norm``, which
    adaptive clipping moves and ``state_dict`` carries so a resumed run continues it.

    Example:
        >>> rows, w, info = ClientClip(clip_norm=1.0)(torch.tensor([[3.0, 4.0], [0.3, 0.4]]))
        >>> rows.norm(dim=1).tolist(), info.clipped.tolist()
        ([1.0, 0.5], [True, False])
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = True  # the adaptive C (empty state with fixed clipping)
    claims_robustness: ClassVar[bool] = False
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, clip_norm: float, adaptive: bool = False, target_quantile: float = 0.5,
                 clip_lr: float = 0.2, count_noise_std: float | None = None,
                 expected_clients: float | None = None) -> None:
        if not clip_norm > 0:
            raise ValueError(f"clip_norm: must be > 0, got {clip_norm}")
        if not 0 < target_quantile < 1:
            raise ValueError(f"target_quantile: must be in (0, 1), got {target_quantile}")
        if not clip_lr > 0:
            raise ValueError(f"clip_lr: must be > 0, got {clip_lr}")
        if adaptive and not (count_noise_std is not None and count_noise_std > 0):
            raise ValueError(f"count_noise_std: adaptive clipping needs a count noise std > 0 (its privacy "
                             f"cost is part of the budget), got {count_noise_std}")
        if not adaptive and count_noise_std is not None:
            raise ValueError("count_noise_std: only applies with adaptive=True; remove it")
        self.clip_norm = float(clip_norm)
        self.adaptive = adaptive
        self.target_quantile = float(target_quantile)
        self.clip_lr = float(clip_lr)
        self.count_noise_std = None if count_noise_std is None else float(count_noise_std)
        self.expected_clients = _check_expected(expected_clients)
        self.current_clip_norm = self.clip_norm

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None, client_ids: Sequence[int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, AggregateInfo]:
        finite = validate_updates(updates)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            raise UpdateError(f"dp_clip: rows {bad[:8]} contain NaN/Inf; run it inside a trustfl.defenses.Pipeline, "
                              "which rejects such clients and records why")
        n = updates.shape[0]
        c = self.current_clip_norm
        clipped, norms = clip_rows(updates, c)
        info = AggregateInfo.all_accepted(n)
        info.clipped = norms > c
        info.scores["norm"] = norms
        info.reasons = [f"clipped to C={c:.4g} (norm {float(v):.4g})" if v > c else "" for v in norms]
        info.stats.update(self._adapt(int((norms <= c).sum()), n, generator))
        return clipped, weights, info

    def empty_round(self, generator: torch.Generator | None = None) -> dict[str, float]:
        """A round with no client (Poisson sampling): the stats of an empty sum; adaptive C still moves
        with the noisy count (only with ``expected_clients``: an empty count has no realised mean)."""
        if self.expected_clients is None:
            raise ValueError("dp_clip: a round with no client needs expected_clients (the fixed denominator)")
        return self._adapt(0, 0, generator)

    def _adapt(self, unclipped: int, n: int, generator: torch.Generator | None) -> dict[str, float]:
        """``info.stats`` of this round; with adaptive clipping, the noisy count and the next C."""
        c = self.current_clip_norm
        stats: dict[str, float] = {"dp_clip_norm": c}
        if self.expected_clients is not None:
            stats["dp_denominator"] = self.expected_clients
        if self.adaptive:
            assert self.count_noise_std is not None
            noise = float(torch.randn((), generator=generator, dtype=torch.float64) * self.count_noise_std)
            if self.expected_clients is None:
                b = (unclipped + noise) / n  # Andrew et al. 2021, Alg. 1
            else:  # centred count (sensitivity 1/2 under add/remove), fixed denominator
                b = (unclipped - 0.5 * n + noise) / self.expected_clients + 0.5
            self.current_clip_norm = c * math.exp(-self.clip_lr * (b - self.target_quantile))
            stats.update(dp_count_noise_std=self.count_noise_std, dp_noisy_unclipped_fraction=b,
                         dp_next_clip_norm=self.current_clip_norm)
        return stats

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"clip_norm": torch.tensor(self.current_clip_norm, dtype=torch.float64)} if self.adaptive else {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.adaptive:
            if "clip_norm" not in state:
                raise ValueError(f"ClientClip.load_state_dict: missing 'clip_norm', got keys {sorted(state)}")
            self.current_clip_norm = float(state["clip_norm"])
        elif state:
            raise ValueError(f"ClientClip.load_state_dict: fixed clipping keeps no state, got {sorted(state)}")


class GaussianNoise(PostStageBase):
    """Post-stage ``"dp_fedavg"``: add N(0, (z_Δ C / m)²) to the mean of m clipped updates.

    Needs a :class:`ClientClip` earlier in the pipeline (reads ``info.stats["dp_clip_norm"]``)
    and equal client weights (the sensitivity C/m of the mean holds only for w_k = 1:
    McMahan et al. 2018, estimator f̃_f with w_k = 1). Use ``FedAvg(weighted=False)``.

    With ``expected_clients = qN`` (Poisson sampling of clients at rate q) the release is the
    fixed-denominator estimate (Σ clipped + N(0, z_Δ² C²)) / (qN) instead (sensitivity C/(qN));
    the FedAvg mean it receives is turned back into the sum (× m), and m = 0 is allowed
    (:meth:`empty_round`).

    Args:
        noise_multiplier: z > 0, the multiplier of the whole round (update and, with adaptive
            clipping, count); the update gets z_Δ (see :func:`update_noise_multiplier`).
        expected_clients: qN > 0, the fixed denominator; None divides by the realised m.

    Raises (on call):
        ValueError: no ``dp_clip_norm`` in the aggregate's stats, or unequal weights.
    """

    requires_individual_updates: ClassVar[bool] = False  # runs on the (secure) sum, given clipping happened client-side
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = False
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, noise_multiplier: float, expected_clients: float | None = None) -> None:
        if not noise_multiplier > 0:
            raise ValueError(f"noise_multiplier: must be > 0 (0 means no privacy), got {noise_multiplier}")
        self.noise_multiplier = float(noise_multiplier)
        self.expected_clients = _check_expected(expected_clients)

    def __call__(self, aggregate: Aggregate, *, num_clients: int, generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        if not bool(torch.isfinite(aggregate.vector).all()):
            raise UpdateError("dp_fedavg: the aggregate contains NaN/Inf; refusing to release it")
        stats = aggregate.info.stats
        if "dp_clip_norm" not in stats:
            raise ValueError("dp_fedavg: no clipping norm in the aggregate (info.stats['dp_clip_norm']); put a "
                             "'dp_clip' pre-stage (ClientClip) in the pipeline: noise without clipping has "
                             "unbounded sensitivity")
        weight = aggregate.info.scores.get("weight")
        if weight is None:
            raise ValueError("dp_fedavg: the aggregator reported no per-client 'weight' score; use "
                             "FedAvg(weighted=False) so the sensitivity C/m is known")
        w = weight.double()
        w = w[w > 0]
        m = int(w.numel())
        if m == 0 or not torch.allclose(w, torch.full_like(w, 1.0 / m), rtol=1e-5, atol=0.0):
            raise ValueError(f"dp_fedavg: client weights must be equal (1/m), got {weight.tolist()[:6]}; use "
                             "aggregator_options = {weighted = false}: client-level DP here assumes w_k = 1 "
                             "(McMahan et al. 2018, f~_f estimator)")
        if m != num_clients:
            raise ValueError(f"dp_fedavg: {m} clients carry weight but num_clients={num_clients}; the noise "
                             "is calibrated to the mean over all clients of the round")
        return self._release(aggregate, m, generator)

    def empty_round(self, d: int, stats: dict[str, float], *, dtype: torch.dtype = torch.float32,
                    generator: torch.Generator | None = None) -> Aggregate:
        """The release of a round with no client (fixed denominator only): N(0, z_Δ² C²) / (qN).

        ``stats`` are the clipping stage's (:meth:`ClientClip.empty_round`)."""
        if self.expected_clients is None:
            raise ValueError("dp_fedavg: a round with no client needs expected_clients (the fixed denominator)")
        if "dp_clip_norm" not in stats:
            raise ValueError("dp_fedavg: no clipping norm for the empty round (stats['dp_clip_norm'])")
        info = AggregateInfo.all_accepted(0)
        info.scores["weight"] = torch.zeros(0, dtype=torch.float64)
        info.stats = dict(stats)
        return self._release(Aggregate(vector=torch.zeros(d, dtype=dtype), info=info), 0, generator)

    def _release(self, aggregate: Aggregate, m: int, generator: torch.Generator | None) -> Aggregate:
        stats = aggregate.info.stats
        c = float(stats["dp_clip_norm"])
        z = update_noise_multiplier(self.noise_multiplier, stats.get("dp_count_noise_std"))
        scores = dict(aggregate.info.scores)
        if self.expected_clients is None:
            denominator, base = float(m), aggregate.vector.double()
        else:  # the clipped sum (mean × m) over the expected count qN; each client weighs 1/(qN)
            denominator, base = self.expected_clients, aggregate.vector.double() * (m / self.expected_clients)
            scores["weight"] = torch.full((m,), 1.0 / self.expected_clients, dtype=torch.float64)
        std = z * c / denominator
        noise = torch.randn(aggregate.vector.shape, generator=generator, dtype=torch.float64) * std
        info = AggregateInfo(accepted=aggregate.info.accepted, clipped=aggregate.info.clipped,
                             flagged=aggregate.info.flagged, scores=scores, reasons=list(aggregate.info.reasons),
                             stats={**stats, "dp_noise_std": std, "dp_update_noise_multiplier": z,
                                    "dp_denominator": denominator})
        return Aggregate(vector=(base + noise).to(aggregate.vector.dtype), info=info)


def _check_expected(expected_clients: float | None) -> float | None:
    if expected_clients is None:
        return None
    if isinstance(expected_clients, bool) or not (float(expected_clients) > 0 and math.isfinite(expected_clients)):
        raise ValueError(f"expected_clients: must be a finite number > 0 (q x num_clients), got {expected_clients!r}")
    return float(expected_clients)


def noise_share(shape: tuple[int, ...] | torch.Size, *, noise_multiplier: float, clip_norm: float,
                num_shares: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One client's share of the DP-FedAvg noise for secure aggregation, N(0, z² C² / k).

    With ``k = num_shares`` honest clients each adding a share to its clipped update, the
    secure sum carries N(0, z² C²), the noise :class:`GaussianNoise` adds centrally (sums of
    independent Gaussians: variances add). Choose ``k`` as the number of clients you trust to
    survive and not to collude (a client that drops out or reveals its share removes 1/k of
    the variance; Kairouz, Liu & Steinke 2021, "The Distributed Discrete Gaussian Mechanism",
    §1). Continuous noise; secure aggregation over a finite ring should discretize it
    (the same paper), which the secure-aggregation issue does.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> share = noise_share((4,), noise_multiplier=1.0, clip_norm=0.5, num_shares=10, generator=g)
        >>> share.shape
        torch.Size([4])
    """
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier: must be > 0, got {noise_multiplier}")
    if not clip_norm > 0:
        raise ValueError(f"clip_norm: must be > 0, got {clip_norm}")
    if num_shares < 1:
        raise ValueError(f"num_shares: must be >= 1, got {num_shares}")
    std = noise_multiplier * clip_norm / math.sqrt(num_shares)
    return (torch.randn(tuple(shape), generator=generator, dtype=torch.float64) * std).to(torch.float32)
