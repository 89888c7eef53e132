"""FedAvg: the (weighted) mean of client updates.

McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized
Data" (AISTATS), Algorithm 1: the server update is the sample-count-weighted average of
client updates. Not Byzantine-robust: one unbounded update moves the mean arbitrarily.
The weights are the sample counts clients *report about themselves*, i.e. untrusted;
pass ``weighted=False`` (or cap counts upstream) when clients may lie.
"""

from __future__ import annotations

import torch

from trustfl.defenses.base import Aggregate, AggregateInfo, validate_updates, validate_weights

__all__ = ["FedAvg"]


class FedAvg:
    """Weighted mean of ``updates[n, d]``; linear, so it also runs under secure aggregation.

    Example:
        >>> FedAvg()(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1.0, 3.0])).vector
        tensor([2.5000, 3.5000])
    """

    requires_individual_updates = False  # a weighted sum is all it needs

    def __init__(self, *, weighted: bool = True) -> None:
        self.weighted = weighted

    def __repr__(self) -> str:
        return f"FedAvg(weighted={self.weighted})"

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> Aggregate:
        validate_updates(updates)
        n = updates.shape[0]
        w = validate_weights(weights if self.weighted else None, n)
        w = (w / w.sum()).to(updates.dtype)
        vector = w @ updates  # one GEMV, no copy of the [n, d] input
        info = AggregateInfo.all_accepted(n)
        info.scores["weight"] = w.detach().clone()
        return Aggregate(vector=vector, info=info)
