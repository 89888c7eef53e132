"""Centered clipping (CC): clip every update around the previous aggregate, iterate.

Karimireddy, He, Jaggi 2021, "Learning from History for Byzantine Robust Optimization"
(ICML), Section 4, the CC rule: starting from ``v_0`` = the previous round's aggregate,
``v_{l+1} = v_l + (1/n) sum_i (x_i - v_l) * min(1, tau / ||x_i - v_l||)`` for ``l < L``. The paper
proves it a robust aggregator for a small fraction ``delta = f/n`` of Byzantine workers (with
worker momentum); trustfl enforces the necessary honest majority ``2f < n``.

Stateful: the center (the last aggregate) is kept explicitly and round-trips through
``state_dict()`` / ``load_state_dict()``, which the loop writes to the run directory so a resumed
run continues with the same center. Before the first round the center is 0.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from trustfl.defenses._robust import (check_finite_result, check_finite_updates, check_int, check_positive,
                                      require_tolerance, weighted_rows, working)
from trustfl.defenses.base import Aggregate, AggregateInfo
from trustfl.types import AggregatorStage
from trustfl.defenses.geomed import distances_to

__all__ = ["CenteredClipping"]


class CenteredClipping(AggregatorStage):
    """Centered clipping with radius ``tau`` and ``iters`` (``L``) iterations, centered at the last aggregate.

    Args:
        tau: clipping radius around the center (``> 0``).
        iters: CC iterations per round (``L``; the paper uses 1 with momentum).

    Tolerance: ``2f < n``. Client weights are untrusted and ignored (the rule averages with 1/n).
    ``info.clipped`` marks rows farther than ``tau`` from the last iterate's center;
    ``info.scores["distance"]`` is each row's distance to that center.

    Example:
        >>> cc = CenteredClipping(tau=1.0)
        >>> cc(torch.tensor([[0.5, 0.0], [0.0, 0.5], [100.0, 0.0]])).vector
        tensor([0.5000, 0.1667])
        >>> sorted(cc.state_dict())
        ['center']
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = True
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, tau: float, iters: int = 1) -> None:
        self.tau = check_positive("CenteredClipping", "tau", tau)
        self.iters = check_int("CenteredClipping", "iters", iters, minimum=1)
        self.center: torch.Tensor | None = None

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("centered_clipping", n, f, 2 * f < n, "2f < n (an honest majority)")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.center is None else {"center": self.center.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        unknown = set(state) - {"center"}
        if unknown:
            raise ValueError(f"CenteredClipping.load_state_dict: unknown keys {sorted(unknown)}; expected ['center']")
        self.center = state["center"].clone() if "center" in state else None

    def reset(self) -> None:
        """Forget the history (the next round is centered at 0)."""
        self.center = None

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        n, d = check_finite_updates("centered_clipping", updates)
        if self.center is not None and self.center.shape != (d,):
            raise ValueError(f"centered_clipping: stored center has shape {tuple(self.center.shape)} but updates "
                             f"have d={d}; call reset() when the parameter layout changes")
        x = working(updates)  # float16/bfloat16 -> float32; center and result in the input dtype
        v = torch.zeros(d, dtype=x.dtype) if self.center is None else self.center.to(x.dtype)
        dist = torch.zeros(n, dtype=torch.float64)
        for _ in range(self.iters):
            dist = distances_to(x, v)
            scale = (self.tau / dist.clamp(min=1e-300)).clamp(max=1.0)  # inf distance -> scale 0
            # v + mean_i s_i (x_i - v) = (1 - mean s) v + mean_i s_i x_i  (one weighted sum, no [n, d] temporary)
            s = scale / n
            v = (1.0 - float(s.sum())) * v + weighted_rows(s, x)
        v = check_finite_result("centered_clipping", v.to(updates.dtype))
        self.center = v.detach().clone()  # state stays finite
        info = AggregateInfo.all_accepted(n)
        info.clipped = dist > self.tau
        info.scores["distance"] = dist
        info.reasons = [f"clipped to radius {self.tau:g} around the previous aggregate" if bool(c) else ""
                        for c in info.clipped]
        info.stats["tau"] = self.tau
        return Aggregate(vector=v, info=info)
