"""Run components: features that need the loop's help, plugged in without a branch in the loop.

Differential privacy (both levels, with their accountants), dedup, data and update attacks and
FLTrust's root data are run components; so will secure aggregation and unlearning be. A component
is built from its config section by the factory its plug-in registered, and the loop calls its
hooks at fixed points of a run. Every hook has an explicit no-op default here, in one place, so the
loop never probes a component with ``getattr``. All resume state goes through
:meth:`RunComponent.state_dict`, which the loop stores in the run directory's one commit per round.

Order of the hooks in a run::

    setup(context)                     once, before the data are prepared
    prepare_clients(splits, context)   client side: rewrite each client's (train, holdout) datasets
    client_privacy()                   client side: the privacy hook every client's training uses
    configure_pipeline(pipeline)       server side: add stages (e.g. DP clipping and noise)
    secure_aggregator()                the secure aggregation it supplies, if any (e.g. MPC)
    eval_sets(test)                    extra evaluation sets (e.g. backdoor success)
    manifest()                         facts for the run manifest
    load_state_dict(state)             on resume, the state of the last complete round
    per round: check_budget(round)  -> transform_updates(...)  -> before_aggregate(...)
               -> after_round(report) (metrics; may raise StopFederation) -> state_dict()
               (a round that sampled no client, e.g. under Poisson sampling: check_budget(round)
               -> empty_round(...) -> after_round(report) -> state_dict())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import torch

from trustfl.types.values import Aggregate, ClientResult, RoundReport

__all__ = ["ClientDataContext", "PipelineLike", "RunComponent", "RunContext", "SecureAggregator", "SecureRound",
           "SecureSum", "ServerView", "TrustedSum"]


@dataclass
class RunContext:
    """What a component may know about the run when it is set up."""

    config: Any  # trustfl.config.RunConfig
    seed: int
    num_clients: int
    clients_per_round: int
    rounds: int
    progress: bool = True


@dataclass
class ClientDataContext:
    """What a component sees of the clients' data: ``{client_id: (train, holdout)}`` datasets."""

    splits: dict[int, tuple[Any, Any]]
    seed: int


@dataclass
class ServerView:
    """What the server round sees of a round's clients: plaintext results, or only a secure sum.

    With secure aggregation, ``results`` is empty and ``secure_sum``/``secure_weight`` hold the
    (weighted) sum of the updates and the weight sum; ``client_ids`` and ``num_samples`` are the
    metadata that the protocol reveals; ``revealed`` holds facts revealed with the sum (e.g.
    ``{"dp_clip_norm": C}`` when clients clipped before summing), for the post-stages.
    """

    client_ids: list[int]
    results: list[ClientResult]
    secure_sum: torch.Tensor | None = None
    secure_weight: float | None = None
    revealed: dict[str, float] = field(default_factory=dict)

    @property
    def secure(self) -> bool:
        return self.secure_sum is not None


