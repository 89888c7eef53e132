"""The plug-in points of the federated loop, designed once so later features only fill them.

* :class:`DataAttack` rewrites a client's training records before training (label flips,
  backdoor triggers).
* :class:`UpdateAttack` rewrites the attackers' updates of a round, vectorized over all
  attackers at once so they can collude; an *omniscient* attack also sees the round's
  benign updates (ALIE, IPM, min-max, min-sum).
* :class:`ClientPrivacy` wraps local training (e.g. Opacus sample-level DP) and reports its
  privacy spend.
* :class:`SecureAggregator` replaces the server's view of individual updates by a secure
  (weighted) sum; only pipelines that need nothing but a sum can run under it.
* :class:`RoundCallback` sees every finished round; it may add metrics or stop the run
  cleanly by raising :class:`~trustfl.errors.StopFederation`.
The server pipeline itself (pre-aggregators, aggregator, post-stages) is
:class:`trustfl.defenses.Pipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["AttackContext", "ClientPrivacy", "ClientResult", "DataAttack", "PrivacyContext", "RoundCallback",
           "RoundReport", "SecureAggregator", "UpdateAttack"]


@dataclass
class ClientResult:
    """What a client sends back: its update ``delta`` (flat, layout order), its *claimed* sample
    count (untrusted) and self-reported metrics (untrusted)."""

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
    benign_updates: torch.Tensor | None  # [m, d]; None unless the attack is omniscient
    generator: torch.Generator


@runtime_checkable
class DataAttack(Protocol):
    """Rewrite one client's training records (a ``datasets.Dataset`` with ``text``/``label``)."""

    def __call__(self, dataset: Any, *, client_id: int, seed: int) -> Any: ...


@runtime_checkable
class UpdateAttack(Protocol):
    """Rewrite the attackers' honest updates ``[k, d]`` into malicious ones ``[k, d]``."""

    omniscient: bool

    def __call__(self, updates: torch.Tensor, *, context: AttackContext) -> torch.Tensor: ...


@dataclass
class PrivacyContext:
    client_id: int
    round: int
    num_samples: int
    seed: int
    planned_steps: int | None = None  # local optimizer steps the trainer will take this round


@runtime_checkable
class ClientPrivacy(Protocol):
    """Make one client's local training private and account for it.

    ``prepare`` receives the model, optimizer and data loader and returns the versions to
    train with (e.g. Opacus-wrapped; the trainer runs forward through the returned model,
    whose parameters must be the model's own); ``finish`` runs after training and returns
    metrics such as the client's ε so far and must undo any wrapping (hooks) of the model.
    Optionally a hook defines ``loss(logits, batch, *, client_id) -> loss`` (a tensor or an
    object with ``backward()`` and ``detach()``, e.g. Opacus's ghost-clipping loss); the
    trainer then computes the loss through it instead of the model's internal loss.
    """

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any, *,
                context: PrivacyContext) -> tuple[nn.Module, torch.optim.Optimizer, Any]: ...

    def finish(self, *, context: PrivacyContext) -> dict[str, float]: ...


@runtime_checkable
class SecureAggregator(Protocol):
    """Return ``sum_i weights[i] * updates[i]`` and ``sum_i weights[i]`` without revealing any row."""

    def weighted_sum(self, updates: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, float]: ...


@dataclass
class RoundReport:
    """Everything about a finished round that a callback may inspect."""

    round: int
    global_vector: torch.Tensor
    client_ids: list[int]
    aggregate: Any  # trustfl.defenses.Aggregate
    metrics: dict[str, Any]


@runtime_checkable
class RoundCallback(Protocol):
    """Called after each round, before it is written; returned items are merged into the metrics."""

    def __call__(self, report: RoundReport) -> dict[str, Any] | None: ...
