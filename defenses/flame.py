"""FLAME: cluster out poisoned updates, clip at the median norm, add Gaussian noise.

Nguyen et al. 2022, "FLAME: Taming Backdoors in Federated Learning" (USENIX Security),
Section 4 and Algorithm 1:

1. pairwise cosine distances ``c_ij = 1 - cos(W_i, W_j)``; HDBSCAN with
   ``min_cluster_size = floor(n/2) + 1``, ``min_samples = 1``, single cluster allowed; the models in
   the (only possible) majority cluster are admitted, the outliers rejected;
2. adaptive clipping: ``S_t = median_i ||W_i - G_t||`` over all ``n`` clients, admitted updates are
   scaled by ``min(1, S_t / ||W_i - G_t||)``;
3. the mean of the clipped admitted updates plus ``N(0, (lambda * S_t)^2 I)`` noise.

trustfl works on updates ``W_i - G_t``, so cosines are between updates (as the public
re-implementations do) rather than between full models. Clustering uses scikit-learn's
``HDBSCAN(metric="precomputed")`` on the ``n x n`` distances from one GEMM.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from trustfl.defenses._robust import (check_finite_updates, check_int, check_positive, finite_result,
                                      generator_or_seeded, gram_matrix, median_value, require_tolerance, row_norms,
                                      weighted_rows, working)
from trustfl.defenses.base import Aggregate, AggregateInfo
from trustfl.types import AggregatorStage

__all__ = ["FLAME", "flame_cluster"]


def flame_cluster(updates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Admitted mask ``[n]`` (the majority HDBSCAN cluster on cosine distances) and the distances ``[n, n]``."""
    from sklearn.cluster import HDBSCAN

    n = updates.shape[0]
    gram = gram_matrix(updates)
    norms = row_norms(updates)
    denom = torch.outer(norms, norms)
    cos = torch.where(denom > 0, gram / denom.clamp(min=1e-300), torch.zeros_like(gram)).clamp(-1.0, 1.0)
    dist = (1.0 - cos).clamp(min=0.0)
    dist.fill_diagonal_(0.0)
    dist = 0.5 * (dist + dist.T)
    if n < 3:  # HDBSCAN needs more than min_cluster_size points to form a cluster; with n <= 2 admit all
        return torch.ones(n, dtype=torch.bool), dist
    labels = HDBSCAN(min_cluster_size=n // 2 + 1, min_samples=1, allow_single_cluster=True, copy=True,
                     metric="precomputed").fit_predict(dist.numpy())
    labels = torch.as_tensor(labels)
    clustered = labels[labels >= 0]
    if clustered.numel() == 0:
        return torch.zeros(n, dtype=torch.bool), dist
    majority = int(torch.bincount(clustered).argmax())
    return labels == majority, dist


class FLAME(AggregatorStage):
    """FLAME (Nguyen et al. 2022, Algorithm 1).

    Args:
        noise_lambda: noise level ``lambda``; the noise std is ``lambda * S_t`` (0 disables noise).
        seed: seeds the noise when no ``generator`` is passed (the loop passes one per round).

    Tolerance: ``2f < n`` (the admitted cluster must be a majority). Client weights are untrusted
    and ignored. When HDBSCAN finds no cluster, nothing is admitted and the update is 0 (plus noise).
    ``info.scores``: ``"norm"`` (``||W_i - G_t||``), ``"cosine_distance"`` (median distance to the others).

    Example:
        >>> u = torch.cat([torch.ones(5, 4) + 0.01 * torch.arange(20.0).reshape(5, 4), -torch.ones(2, 4)])
        >>> FLAME(noise_lambda=0.0)(u).info.accepted.tolist()
        [True, True, True, True, True, False, False]
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, noise_lambda: float = 0.001, seed: int = 0) -> None:
        self.noise_lambda = check_positive("FLAME", "noise_lambda", noise_lambda, allow_zero=True)
        self.seed = check_int("FLAME", "seed", seed)

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("flame", n, f, 2 * f < n, "2f < n (the admitted cluster holds more than n/2 clients)")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        n, d = check_finite_updates("flame", updates)
        admitted, dist = flame_cluster(updates)
        norms = row_norms(updates)
        s_t = median_value(norms)
        gamma = (s_t / norms.clamp(min=1e-300)).clamp(max=1.0)
        k = int(admitted.sum())
        coef = torch.where(admitted, gamma, torch.zeros_like(gamma)) / max(k, 1)
        x = working(updates)  # float16/bfloat16 -> float32; the result is returned in the input dtype
        vector = weighted_rows(coef, x) if k > 0 else torch.zeros(d, dtype=x.dtype)
        sigma = self.noise_lambda * s_t
        if sigma > 0:
            gen = generator_or_seeded(generator, self.seed)
            vector = vector + sigma * torch.randn(d, generator=gen, dtype=x.dtype)
        info = AggregateInfo.all_accepted(n)
        info.accepted = admitted
        info.flagged = ~admitted
        info.clipped = admitted & (norms > s_t)
        info.scores["norm"] = norms
        others = dist + torch.diag(torch.full((n,), float("nan"), dtype=dist.dtype))
        info.scores["cosine_distance"] = others.nanmedian(dim=1).values if n > 1 else torch.zeros(n, dtype=dist.dtype)
        info.reasons = [("clipped to the median norm" if bool(c) else "") if bool(a)
                        else "rejected: outside the majority HDBSCAN cluster (cosine)"
                        for a, c in zip(admitted, info.clipped)]
        info.stats.update(clip_norm=s_t, noise_std=sigma, admitted=float(k))
        return Aggregate(vector=finite_result("flame", vector, updates.dtype), info=info)
