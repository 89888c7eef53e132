"""The one plug-in point of the loop that is not a stage or a run component: a round callback.

Stages, attacks, privacy hooks and run components are defined in :mod:`trustfl.types`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from trustfl.types import RoundReport

__all__ = ["RoundCallback"]


@runtime_checkable
class RoundCallback(Protocol):
    """Called after each round, before it is written; returned items are merged into the metrics.

    It may stop the run cleanly by raising :class:`~trustfl.errors.StopFederation`.
    """

    def __call__(self, report: RoundReport) -> dict[str, Any] | None: ...
