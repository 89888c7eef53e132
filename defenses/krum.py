"""Krum and Multi-Krum: keep the update(s) closest to their n - f - 2 nearest neighbours.

Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent" (NeurIPS), Section 4: the Krum score of update ``V_i`` is
``s(i) = sum_{i -> j} ||V_i - V_j||^2`` over the ``n - f - 2`` updates closest to ``V_i``; Krum
returns the update of minimal score, Multi-Krum the mean of the ``m`` updates of lowest score.
Proposition 1 ((alpha, f)-Byzantine resilience) needs ``2f + 2 < n``.

All ``n x n`` distances come from one GEMM (:func:`~trustfl.defenses._robust.pairwise_sq_distances`),
so the cost is one pass over ``[n, d]`` plus an ``n x n`` problem, instead of ``n^2`` vector
differences (Flower's ``aggregate_krum``).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from trustfl.defenses._robust import (check_finite_updates, check_int, finite_result, pairwise_sq_distances,
                                      require_tolerance, weighted_rows, working)
from trustfl.defenses.base import Aggregate, AggregateInfo
from trustfl.types import AggregatorStage

__all__ = ["Krum", "MultiKrum", "krum_scores"]

KRUM_RULE = "n > 2f + 2 (Blanchard et al. 2017, Proposition 1)"


def krum_scores(dist: torch.Tensor, f: int, active: torch.Tensor | None = None) -> torch.Tensor:
    """Krum scores ``[n]`` from squared distances ``[n, n]``: each row's sum over its ``max(1, m - f - 2)``
    nearest other rows among the ``m`` ``active`` ones; inactive rows score ``+inf``."""
    n = dist.shape[0]
    active = torch.ones(n, dtype=torch.bool) if active is None else active
    m = int(active.sum())
    k = max(1, m - f - 2)
    d = dist.clone()
    d.fill_diagonal_(float("inf"))
    d[:, ~active] = float("inf")
    if m - 1 < k:  # a single active row: its score is 0
        scores = torch.zeros(n, dtype=dist.dtype)
    else:
        scores = d.topk(k, dim=1, largest=False).values.sum(dim=1)
    scores[~active] = float("inf")
    return scores


class MultiKrum(AggregatorStage):
    """Mean of the ``m`` updates with the lowest Krum scores (Multi-Krum; Krum is ``m = 1``).

    Args:
        f: assumed number of Byzantine clients.
        m: updates kept; ``None`` keeps ``n - f``.

    Tolerance: ``n > 2f + 2``. Client weights are untrusted and ignored (the kept updates are
    averaged uniformly; Flower weights them by self-reported sample counts).
    ``info.scores["krum_score"]`` holds the scores; kept rows are ``accepted``, the others flagged.

    Example:
        >>> u = torch.tensor([[0.0], [0.1], [0.2], [0.3], [0.4], [50.0]])
        >>> MultiKrum(f=1, m=2)(u).vector
        tensor([0.1500])
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    name = "multi_krum"

    def __init__(self, *, f: int, m: int | None = None) -> None:
        self.f = check_int(type(self).__name__, "f", f)
        self.m = None if m is None else check_int(type(self).__name__, "m", m, minimum=1)

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance(self.name, n, f, n > 2 * self.f + 2, f"{KRUM_RULE} with the configured f={self.f}",
                          configured_f=self.f)

    def _keep(self, n: int) -> int:
        m = n - self.f if self.m is None else self.m
        if m > n:
            raise ValueError(f"{self.name}: m={m} exceeds the number of updates n={n}; use m <= n")
        return m

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        n, _ = check_finite_updates(self.name, updates)
        require_tolerance(self.name, n, self.f, n > 2 * self.f + 2, KRUM_RULE)
        m = self._keep(n)
        scores = krum_scores(pairwise_sq_distances(updates), self.f)
        keep = torch.argsort(scores, stable=True)[:m]
        if m == 1:
            vector = updates[keep[0]].clone()
        else:  # one GEMV over the input instead of copying the m kept rows (float32 for half inputs)
            coef = torch.zeros(n, dtype=torch.float64)
            coef[keep] = 1.0 / m
            vector = weighted_rows(coef, working(updates))
        info = AggregateInfo.all_accepted(n)
        info.accepted[:] = False
        info.accepted[keep] = True
        info.flagged = ~info.accepted if m > 1 else torch.zeros(n, dtype=torch.bool)
        info.scores["krum_score"] = scores
        rank = torch.empty(n, dtype=torch.long)
        rank[torch.argsort(scores, stable=True)] = torch.arange(n)
        info.reasons = ["" if bool(a) else f"not selected: krum score rank {int(r) + 1} of {n} (keeps {m})"
                        for a, r in zip(info.accepted, rank)]
        info.stats["kept"] = float(m)
        return Aggregate(vector=finite_result(self.name, vector, updates.dtype), info=info)


class Krum(MultiKrum):
    """The single update with the lowest Krum score (Blanchard et al. 2017, Section 4).

    Args:
        f: assumed number of Byzantine clients.

    Tolerance: ``n > 2f + 2``. Client weights are ignored. Only the chosen row is ``accepted``;
    the others are not flagged (Krum keeps one update by design).

    Example:
        >>> Krum(f=1)(torch.tensor([[0.0], [0.1], [0.25], [0.3], [0.4], [50.0]])).vector
        tensor([0.2500])
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    name = "krum"

    def __init__(self, *, f: int) -> None:
        super().__init__(f=f, m=1)
