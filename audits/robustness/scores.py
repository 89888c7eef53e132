"""Per-round anomaly scores of client updates, vectorized over ``[n, d]``.

Scores (one row per client of a round):

* ``norm``: L2 norm of the update.
* ``cos_aggregate``: cosine to the round's applied aggregate ``(global(r) - global(r-1)) / server_lr``.
* ``cos_previous``: cosine to the previous global step ``global(r-1) - global(r-2)`` (rounds >= 2).
* ``krum``: Krum score (Blanchard et al. 2017): sum of squared distances to the ``n - f - 2``
  nearest other updates (:func:`trustfl.defenses.krum.krum_scores`, at least one neighbour).
* ``median_distance``: L2 distance to the coordinate-wise median of the round's updates (mean of
  the two middle values for an even number of clients).

Each score gets a robust z-score within its round, ``(x - median) / (1.4826 * MAD)`` (Iglewicz
and Hoaglin 1993); when the MAD is 0 the mean absolute deviation (times 1.2533) is the scale, and
when that is 0 too every z is 0. Rounds with fewer than :data:`MIN_CLIENTS_FOR_Z` clients get z = 0.

Audit flag rule (:func:`flag_rule`): a client is flagged in a round when
``|z(norm)| > 3.5`` or ``z(krum) > 3.5`` or ``z(median_distance) > 3.5`` (one-sided: being
closer than the others is not suspicious) or ``cos_aggregate < 0`` (it pulls against what the
server applied). A z-score only counts with a minimum effect size: the value must be at least
``min_ratio = 1.5`` times the round's median (norm: or at most 1/1.5 times; Krum score compared
on the square-root scale, i.e. as a distance). Without it, tightly clustered honest updates (IID
clients) give a tiny MAD and flag a client that is only 10-20 % further out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from trustfl.defenses.krum import krum_scores

__all__ = ["MIN_CLIENTS_FOR_Z", "MIN_RATIO", "Z_THRESHOLD", "RoundScores", "default_f", "flag_rule", "median", "robust_z",
           "round_scores"]

Z_THRESHOLD = 3.5
MIN_RATIO = 1.5
MIN_CLIENTS_FOR_Z = 3
METRICS = ("norm", "cos_aggregate", "cos_previous", "krum", "median_distance")
Z_METRICS = ("norm", "krum", "median_distance")


def default_f(n: int) -> int:
    """Assumed number of Byzantine clients when nothing else says: ``floor((n - 3) / 2)``, at least 0."""
    return max(0, (n - 3) // 2)


def median(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Median along ``dim``, the mean of the two middle values for an even count (as numpy; torch's
    ``median`` returns the lower one)."""
    s = x.sort(dim=dim).values
    n = x.shape[dim]
    return (s.select(dim, (n - 1) // 2) + s.select(dim, n // 2)) / 2


def robust_z(x: torch.Tensor) -> torch.Tensor:
    """Robust z-scores of a 1-D tensor: ``(x - median) / (1.4826 * MAD)`` (see the module docstring)."""
    x = x.to(torch.float64)
    if x.numel() < MIN_CLIENTS_FOR_Z:
        return torch.zeros_like(x)
    med = median(x)
    dev = (x - med).abs()
    scale = 1.4826 * median(dev)
    if not float(scale) > 0:
        scale = 1.2533 * dev.mean()
    if not float(scale) > 0:
        return torch.zeros_like(x)
    return (x - med) / scale


def _cosine(u: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
    """Cosine of every row of ``u`` [n, d] with ``v`` [d]; NaN when ``v`` is None or a norm is 0."""
    n = u.shape[0]
    if v is None:
        return torch.full((n,), float("nan"), dtype=torch.float64)
    nu, nv = u.norm(dim=1), v.norm()
    out = (u @ v) / (nu * nv)
    out[(nu == 0) | (nv == 0)] = float("nan")
    return out


def flag_rule(z_norm: float, z_krum: float, z_median: float, cos_aggregate: float,
              threshold: float = Z_THRESHOLD, *, ratio_norm: float = math.inf, ratio_krum: float = math.inf,
              ratio_median: float = math.inf, min_ratio: float = MIN_RATIO) -> list[str]:
    """The reasons (empty: not flagged) for which the audit flags one client in one round.

    ``ratio_*``: the value over the round's median (Krum: square root of it); a z-score counts only
    when the ratio is ``>= min_ratio`` (norm: or ``<= 1 / min_ratio``)."""
    reasons = []
    if abs(z_norm) > threshold and (ratio_norm >= min_ratio or ratio_norm <= 1 / min_ratio):
        reasons.append(f"|z(norm)| = {abs(z_norm):.1f} > {threshold} (x{ratio_norm:.2g} the median)")
    if z_krum > threshold and ratio_krum >= min_ratio:
        reasons.append(f"z(krum) = {z_krum:.1f} > {threshold} (x{ratio_krum:.2g} the median, as a distance)")
    if z_median > threshold and ratio_median >= min_ratio:
        reasons.append(f"z(median distance) = {z_median:.1f} > {threshold} (x{ratio_median:.2g} the median)")
    if not math.isnan(cos_aggregate) and cos_aggregate < 0:
        reasons.append(f"cosine to the aggregate = {cos_aggregate:.2f} < 0")
    return reasons


@dataclass
class RoundScores:
    """Scores of one round; every tensor is ``[n]`` float64, rows in ``client_ids`` order."""

    round: int
    client_ids: list[str]
    f: int
    scores: dict[str, torch.Tensor]
    z: dict[str, torch.Tensor]
    reasons: list[list[str]] = field(default_factory=list)

    @property
    def flagged(self) -> list[bool]:
        return [bool(r) for r in self.reasons]

    def to_json(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if math.isnan(v) or math.isinf(v) else float(v)

        return {cid: {**{k: num(float(v[i])) for k, v in self.scores.items()},
                      **{f"z_{k}": num(float(v[i])) for k, v in self.z.items()},
                      "audit_flag": bool(self.reasons[i]), "audit_reasons": self.reasons[i]}
                for i, cid in enumerate(self.client_ids)}


@torch.no_grad()
def round_scores(round: int, client_ids: list[str], updates: torch.Tensor, *, aggregate: torch.Tensor | None,
                 previous: torch.Tensor | None, f: int | None = None,
                 threshold: float = Z_THRESHOLD, min_ratio: float = MIN_RATIO) -> RoundScores:
    """Anomaly scores, robust z-scores and audit flags of one round's updates ``[n, d]``.

    Args:
        aggregate: the step the server applied, divided by ``server_lr`` (None: unknown).
        previous: the previous global step (None in round 1).
        f: assumed Byzantine clients for the Krum score (default :func:`default_f`).
    """
    u = updates.to(torch.float64)
    n = u.shape[0]
    f = default_f(n) if f is None else max(0, int(f))
    sq = (u * u).sum(dim=1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * (u @ u.T)).clamp_min(0.0)
    dist.fill_diagonal_(0.0)
    krum = krum_scores(dist, f) if n > 1 else torch.zeros(n, dtype=torch.float64)
    med = median(u) if n > 0 else None
    scores = {
        "norm": sq.sqrt(),
        "cos_aggregate": _cosine(u, None if aggregate is None else aggregate.to(torch.float64)),
        "cos_previous": _cosine(u, None if previous is None else previous.to(torch.float64)),
        "krum": krum,
        "median_distance": (u - med).norm(dim=1) if med is not None else torch.zeros(0, dtype=torch.float64),
    }
    z = {k: robust_z(scores[k]) for k in Z_METRICS}
    def ratio(x: torch.Tensor) -> torch.Tensor:
        if n == 0:
            return x
        m = median(x)
        return x / m if float(m) > 0 else torch.where(x > 0, math.inf, 1.0).to(torch.float64)

    r_norm, r_krum, r_med = ratio(scores["norm"]), ratio(krum.sqrt()), ratio(scores["median_distance"])
    reasons = [flag_rule(float(z["norm"][i]), float(z["krum"][i]), float(z["median_distance"][i]),
                         float(scores["cos_aggregate"][i]), threshold, ratio_norm=float(r_norm[i]),
                         ratio_krum=float(r_krum[i]), ratio_median=float(r_med[i]), min_ratio=min_ratio)
               for i in range(n)]
    return RoundScores(round=round, client_ids=list(client_ids), f=f, scores=scores, z=z, reasons=reasons)
