"""Value types that travel between the loop, engines, stages, attacks and audits.

This module imports nothing of trustfl (it is the bottom layer; ``import-linter`` checks it), so
every layer can name these types without pulling in the loop or any plug-in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Aggregate", "AggregateInfo", "AttackContext", "ClientResult", "PrivacyContext", "RoundReport"]


@dataclass
class ClientResult:
    """What a client sends back: its update ``delta`` (flat float32, layout order), its *claimed*
    sample count and self-reported metrics. Both are untrusted: a client can say anything about itself."""

    client_id: int
    delta: torch.Tensor
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class AttackContext:
    """What an update attack may know in round ``round``."""

    round: int
    attacker_ids: list[int]
    global_vector: torch.Tensor
    benign_updates: torch.Tensor | None  # [m, d]; None unless the attack declares omniscient = True
    generator: torch.Generator


@dataclass
class PrivacyContext:
    """Which client trains in which round, for a client-side privacy hook."""

    client_id: int
    round: int
    num_samples: int
    seed: int
    planned_steps: int | None = None  # local optimizer steps the trainer will take this round


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


@dataclass
class RoundReport:
    """Everything about a finished round that a run component or callback may inspect."""

    round: int
    global_vector: torch.Tensor
    client_ids: list[int]
    aggregate: Aggregate
    metrics: dict[str, Any]
