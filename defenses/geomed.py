"""Geometric median by the smoothed Weiszfeld algorithm (RFA).

Pillutla, Kakade, Harchaoui 2022, "Robust Aggregation for Federated Learning" (IEEE Trans.
Signal Processing 70), Algorithm 2 (smoothed Weiszfeld) inside Algorithm 3 (RFA): the
aggregate approximately minimizes ``sum_i alpha_i * max(nu, ||v - w_i||)``; each iteration sets
``beta_i = alpha_i / max(nu, ||v - w_i||)`` and ``v = sum_i beta_i w_i / sum_i beta_i``. The geometric
median has breakdown point 1/2: it stays bounded while the corrupted weight is below half of
the total (the paper's robustness result needs the same condition).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from trustfl.defenses._robust import (check_finite_updates, check_int, check_positive, finite_result,
                                      require_tolerance, weighted_rows, working)
from trustfl.defenses.base import Aggregate, AggregateInfo, validate_weights
from trustfl.types import AggregatorStage

__all__ = ["GeometricMedian", "distances_to"]


def distances_to(updates: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Float64 ``||updates[i] - point||`` for every row, exact (no ``||a||^2 + ||b||^2 - 2ab`` cancellation),
    one pass over ``updates`` and no ``[n, d]`` temporary; rows whose float32 distance overflows are redone
    in float64 (``inf`` only beyond the float64 range); float16/bfloat16 are computed in float32."""
    x = working(updates)
    dist = torch.cdist(x, point.to(x.dtype)[None], compute_mode="donot_use_mm_for_euclid_dist")[:, 0].to(torch.float64)
    bad = ~torch.isfinite(dist)
    if bool(bad.any()) and x.dtype != torch.float64:
        dist[bad] = torch.cdist(x[bad].to(torch.float64), point.to(torch.float64)[None],
                                compute_mode="donot_use_mm_for_euclid_dist")[:, 0]
    return dist


class GeometricMedian(AggregatorStage):
    """Approximate geometric median of ``updates[n, d]`` (RFA, smoothed Weiszfeld).

    Args:
        max_iter: Weiszfeld iterations at most (each: one exact distance pass, one weighted sum).
        tol: stop once ``||v_{t+1} - v_t|| <= tol * max(||v_t||, 1e-12)``.
        nu: smoothing ``nu > 0`` (avoids division by zero when ``v`` hits a client update).
        weighted: use the client weights as RFA's ``alpha_i``. Client-reported weights are
            untrusted; the default ``False`` ignores them (uniform ``alpha``).

    Tolerance: ``2f < n`` (breakdown point 1/2). Starts from the coordinate-wise mean.
    ``info.scores["distance"]`` is each client's distance to the result and
    ``info.scores["weiszfeld_weight"]`` its normalized weight in the last iteration.

    Example:
        >>> u = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1e30, 1e30]])
        >>> GeometricMedian()(u).vector.abs().max() < 1.0
        tensor(True)
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, max_iter: int = 100, tol: float = 1e-6, nu: float = 1e-6, weighted: bool = False) -> None:
        self.max_iter = check_int("GeometricMedian", "max_iter", max_iter, minimum=1)
        self.tol = check_positive("GeometricMedian", "tol", tol)
        self.nu = check_positive("GeometricMedian", "nu", nu)
        if not isinstance(weighted, bool):
            raise ValueError(f"GeometricMedian: weighted must be true or false, got {weighted!r}")
        self.weighted = weighted

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("geometric_median", n, f, 2 * f < n, "2f < n (breakdown point 1/2)")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        n, _ = check_finite_updates("geometric_median", updates)
        x = working(updates)  # float16/bfloat16 -> float32; the result is returned in the input dtype
        alpha = validate_weights(weights if self.weighted else None, n)
        alpha = alpha / alpha.sum()
        scale = torch.linalg.vector_norm(x, dim=1).to(torch.float64)
        # start at the mean of the rows that do not overflow (an inf-norm row would make the mean inf)
        finite = torch.isfinite(scale)
        w0 = torch.where(finite, alpha, torch.zeros_like(alpha))
        v = weighted_rows(w0 / w0.sum(), x) if bool(finite.any()) else x.median(dim=0).values
        beta = alpha
        iters = 0
        for iters in range(1, self.max_iter + 1):
            dist = distances_to(x, v)
            beta = alpha / dist.clamp(min=self.nu)  # inf distance -> weight 0
            beta = beta / beta.sum()
            v_new = weighted_rows(beta, x)
            step = float(torch.linalg.vector_norm((v_new - v).to(torch.float64)))
            v = v_new
            if step <= self.tol * max(float(torch.linalg.vector_norm(v.to(torch.float64))), 1e-12):
                break
        info = AggregateInfo.all_accepted(n)
        info.scores["distance"] = distances_to(x, v)
        info.scores["weiszfeld_weight"] = beta
        info.stats["iterations"] = float(iters)
        return Aggregate(vector=finite_result("geometric_median", v, updates.dtype), info=info)
