"""Divide-and-Conquer (DnC): spectral outlier removal on random coordinate subsets.

Shejwalkar, Houmansadr 2021, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks
and Defenses for Federated Learning" (NDSS), Section VI, Algorithm 2: repeat ``niters`` times:
sample ``b`` coordinates, center the sub-updates by their mean, project them on the top right
singular vector ``v`` of the centered matrix, score ``s_i = <x_i - mu, v>^2`` and keep the
``n - c*f`` lowest scores; the good set is the intersection over iterations, and the aggregate is
its mean.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import math

import numpy as np
import torch

from trustfl.defenses._robust import (check_finite_updates, check_int, check_positive, finite_result,
                                      generator_or_seeded, require_tolerance, weighted_rows, working)
from trustfl.defenses.base import Aggregate, AggregateInfo
from trustfl.types import AggregatorStage

__all__ = ["DnC"]


def _top_direction_scores(centered: torch.Tensor) -> torch.Tensor:
    """``<c_i, v>^2`` for the top right singular vector ``v`` of ``centered[n, b]``, via the ``n x n`` Gram
    matrix: with ``C C^T = U diag(lambda) U^T``, ``C v = sqrt(lambda_1) u_1``, so the scores are ``lambda_1 u_1^2``
    (an ``n x n`` eigenproblem instead of an ``n x b`` SVD)."""
    gram = (centered @ centered.T).numpy()
    eigvals, eigvecs = np.linalg.eigh(0.5 * (gram + gram.T))
    return torch.from_numpy(max(float(eigvals[-1]), 0.0) * eigvecs[:, -1] ** 2)


class DnC(AggregatorStage):
    """DnC (Shejwalkar & Houmansadr 2021, Algorithm 2).

    Args:
        f: assumed number of Byzantine clients.
        sub_dim: coordinates sampled per iteration (``b``); all of them when ``d <= sub_dim``.
        num_iters: iterations (``niters``); the good set is the intersection over them.
        filter_frac: ``c``; each iteration removes ``floor(c * f)`` clients.
        seed: seeds the coordinate sampling when no ``generator`` is passed (the loop passes one per round).

    Tolerance: ``2f < n`` and ``floor(c f) < n``. Client weights are untrusted and ignored.
    ``info.scores["dnc_score"]`` is the outlier score of the last iteration; removed rows are flagged.

    Example:
        >>> u = torch.cat([torch.zeros(4, 3), torch.full((1, 3), 10.0)])
        >>> DnC(f=1)(u).info.accepted.tolist()
        [True, True, True, True, False]
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, f: int, sub_dim: int = 10_000, num_iters: int = 5, filter_frac: float = 1.0,
                 seed: int = 0) -> None:
        self.f = check_int("DnC", "f", f)
        self.sub_dim = check_int("DnC", "sub_dim", sub_dim, minimum=1)
        self.num_iters = check_int("DnC", "num_iters", num_iters, minimum=1)
        self.filter_frac = check_positive("DnC", "filter_frac", filter_frac, allow_zero=True)
        self.seed = check_int("DnC", "seed", seed)

    def _removed(self) -> int:
        return int(math.floor(self.filter_frac * self.f))

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("dnc", n, f, 2 * self.f < n and self._removed() < n,
                          f"2f < n and floor(c f) < n with the configured f={self.f}, c={self.filter_frac}",
                          configured_f=self.f)

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        n, d = check_finite_updates("dnc", updates)
        removed = self._removed()
        require_tolerance("dnc", n, self.f, 2 * self.f < n and removed < n, "2f < n and floor(c f) < n")
        gen = generator_or_seeded(generator, self.seed)
        good = torch.ones(n, dtype=torch.bool)
        scores = torch.zeros(n, dtype=torch.float64)
        for _ in range(self.num_iters):
            if d <= self.sub_dim:
                sub = updates.to(torch.float64)
            else:
                cols = torch.randperm(d, generator=gen)[:self.sub_dim]
                sub = updates[:, cols].to(torch.float64)
            centered = sub - sub.mean(dim=0)
            scores = _top_direction_scores(centered)
            keep = torch.zeros(n, dtype=torch.bool)
            keep[torch.argsort(scores, stable=True)[:n - removed]] = True
            good &= keep
        if not bool(good.any()):  # disjoint iterations (num_iters * floor(c f) >= n): keep the last good set
            good = keep
        coef = good.to(torch.float64) / int(good.sum())
        vector = weighted_rows(coef, working(updates))  # one GEMV, no copy of the kept rows
        info = AggregateInfo.all_accepted(n)
        info.accepted = good
        info.flagged = ~good
        info.scores["dnc_score"] = scores
        info.reasons = ["" if bool(g) else "removed: large projection on the top singular direction" for g in good]
        return Aggregate(vector=finite_result("dnc", vector, updates.dtype), info=info)
