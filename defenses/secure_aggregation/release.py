"""Post-stage: the DP-FedAvg release of a sum whose clipping and noise happened inside MPC.

The compute parties return ``sum_i clip_B(x_i) + N(0, >= z^2 B^2)`` (:mod:`~.aggregator`), so the
server adds no noise; it releases the fixed-denominator estimate of McMahan et al. 2018 (f~_f with
w_k = 1, Poisson sampling of clients at rate q): the sum over the expected count qN. FedAvg
(weighted=False) hands it the mean over the m clients in the sum, which is turned back into the sum.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from trustfl.types import Aggregate, AggregateInfo, PostStageBase

__all__ = ["SecureDPRelease"]


class SecureDPRelease(PostStageBase):
    """``mean * m / (qN)``, recording the clip norm and noise the parties applied (no noise added here).

    Args:
        expected_clients: qN > 0.
        norm_bound: B the parties clipped to.
        noise_multiplier: z of the noise the parties' sum carries (std z B at least).
    """

    requires_individual_updates: ClassVar[bool] = False
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = False
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, expected_clients: float, norm_bound: float, noise_multiplier: float) -> None:
        if not expected_clients > 0:
            raise ValueError(f"expected_clients: must be > 0, got {expected_clients}")
        self.expected_clients = float(expected_clients)
        self.norm_bound = float(norm_bound)
        self.noise_multiplier = float(noise_multiplier)

    def __call__(self, aggregate: Aggregate, *, num_clients: int, generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        weight = aggregate.info.scores.get("weight")
        if weight is None or not torch.allclose(weight.double(), torch.full_like(weight.double(), 1.0 / num_clients)):
            raise ValueError("secure DP release: needs FedAvg(weighted=False) (every client weighs 1/m)")
        scores = dict(aggregate.info.scores)
        scores["weight"] = torch.full((num_clients,), 1.0 / self.expected_clients, dtype=torch.float64)
        stats = {**aggregate.info.stats, "dp_clip_norm": self.norm_bound, "dp_denominator": self.expected_clients,
                 "dp_noise_std": self.noise_multiplier * self.norm_bound / self.expected_clients,
                 "dp_update_noise_multiplier": self.noise_multiplier, "dp_noise_in_mpc": 1.0}
        info = AggregateInfo(accepted=aggregate.info.accepted, clipped=aggregate.info.clipped,
                             flagged=aggregate.info.flagged, scores=scores, reasons=list(aggregate.info.reasons),
                             stats=stats)
        vector = aggregate.vector.double() * (num_clients / self.expected_clients)
        return Aggregate(vector=vector.to(aggregate.vector.dtype), info=info)

    def empty_round(self, d: int, *, dtype: torch.dtype, generator: torch.Generator | None) -> Aggregate:
        """A round that sampled no client: N(0, z^2 B^2) / (qN), drawn by the server (nothing private in it)."""
        std = self.noise_multiplier * self.norm_bound / self.expected_clients
        info = AggregateInfo.all_accepted(0)
        info.stats = {"dp_clip_norm": self.norm_bound, "dp_denominator": self.expected_clients, "dp_noise_std": std}
        noise = torch.randn(d, generator=generator, dtype=torch.float64) * std
        return Aggregate(vector=noise.to(dtype), info=info)