@runtime_checkable
class PipelineLike(Protocol):
    """What the server round needs of an aggregation pipeline (``trustfl.defenses.Pipeline``)."""

    requires_individual_updates: bool

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None, client_ids: Sequence[int] | None = None) -> Aggregate: ...

    def check_tolerance(self, n: int, f: int) -> None: ...

    def sum_weights(self, weights: torch.Tensor | None, n: int) -> torch.Tensor: ...

    def aggregate_sum(self, total: torch.Tensor, weight_sum: float, *, num_clients: int,
                      generator: torch.Generator | None = None, client_ids: Sequence[int] | None = None,
                      stats: dict[str, float] | None = None) -> Aggregate: ...

    def get_config(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


@dataclass
class SecureSum:
    """What a secure aggregation round reveals: the (weighted, possibly clipped and noised) sum only.

    ``total`` is None when no client's shares arrived complete; ``client_ids`` are the clients in the
    sum, ``dropped`` the sampled ones left out; ``anomalous`` the clients whose revealed anomaly bit is
    set (None when not computed); ``revealed`` facts for the post-stages (e.g. the norm bound).
    """

    total: torch.Tensor | None
    weight_sum: float
    client_ids: list[int]
    dropped: list[int] = field(default_factory=list)
    anomalous: list[int] | None = None
    revealed: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class SecureRound(Protocol):
    """One round of secure aggregation: each client ``submit``s (client side), then ``finish`` reveals the sum."""

    def submit(self, client_id: int, update: torch.Tensor, weight: float = 1.0) -> None: ...

    def finish(self) -> SecureSum: ...


@runtime_checkable
class SecureAggregator(Protocol):
    """Secure aggregation: per round, clients hand in their updates as shares and only the sum is revealed.

    ``open_round`` is called by the engine before the round's clients train; each client's update
    goes to :meth:`SecureRound.submit` as soon as it exists, and the server view gets only
    :meth:`SecureRound.finish`'s :class:`SecureSum` (``trustfl.defenses.secure_aggregation``).
    """

    def open_round(self, round: int, client_ids: Sequence[int], *, dim: int,
                   global_vector: torch.Tensor | None = None) -> SecureRound: ...


@runtime_checkable
class TrustedSum(Protocol):
    """A secure-sum hook computed by a trusted party that sees every row (tests, trusted deployments):
    return ``sum_i weights[i] * updates[i]`` and ``sum_i weights[i]``. Not secure aggregation by MPC."""

    def weighted_sum(self, updates: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, float]: ...


class RunComponent:
    """Base of every run component; override only the hooks the feature needs.

    ``name`` keys the component's state and manifest entry (unique in a run).
    ``malicious_clients`` (ground truth for detection metrics) is non-empty for attacks only.
    """

    name: ClassVar[str] = "component"

    # ------------------------------------------------------------------ set-up
    def setup(self, context: RunContext) -> None:
        """Called once before the data are prepared."""

    def prepare_clients(self, data: ClientDataContext) -> dict[int, tuple[Any, Any]]:
        """Client side: return the (possibly rewritten) ``{client_id: (train, holdout)}``."""
        return data.splits

    def client_privacy(self) -> Any:
        """The client-side privacy hook (a ``ClientPrivacyHook``) this component supplies, or None."""
        return None

    def configure_pipeline(self, pipeline: Any) -> Any:
        """Server side: return the pipeline to use (e.g. with DP stages added)."""
        return pipeline

    def secure_aggregator(self) -> "SecureAggregator | None":
        """The secure aggregation this component supplies (the engine then hands the server only sums), or None."""
        return None

    def eval_sets(self, test: Any) -> dict[str, tuple[Any, int]]:
        """Extra evaluation sets ``{metric_name: (records, target_label)}``; accuracy on each is reported."""
        return {}

    def malicious_clients(self) -> list[int]:
        """Client ids this component makes malicious (ground truth for detection metrics)."""
        return []

    def update_attackers(self) -> list[int]:
        """Client ids whose updates :meth:`transform_updates` rewrites."""
        return []

    def manifest(self) -> dict[str, Any]:
        """JSON facts for the run manifest's ``extra`` (settings, summaries), written when the run is created."""
        return {}

    def manifest_update(self) -> dict[str, Any]:
        """Facts to merge into the manifest's ``extra`` with each round's commit (e.g. ε so far)."""
        return {}

    # ------------------------------------------------------------------ per round
    def check_budget(self, round: int) -> None:
        """Before round ``round`` trains: raise ``StopFederation`` if it must not run (e.g. DP budget)."""

    def transform_updates(self, round: int, updates: torch.Tensor, client_ids: list[int], *,
                          global_vector: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Server side, evaluation runs only: rewrite rows of the stacked updates (update attacks)."""
        return updates

    def before_aggregate(self, round: int, global_vector: torch.Tensor, pipeline: Any) -> None:
        """Just before aggregation (e.g. FLTrust's server update from the current global vector)."""

    def empty_round(self, round: int, global_vector: torch.Tensor, *, generator: torch.Generator) -> Aggregate | None:
        """Server side, a round that sampled no client (``federation.sampling = "poisson"``): the aggregate
        to apply instead of the pipeline's (which needs at least one client), or None.

        Client-level DP answers with its noise alone: an empty round is still a release and still spends
        privacy. The first component that returns an aggregate decides; with none, the global stays.
        """
        return None

    def after_round(self, report: RoundReport) -> dict[str, Any]:
        """After aggregation, before the commit: metrics to add; may raise ``StopFederation``."""
        return {}

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """JSON state to commit with the round (resume restores it)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"run component {self.name!r} keeps no state, got {sorted(state)[:4]}")
