"""Bulyan: iterated Krum selection, then a coordinate-wise trimmed mean around the median.

El Mhamdi, Guerraoui, Rouault 2018, "The Hidden Vulnerability of Distributed Learning in
Byzantium" (ICML), Section 4 (Bulyan) and Proposition 2: with ``n >= 4f + 3``,

1. select ``theta = n - 2f`` updates by applying Krum ``theta`` times, each time removing the
   chosen update from the candidates (the Krum scores of the remaining ``m`` candidates use their
   ``max(1, m - f - 2)`` nearest candidates, as Flower's ``aggregate_bulyan`` does);
2. per coordinate, average the ``beta = theta - 2f`` selected values closest to the selected
   values' median.

The distances are computed once (one GEMM); each Krum iteration only masks rows of the
``n x n`` matrix, so step 1 costs one pass over the data however large ``theta`` is.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from trustfl.defenses._robust import (check_finite_updates, check_int, column_sorted_reduce, finite_result, midpoint,
                                      pairwise_sq_distances, require_tolerance, working)
from trustfl.defenses.base import Aggregate, AggregateInfo
from trustfl.types import AggregatorStage
from trustfl.defenses.krum import krum_scores

__all__ = ["Bulyan"]

RULE = "n >= 4f + 3 (El Mhamdi et al. 2018, Proposition 2)"


class Bulyan(AggregatorStage):
    """Bulyan over Krum (El Mhamdi et al. 2018).

    Args:
        f: assumed number of Byzantine clients.

    Tolerance: ``n >= 4f + 3``. Client weights are untrusted and ignored. ``accepted`` marks the
    ``theta`` rows Krum selected (the ``2f`` others are flagged); ``info.scores["krum_score"]`` are
    the first-iteration Krum scores and ``info.scores["selection_order"]`` the iteration (1-based)
    that picked each row (0: never picked).

    Example:
        >>> u = torch.tensor([[0.0], [0.1], [0.2], [0.3], [0.4], [0.5], [0.6], [50.0]])
        >>> Bulyan(f=1)(u).vector
        tensor([0.2500])
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, f: int) -> None:
        self.f = check_int("Bulyan", "f", f)

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("bulyan", n, f, n >= 4 * self.f + 3, f"{RULE} with the configured f={self.f}",
                          configured_f=self.f)

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        n, _ = check_finite_updates("bulyan", updates)
        f = self.f
        require_tolerance("bulyan", n, f, n >= 4 * f + 3, RULE)
        theta, beta = n - 2 * f, n - 4 * f
        dist = pairwise_sq_distances(updates)
        active = torch.ones(n, dtype=torch.bool)
        order = torch.zeros(n, dtype=torch.long)
        first_scores = None
        for step in range(theta):  # theta tiny n x n problems, no pass over the data
            scores = krum_scores(dist, f, active)
            first_scores = scores if first_scores is None else first_scores
            best = int(torch.argmin(scores))
            order[best] = step + 1
            active[best] = False
        selected = (order > 0).nonzero().flatten()
        rows = working(updates)[selected]  # float16/bfloat16 -> float32 (numpy has no bfloat16)
        lo, hi = (theta - 1) // 2, theta // 2

        def closest_to_median(values: torch.Tensor, _order: torch.Tensor) -> torch.Tensor:
            med = values[:, lo] if lo == hi else midpoint(values[:, lo], values[:, hi])
            idx = (values - med[:, None]).abs().topk(beta, dim=1, largest=False).indices
            return values.gather(1, idx).mean(dim=1)

        vector, _ = column_sorted_reduce(rows, closest_to_median, kth=sorted({lo, hi}))
        bad = ~torch.isfinite(vector)
        if bool(bad.any()):  # float32 overflow near the maximum (|x - med|, the sum): those columns in float64
            part, _ = column_sorted_reduce(rows[:, bad].to(torch.float64), closest_to_median, kth=sorted({lo, hi}))
            vector[bad] = part.to(vector.dtype)
        info = AggregateInfo.all_accepted(n)
        info.accepted = order > 0
        info.flagged = ~info.accepted
        info.scores["krum_score"] = first_scores
        info.scores["selection_order"] = order.to(torch.float64)
        info.reasons = ["" if bool(a) else f"not among the theta={theta} Krum selections" for a in info.accepted]
        info.stats.update(theta=float(theta), beta=float(beta))
        return Aggregate(vector=finite_result("bulyan", vector, updates.dtype), info=info)
