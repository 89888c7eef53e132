"""The plug-in points of the federated loop, by name (the definitions live in :mod:`trustfl.types`).

* :class:`DataAttack` (``trustfl.types.DataAttackStage``) rewrites a client's training records.
* :class:`UpdateAttack` (``UpdateAttackStage``) rewrites the attackers' updates of a round,
  vectorized over all attackers; an ``omniscient`` one also sees the round's benign updates.
* :class:`ClientPrivacy` (``ClientPrivacyHook``) wraps local training (e.g. Opacus DP-SGD).
* :class:`SecureAggregator` replaces the server's view of individual updates by a secure sum.
* :class:`RoundCallback` sees every finished round; it may add metrics or stop the run cleanly
  by raising :class:`~trustfl.errors.StopFederation`.
* :class:`~trustfl.types.RunComponent`: a feature that needs several of these at once.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from trustfl.types import (AttackContext, ClientPrivacyHook, ClientResult, DataAttackStage, PrivacyContext,
                           RoundReport, RunComponent, SecureAggregator, UpdateAttackStage)

__all__ = ["AttackContext", "ClientPrivacy", "ClientResult", "DataAttack", "PrivacyContext", "RoundCallback",
           "RoundReport", "RunComponent", "SecureAggregator", "UpdateAttack"]

DataAttack = DataAttackStage
UpdateAttack = UpdateAttackStage
ClientPrivacy = ClientPrivacyHook


@runtime_checkable
class RoundCallback(Protocol):
    """Called after each round, before it is written; returned items are merged into the metrics."""

    def __call__(self, report: RoundReport) -> dict[str, Any] | None: ...
