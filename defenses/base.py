"""The aggregation contract: stacked client updates in, one aggregate vector plus per-client info out.

``agg(updates[n, d], weights[n] | None) -> Aggregate(vector[d], info)``. ``info`` says, per
client, whether its update was accepted, clipped or flagged, with scores and reasons, so
audits can see *why* a defense did what it did. Stages never mutate their input.

``Aggregator``, ``PreAggregator`` and ``PostStage`` are the base classes
:class:`trustfl.types.AggregatorStage`, :class:`~trustfl.types.PreStage` and
:class:`~trustfl.types.PostStageBase`: subclass them and declare capabilities as class attributes.
"""

from __future__ import annotations

import torch

from trustfl.errors import UpdateError
from trustfl.types import (Aggregate, AggregateInfo, AggregatorStage, PostStageBase,  # the bottom layer
                           PreStage)

__all__ = ["Aggregate", "AggregateInfo", "Aggregator", "PostStage", "PreAggregator", "validate_updates",
           "validate_weights"]


# The stage contracts are the base classes of the bottom layer (capabilities declared, never probed);
# these names are kept so ``from trustfl.defenses import Aggregator`` keeps working.
Aggregator = AggregatorStage
PreAggregator = PreStage
PostStage = PostStageBase


def validate_updates(updates: torch.Tensor, *, dim: int | None = None) -> torch.Tensor:
    """Check a stacked ``[n, d]`` float tensor; return a boolean mask of rows that are all finite.

    Raises:
        UpdateError: not a 2-D floating tensor, no rows, or width != ``dim``.
    """
    if not isinstance(updates, torch.Tensor):
        raise UpdateError(f"updates: expected a torch.Tensor of shape [n, d], got {type(updates).__name__}")
    if updates.ndim != 2 or updates.shape[0] == 0:
        raise UpdateError(f"updates: expected shape [n, d] with n >= 1, got {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise UpdateError(f"updates: expected a floating dtype, got {updates.dtype}")
    if dim is not None and updates.shape[1] != dim:
        raise UpdateError(f"updates: expected d={dim} columns, got {updates.shape[1]}")
    # fast path, one pass like a mean: a row whose sum is finite has only finite entries; rows whose
    # sum is not finite (NaN/Inf, or huge finite values that overflow) are checked exactly
    finite = torch.isfinite(updates.sum(dim=1))
    if not bool(finite.all()):
        suspect = (~finite).nonzero().flatten()
        finite[suspect] = torch.isfinite(updates[suspect]).all(dim=1)
    return finite


def validate_weights(weights: torch.Tensor | None, n: int) -> torch.Tensor:
    """Return float64 weights of length ``n`` (ones when ``None``); reject negative/non-finite/all-zero."""
    if weights is None:
        return torch.ones(n, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if w.numel() != n:
        raise UpdateError(f"weights: expected {n} entries (one per update), got {w.numel()}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise UpdateError(f"weights: must be finite and >= 0, got {w.tolist()[:8]}")
    if w.sum() <= 0:
        raise UpdateError("weights: at least one weight must be > 0")
    return w
