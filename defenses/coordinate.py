"""Coordinate-wise robust aggregators: median and trimmed mean.

Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates" (ICML): Definition 1 (coordinate-wise median), Definition 2
(coordinate-wise beta-trimmed mean), Theorems 1 and 4 (error rates when a fraction alpha < 1/2 of
the machines is Byzantine, and beta >= alpha for the trimmed mean).

Both read their order statistics and the per-client counts from one cache-blocked pass over the
updates (:func:`trustfl.defenses._coordinate_kernels.column_order_stats`: column tiles transposed
into cache, sorted row-wise with numpy's SIMD sort, counted while still in cache, tiles shared among
``torch.get_num_threads()`` threads); the outputs equal Flower's ``aggregate_median`` (exactly) and
``aggregate_trimmed_avg`` (up to float32 summation order). A column's result always lies between two
honest values when fewer than half of the rows (trimmed mean: at most ``f`` per side) are
Byzantine, whatever the Byzantine rows hold.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np
import torch

from trustfl.defenses._coordinate_kernels import column_order_stats
from trustfl.defenses._robust import check_finite_updates, check_int, finite_result, midpoint, require_tolerance, working
from trustfl.defenses.base import Aggregate, AggregateInfo
from trustfl.errors import UpdateError
from trustfl.types import AggregatorStage

__all__ = ["CoordinateMedian", "TrimmedMean"]


class CoordinateMedian(AggregatorStage):
    """Coordinate-wise median of ``updates[n, d]`` (mean of the two middle values when ``n`` is even).

    Tolerance: ``2f < n`` (Yin et al. 2018, Theorem 1). Client weights are untrusted and ignored.
    ``info.scores["median_frac"]`` is, per client, the fraction of coordinates where its value is
    (one of) the middle value(s).

    Example:
        >>> CoordinateMedian()(torch.tensor([[1.0, 9.0], [2.0, 0.0], [1e30, 1.0]])).vector
        tensor([2., 1.])
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("median", n, f, 2 * f < n, "2f < n (an honest majority per coordinate)")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        n, d = _check_updates("median", updates)
        x = working(updates)  # float16/bfloat16 -> float32 (numpy has no bfloat16)
        lo, hi = (n - 1) // 2, n // 2
        stats = column_order_stats(x.detach().numpy(), lo, hi)  # one pass: middle values and per-row counts
        low, high = torch.from_numpy(stats.low), torch.from_numpy(stats.high)
        vector = low if lo == hi else midpoint(low, high)  # no overflow near the float32 maximum
        counts = torch.from_numpy(stats.inside)  # rows holding a middle value (ties included)
        info = AggregateInfo.all_accepted(n)
        info.scores["median_frac"] = counts.to(torch.float64) / d
        return Aggregate(vector=finite_result("median", vector, updates.dtype), info=info)


class TrimmedMean(AggregatorStage):
    """Coordinate-wise trimmed mean: per coordinate drop the ``f`` largest and ``f`` smallest values, average the rest.

    Args:
        f: values trimmed on each side (the assumed number of Byzantine clients, beta = f / n).
        flag_above: flag a client trimmed in more than this fraction of coordinates.

    Tolerance: ``2f < n`` (Yin et al. 2018, Theorem 4, needs beta >= alpha and beta < 1/2).
    Client weights are untrusted and ignored. ``info.scores["trimmed_frac"]`` is the fraction of a
    client's coordinates that were trimmed; a client trimmed everywhere is not ``accepted``.

    Example:
        >>> TrimmedMean(f=1)(torch.tensor([[1.0, 9.0], [2.0, 0.0], [3.0, 1.0], [1e30, -1e30]])).vector
        tensor([2.5000, 0.5000])
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, f: int, flag_above: float = 0.5) -> None:
        self.f = check_int("TrimmedMean", "f", f)
        if not 0.0 <= float(flag_above) <= 1.0:
            raise ValueError(f"TrimmedMean: flag_above must be in [0, 1], got {flag_above!r}")
        self.flag_above = float(flag_above)

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("trimmed_mean", n, f, 2 * self.f < n, f"2f < n with the configured f={self.f}",
                          configured_f=self.f)

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        n, d = _check_updates("trimmed_mean", updates)
        f = self.f
        require_tolerance("trimmed_mean", n, f, 2 * f < n, f"2f < n to trim the configured f={f} per side")

        x = working(updates)  # float16/bfloat16 -> float32 (numpy has no bfloat16)
        if f == 0:
            vector, counts = _safe_mean(x.detach().numpy()), None
        else:  # one pass: the mean of ranks f..n-f-1 and, per row, the coordinates inside [rank f, rank n-f-1]
            stats = column_order_stats(x.detach().numpy(), f, n - f - 1, middle_mean=True)
            vector = torch.from_numpy(stats.middle_mean)
            counts = d - torch.from_numpy(stats.inside)  # coordinates where the row was trimmed (outside the range)
        frac = (counts.to(torch.float64) / d) if counts is not None else torch.zeros(n, dtype=torch.float64)
        info = AggregateInfo.all_accepted(n)
        info.accepted = frac < 1.0
        info.flagged = frac > self.flag_above
        info.scores["trimmed_frac"] = frac
        info.reasons = [f"trimmed in {100 * float(p):.0f}% of coordinates" if p > self.flag_above else ""
                        for p in frac]
        return Aggregate(vector=finite_result("trimmed_mean", vector, updates.dtype), info=info)


def _check_updates(owner: str, updates: torch.Tensor) -> tuple[int, int]:
    """``check_finite_updates`` plus ``d >= 1``: a per-client fraction of zero coordinates would be NaN."""
    n, d = check_finite_updates(owner, updates)
    if d == 0:
        raise UpdateError(f"{owner}: updates have no coordinates (shape {tuple(updates.shape)}); nothing to aggregate")
    return n, d


def _safe_mean(rows: np.ndarray) -> torch.Tensor:
    """Column means of ``rows`` ``[k, d]`` in their dtype; columns whose float32 sum overflows (values near the
    float32 maximum) are re-averaged in float64, so a representable mean is never returned as ``inf``."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = rows.mean(axis=0, dtype=rows.dtype)
        bad = ~np.isfinite(out)
        if bad.any():
            out[bad] = rows[:, bad].astype(np.float64).mean(axis=0)  # cast back: inf only if the mean itself is
    return torch.from_numpy(np.ascontiguousarray(out))
