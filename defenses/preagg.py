"""Pre-aggregators: norm clipping, nearest-neighbour mixing (NNM) and bucketing.

Each is ``(updates[n, d], weights | None) -> (updates', weights', info)`` and chains before any
aggregator in a :class:`~trustfl.defenses.Pipeline` (or runs alone on tensors). NormClip and NNM
keep the ``n`` rows; Bucketing returns one row per bucket and says in ``info.groups`` which
bucket each input row went to, so the pipeline maps the aggregator's per-row info back to clients.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Sequence

import torch

from trustfl.defenses._robust import (check_finite_updates, check_int, check_positive, generator_or_seeded, median_value, mix_rows,
                                      pairwise_sq_distances, require_tolerance, row_norms, scale_rows)
from trustfl.defenses.base import AggregateInfo
from trustfl.types import PreStage

__all__ = ["NNM", "Bucketing", "NormClip"]


class NormClip(PreStage):
    """Scale every update with ``||x_i|| > tau`` down to norm ``tau`` (direction kept).

    Args:
        max_norm: a fixed ``tau > 0``, or ``"median"`` for ``tau`` = the median of the round's norms
            (adaptive; with ``2f < n`` the median norm is bounded by honest norms).

    Weights pass through unchanged. ``info.scores["norm"]`` holds the norms before clipping.

    Example:
        >>> rows, _, info = NormClip(max_norm=1.0)(torch.tensor([[3.0, 4.0], [0.3, 0.4]]))
        >>> rows, info.clipped.tolist()
        (tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]]), [True, False])
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True  # bounds every client's influence by tau
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, max_norm: float | Literal["median"]) -> None:
        if isinstance(max_norm, str):
            if max_norm != "median":
                raise ValueError(f"NormClip: max_norm must be a number > 0 or 'median', got {max_norm!r}")
            self.max_norm: float | str = "median"
        else:
            self.max_norm = check_positive("NormClip", "max_norm", max_norm)

    def check_tolerance(self, n: int, f: int) -> None:
        if self.max_norm == "median":
            require_tolerance("norm_clip", n, f, 2 * f < n, "2f < n for a median-adaptive threshold")
        else:
            require_tolerance("norm_clip", n, f, f <= n, "f <= n (a fixed threshold bounds every client)")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, AggregateInfo]:
        n, _ = check_finite_updates("norm_clip", updates)
        norms = row_norms(updates)
        tau = median_value(norms) if self.max_norm == "median" else float(self.max_norm)
        scale = (tau / norms.clamp(min=1e-300)).clamp(max=1.0)
        clipped = scale < 1.0
        out = scale_rows(updates, scale) if bool(clipped.any()) else updates.clone()
        info = AggregateInfo.all_accepted(n)
        info.clipped = clipped
        info.scores["norm"] = norms  # the norms before clipping: what a later selector no longer sees
        info.reasons = [f"norm clipped from {float(v):.4g} to {tau:.4g}" if bool(c) else ""
                        for v, c in zip(norms, clipped)]
        info.stats["clip_norm"] = tau
        return out, weights, info


class NNM(PreStage):
    """Nearest-neighbour mixing: replace each update by the mean of its ``n - f`` nearest updates (itself included).

    Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan 2023, "Fixing by Mixing: A Recipe
    for Optimal Byzantine ML under Heterogeneity" (AISTATS), Algorithm 1; composed with
    any aggregator it gives the optimal robustness coefficient when ``n > 2f`` (their Theorem 1).
    Distances come from one GEMM and the mixing is one ``[n, n] @ [n, d]`` GEMM. Weights pass through.

    Args:
        f: assumed number of Byzantine clients.

    Example:
        >>> rows, _, _ = NNM(f=1)(torch.tensor([[0.0], [1.0], [100.0]]))
        >>> rows.flatten().tolist()
        [0.5, 0.5, 50.5]
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, f: int) -> None:
        self.f = check_int("NNM", "f", f)

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("nnm", n, f, n > 2 * self.f, f"n > 2f with the configured f={self.f} (Allouah et al. 2023)",
                          configured_f=self.f)

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, AggregateInfo]:
        n, _ = check_finite_updates("nnm", updates)
        require_tolerance("nnm", n, self.f, n > 2 * self.f, "n > 2f")
        k = n - self.f
        dist = pairwise_sq_distances(updates)
        dist.fill_diagonal_(-1.0)  # each row is its own nearest neighbour, also among duplicates
        nearest = dist.topk(k, dim=1, largest=False).indices
        mix = torch.zeros(n, n, dtype=torch.float64)
        mix.scatter_(1, nearest, 1.0 / k)
        out = mix_rows(mix, updates)  # float32 math for half inputs, float64 where float32 overflows
        info = AggregateInfo.all_accepted(n)
        picked = torch.zeros(n, dtype=torch.float64).index_add_(0, nearest.flatten(), torch.ones(n * k, dtype=torch.float64))
        info.scores["nnm_neighbor_count"] = picked
        info.stats["nnm_k"] = float(k)
        return out, weights, info


class Bucketing(PreStage):
    """Shuffle the updates (seeded by the generator) into buckets of ``s`` and average each bucket.

    Karimireddy, He, Jaggi 2022, "Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing" (ICLR), Algorithm 1: the following robust aggregator sees ``ceil(n / s)`` bucket
    means, at most ``f`` of which contain a Byzantine update, with reduced heterogeneity; their
    Theorem I needs ``f s < n / 2`` for an aggregator of breakdown point 1/2 (``s = floor(n / 2f)``
    at most). Client weights are untrusted: buckets are plain means and the returned weights are ``None``.

    Args:
        s: bucket size (``>= 1``; the last bucket may be smaller).
        seed: seeds the shuffle when no ``generator`` is passed (the loop passes one per round).

    ``info.groups[i]`` is the bucket of row ``i``; ``info.scores["bucket"]`` the same as floats.

    Example:
        >>> rows, w, info = Bucketing(s=2)(torch.arange(5.0)[:, None], generator=torch.Generator().manual_seed(0))
        >>> rows.shape, w, sorted(info.groups.tolist())
        (torch.Size([3, 1]), None, [0, 0, 1, 1, 2])
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, s: int, seed: int = 0) -> None:
        self.s = check_int("Bucketing", "s", s, minimum=1)
        self.seed = check_int("Bucketing", "seed", seed)

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("bucketing", n, f, 2 * f * self.s < n, f"2 f s < n with s={self.s} (Karimireddy et al. 2022)")

    def tolerance_after(self, n: int, f: int) -> tuple[int, int]:
        """(rows, Byzantine rows) the next stage sees: ``ceil(n / s)`` buckets, at most ``f`` of them bad."""
        m = math.ceil(n / self.s)
        return m, min(f, m)

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, AggregateInfo]:
        n, _ = check_finite_updates("bucketing", updates)
        gen = generator_or_seeded(generator, self.seed)
        perm = torch.randperm(n, generator=gen)
        groups = torch.empty(n, dtype=torch.long)
        groups[perm] = torch.arange(n) // self.s
        m = math.ceil(n / self.s)
        counts = torch.bincount(groups, minlength=m).to(torch.float64)
        mix = torch.zeros(m, n, dtype=torch.float64)
        mix[groups, torch.arange(n)] = 1.0
        out = mix_rows(mix / counts[:, None], updates)  # float32 math for half inputs, float64 on overflow
        info = AggregateInfo.all_accepted(n)
        info.groups = groups
        info.scores["bucket"] = groups.to(torch.float64)
        info.stats["buckets"] = float(m)
        return out, None, info
