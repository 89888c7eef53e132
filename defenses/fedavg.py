"""FedAvg: the (weighted) mean of client updates.

McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized
Data" (AISTATS), Algorithm 1: the server update is the sample-count-weighted average of
client updates. Not Byzantine-robust: one unbounded update moves the mean arbitrarily.
The weights are the sample counts clients *report about themselves*, i.e. untrusted;
pass ``weighted=False`` (or cap counts upstream) when clients may lie.
"""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

import torch

from trustfl.defenses._robust import check_finite_updates
from trustfl.defenses.base import Aggregate, AggregateInfo, validate_weights
from trustfl.errors import UpdateError
from trustfl.types import AggregatorStage

__all__ = ["FedAvg"]


class FedAvg(AggregatorStage):
    """Weighted mean of ``updates[n, d]``; linear, so it also runs under secure aggregation.

    Args:
        weighted: weight clients by their (self-reported, untrusted) sample counts; ``False`` gives
            every client weight 1, also on a secure sum (:meth:`sum_weights`).

    Rows with NaN/Inf raise (a :class:`~trustfl.defenses.Pipeline` rejects them per client first);
    a mean that overflows (rows near the float32 maximum) raises instead of returning ``inf``.

    Example:
        >>> FedAvg()(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1.0, 3.0])).vector
        tensor([2.5000, 3.5000])
    """

    requires_individual_updates: ClassVar[bool] = False  # a weighted sum is all it needs
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = False
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, weighted: bool = True) -> None:
        if not isinstance(weighted, bool):
            raise ValueError(f"FedAvg: weighted must be true or false, got {weighted!r}")
        self.weighted = weighted

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None, client_ids: Sequence[int] | None = None) -> Aggregate:
        n, _ = check_finite_updates("fedavg", updates)
        w = self.sum_weights(weights, n)
        x = updates if updates.dtype in (torch.float32, torch.float64) else updates.float()  # half: float32 math
        w = (w / w.sum()).to(x.dtype)
        vector = (w @ x).to(updates.dtype)  # one GEMV, no copy of the [n, d] input; returned in the input dtype
        _check_finite_mean(vector)
        info = AggregateInfo.all_accepted(n)
        info.scores["weight"] = w.detach().clone()
        return Aggregate(vector=vector, info=info)

    def sum_weights(self, weights: torch.Tensor | None, n: int) -> torch.Tensor:
        """Float64 ``[n]``: the given weights (validated; ones when None) if ``weighted``, else ones."""
        return validate_weights(weights if self.weighted else None, n)

    def from_sum(self, total: torch.Tensor, weight_sum: float, *, num_clients: int) -> Aggregate:
        """The mean from a (secure) sum ``sum_i w_i x_i`` and ``sum_i w_i`` over ``num_clients`` clients.

        With ``weighted=False`` every client weighs ``1/num_clients`` (reported as the ``weight`` score,
        which client-level DP noise needs); with ``weighted=True`` individual weights stay hidden.
        """
        if not isinstance(total, torch.Tensor) or total.ndim != 1 or not total.is_floating_point():
            raise UpdateError(f"fedavg: the secure sum must be a 1-D float tensor, got "
                              f"{getattr(total, 'shape', type(total).__name__)}")
        if num_clients < 1:
            raise UpdateError(f"fedavg: num_clients must be >= 1, got {num_clients}")
        ws = float(weight_sum)
        if not (ws > 0 and math.isfinite(ws)):
            raise UpdateError(f"fedavg: the weight sum must be finite and > 0, got {weight_sum!r}")
        if not self.weighted and abs(ws - num_clients) > 1e-6 * num_clients:
            raise UpdateError(f"fedavg(weighted=False): the secure sum was weighted (weight sum {ws}) but every "
                              f"one of the {num_clients} clients must weigh 1; sum with Pipeline.sum_weights")
        if not bool(torch.isfinite(total).all()):
            raise UpdateError("fedavg: the secure sum contains NaN/Inf (a client sent a non-finite or huge update; "
                              "a secure sum cannot reject it per client)")
        vector = total / ws
        _check_finite_mean(vector)
        info = AggregateInfo.all_accepted(num_clients)
        if not self.weighted:
            info.scores["weight"] = torch.full((num_clients,), 1.0 / num_clients, dtype=total.dtype)
        return Aggregate(vector=vector, info=info)


def _check_finite_mean(vector: torch.Tensor) -> None:
    if not bool(torch.isfinite(vector).all()):
        raise UpdateError("fedavg: the weighted mean overflowed to Inf/NaN (updates near the float maximum); FedAvg "
                          "is not robust: clip norms first (NormClip) or use a robust aggregator")
