"""The aggregation contract: stacked client updates in, one aggregate vector plus per-client info out.

``agg(updates[n, d], weights[n] | None) -> Aggregate(vector[d], info)``. ``info`` says, per
client, whether its update was accepted, clipped or flagged, with scores and reasons, so
audits can see *why* a defense did what it did. Stages are pure callables over tensors and
never mutate their input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from trustfl.errors import UpdateError

__all__ = ["Aggregate", "AggregateInfo", "Aggregator", "PostStage", "PreAggregator", "validate_updates",
           "validate_weights"]


@dataclass
class AggregateInfo:
    """Per-client decisions of a pipeline, as tensors of length ``n`` (the input rows).

    Attributes:
        accepted: row contributed to the aggregate.
        clipped: row was rescaled (e.g. norm clipping).
        flagged: row was judged suspicious (it may still be accepted, e.g. with lower weight).
        scores: named per-client scores (e.g. ``"krum_score"``, ``"norm"``).
        reasons: one human-readable reason per client ("" when nothing happened).
        stats: scalar facts about the round (e.g. the clipping threshold used).
        groups: only for a pre-aggregator that changes the number of rows (e.g. bucketing): the
            output row ``groups[i]`` that input row ``i`` went into, so a pipeline can map later
            stages' per-row info back to clients. ``None`` means rows are kept one to one.
    """

    accepted: torch.Tensor
    clipped: torch.Tensor
    flagged: torch.Tensor
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    groups: torch.Tensor | None = None

    @classmethod
    def all_accepted(cls, n: int) -> "AggregateInfo":
        return cls(accepted=torch.ones(n, dtype=torch.bool), clipped=torch.zeros(n, dtype=torch.bool),
                   flagged=torch.zeros(n, dtype=torch.bool), reasons=[""] * n)

    def merge(self, other: "AggregateInfo") -> "AggregateInfo":
        """Combine the info of two stages over the same ``n`` rows (a later stage refines an earlier)."""
        if other.accepted.shape != self.accepted.shape:
            raise ValueError(f"AggregateInfo.merge: {self.accepted.numel()} vs {other.accepted.numel()} clients")
        reasons = ["; ".join(r for r in (a, b) if r) for a, b in zip(self.reasons, other.reasons)]
        return AggregateInfo(accepted=self.accepted & other.accepted, clipped=self.clipped | other.clipped,
                             flagged=self.flagged | other.flagged, scores={**self.scores, **other.scores},
                             reasons=reasons, stats={**self.stats, **other.stats})

    def to_json(self, client_ids: list[str] | None = None) -> dict[str, Any]:
        """A JSON-able summary (for metrics.jsonl)."""
        ids = client_ids or [str(i) for i in range(self.accepted.numel())]
        return {
            "clients": {
                cid: {"accepted": bool(self.accepted[i]), "clipped": bool(self.clipped[i]),
                      "flagged": bool(self.flagged[i]), "reason": self.reasons[i] if self.reasons else "",
                      **{k: float(v[i]) for k, v in self.scores.items()}}
                for i, cid in enumerate(ids)
            },
            "stats": {k: float(v) for k, v in self.stats.items()},
        }


@dataclass
class Aggregate:
    """The result of aggregation: the vector the server applies, and what happened per client."""

    vector: torch.Tensor
    info: AggregateInfo


@runtime_checkable
class Aggregator(Protocol):
    """``(updates[n, d], weights[n] | None) -> Aggregate``. Must not mutate its input."""

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> Aggregate: ...


@runtime_checkable
class PreAggregator(Protocol):
    """``(updates, weights) -> (updates', weights', info)`` over the same ``n`` rows (e.g. clipping)."""

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, AggregateInfo]: ...


@runtime_checkable
class PostStage(Protocol):
    """``(Aggregate, n) -> Aggregate`` applied to the aggregate (e.g. Gaussian noise for DP)."""

    def __call__(self, aggregate: Aggregate, *, num_clients: int,
                 generator: torch.Generator | None = None) -> Aggregate: ...


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
