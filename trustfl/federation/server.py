"""The server side of a round, one object shared by every engine (local now, Flower later).

Input: what the server may see of the round's clients (:class:`~trustfl.types.ServerView`):
their plaintext results, or under secure aggregation only the secure sum, the weight sum and
the revealed metadata (client ids). Output: the aggregate, the new global vector and the
round's server metrics. The pipeline's post-stages (e.g. DP noise) always run; under secure
aggregation the server never holds an individual update and records none of their norms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from trustfl.errors import ConfigError, UpdateError
from trustfl.models.layout import ParamLayout
from trustfl.seeding import generator
from trustfl.types import Aggregate, AggregateInfo, PipelineLike, RunComponent, ServerView

__all__ = ["RoundOutcome", "ServerRound", "detection_counts"]


def detection_counts(info: AggregateInfo, is_attacker: Sequence[bool]) -> dict[str, int]:
    """Confusion counts of "the defense caught this client" (flagged or not accepted) vs attacker truth."""
    caught = (info.flagged | ~info.accepted).tolist()
    pairs = list(zip(caught, is_attacker))
    return {"tp": sum(c and a for c, a in pairs), "fp": sum(c and not a for c, a in pairs),
            "fn": sum(a and not c for c, a in pairs), "tn": sum(not c and not a for c, a in pairs)}


@dataclass
class RoundOutcome:
    """What the server round produced: the aggregate, the new global, metrics, and what to store."""

    aggregate: Aggregate
    global_vector: torch.Tensor
    metrics: dict[str, Any]
    client_updates: dict[int, tuple[torch.Tensor, int]] | None  # None under secure aggregation or when off


class ServerRound:
    """Aggregate one round: update attacks (evaluation runs), the pipeline, the global step, metrics.

    Args:
        pipeline: pre-stages + aggregator + post-stages (``trustfl.defenses.Pipeline``).
        components: the run's components (their ``transform_updates`` / ``before_aggregate`` hooks).
        layout: the adapter's :class:`ParamLayout` (checks every vector).
        seed: run seed (the server's randomness is derived from it per round).
        server_lr: ``global += server_lr * aggregate``.
        malicious: ground-truth attackers, for detection metrics and the tolerance check.
        save_client_updates: return the (possibly attacked) updates for the run directory.
    """

    def __init__(self, *, pipeline: PipelineLike, components: Sequence[RunComponent], layout: ParamLayout, seed: int,
                 server_lr: float = 1.0, malicious: Sequence[int] = (), save_client_updates: bool = True) -> None:
        self.pipeline = pipeline
        self.components = list(components)
        self.layout = layout
        self.seed = seed
        self.server_lr = float(server_lr)
        self.malicious = set(int(c) for c in malicious)
        self.save_client_updates = save_client_updates

    def run(self, round: int, view: ServerView, global_vector: torch.Tensor) -> RoundOutcome:
        ids = list(view.client_ids)
        if not ids:
            if view.results or view.secure:
                raise UpdateError(f"round {round}: client results without client ids")
            return self._empty(round, global_vector)
        self.pipeline.check_tolerance(len(ids), sum(1 for c in ids if c in self.malicious))
        gen = generator(self.seed, "server", round)
        for component in self.components:
            component.before_aggregate(round, global_vector, self.pipeline)
        metrics: dict[str, Any] = {}
        stored = None
        if view.secure:
            aggregate = self._secure(round, view, gen)
        else:
            updates = _stack(view, self.layout.size)
            for component in self.components:
                updates = component.transform_updates(round, updates, ids, global_vector=global_vector,
                                                      generator=generator(self.seed, "update_attack", round))
            weights = torch.tensor([float(r.num_samples) for r in view.results], dtype=torch.float64)
            aggregate = self.pipeline(updates, weights, generator=gen, client_ids=ids)
            n_total = sum(r.num_samples for r in view.results)
            metrics["train_loss"] = sum(r.metrics.get("train_loss", 0.0) * r.num_samples
                                        for r in view.results) / max(1, n_total)
            metrics["client_metrics"] = {str(r.client_id): r.metrics for r in view.results}
            metrics["update_norms"] = {str(c): float(v) for c, v in zip(ids, updates.norm(dim=1))}
            if self.save_client_updates:
                stored = {c: (updates[i], view.results[i].num_samples) for i, c in enumerate(ids)}
        new_global = global_vector + self.server_lr * aggregate.vector.to(torch.float32)
        self.layout.check_vector(new_global, what=f"round {round} global adapter")
        metrics["aggregation"] = aggregate.info.to_json([str(c) for c in ids])
        metrics["detection"] = detection_counts(aggregate.info, [c in self.malicious for c in ids])
        return RoundOutcome(aggregate=aggregate, global_vector=new_global, metrics=metrics, client_updates=stored)

    def _empty(self, round: int, global_vector: torch.Tensor) -> RoundOutcome:
        """A round that sampled no client (Poisson sampling): a component's aggregate (e.g. DP noise), else none."""
        gen = generator(self.seed, "server", round)
        aggregate = next((a for a in (c.empty_round(round, global_vector, generator=gen) for c in self.components)
                          if a is not None), None)
        if aggregate is None:
            aggregate = Aggregate(torch.zeros_like(global_vector), AggregateInfo.all_accepted(0))
        new_global = global_vector + self.server_lr * aggregate.vector.to(torch.float32)
        self.layout.check_vector(new_global, what=f"round {round} global adapter")
        metrics = {"aggregation": aggregate.info.to_json([]), "detection": detection_counts(aggregate.info, []),
                   "client_metrics": {}, "update_norms": {}}
        return RoundOutcome(aggregate=aggregate, global_vector=new_global, metrics=metrics,
                            client_updates={} if self.save_client_updates else None)

    def _secure(self, round: int, view: ServerView, gen: torch.Generator) -> Aggregate:
        if self.pipeline.requires_individual_updates:
            raise ConfigError(f"secure aggregation: the pipeline {self.pipeline!r} needs individual updates, which "
                              "secure aggregation hides; use a sum-only pipeline (FedAvg [+ noise])")
        assert view.secure_sum is not None and view.secure_weight is not None
        total = view.secure_sum
        if total.ndim != 1 or total.numel() != self.layout.size or not bool(torch.isfinite(total).all()):
            raise UpdateError(f"round {round}: the secure sum must be a finite vector of {self.layout.size} "
                              f"entries, got shape {tuple(total.shape)}")
        if not float(view.secure_weight) > 0:
            raise UpdateError(f"round {round}: the secure weight sum must be > 0, got {view.secure_weight}")
        return self.pipeline.aggregate_sum(total, float(view.secure_weight), num_clients=len(view.client_ids),
                                           generator=gen, client_ids=view.client_ids, stats=view.revealed or None)


def _stack(view: ServerView, d: int) -> torch.Tensor:
    """The round's updates as ``[n, d]`` float32, after checking every row's shape (values are the pipeline's job)."""
    if [r.client_id for r in view.results] != list(view.client_ids):
        raise UpdateError("server round: results and client_ids disagree")
    for r in view.results:
        if not isinstance(r.delta, torch.Tensor) or r.delta.ndim != 1 or r.delta.numel() != d:
            shape = tuple(r.delta.shape) if isinstance(r.delta, torch.Tensor) else type(r.delta).__name__
            raise UpdateError(f"client {r.client_id}: update has shape {shape}, expected ({d},)")
        if isinstance(r.num_samples, bool) or not isinstance(r.num_samples, int) or r.num_samples < 0:
            raise UpdateError(f"client {r.client_id}: reported num_samples must be an int >= 0, got {r.num_samples!r}")
    return torch.stack([r.delta.to(torch.float32) for r in view.results])
