"""Engines execute the client side of a round and hand the server round what it may see.

``local`` trains clients one after another in this process (deterministic). With a secure
aggregator the engine passes the server only the secure (weighted) sum; the ``flower`` engine
(:mod:`trustfl.federation.flower`) runs the same clients as Flower ClientApps. The loop only talks
to this interface, and :func:`build_engine` picks the engine ``federation.engine`` names.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from trustfl.federation.clients import FederatedClient
from trustfl.errors import ConfigError
from trustfl.types import RoundReport, RunComponent, SecureAggregator, ServerView, TrustedSum

__all__ = ["Engine", "LocalEngine", "SecureSumHook", "build_engine", "secure_for"]

SecureSumHook = SecureAggregator | TrustedSum


def secure_for(given: SecureSumHook | None, components: Sequence[Any]) -> SecureSumHook | None:
    """The run's secure aggregation: the one passed in code, else the one a component supplies (at most one)."""
    supplied = [s for s in (c.secure_aggregator() for c in components if isinstance(c, RunComponent)) if s is not None]
    if len(supplied) + (given is not None) > 1:
        raise ConfigError("secure_aggregation: given more than once (in code and by a component or config section)")
    return given if given is not None else next(iter(supplied), None)


class Engine(Protocol):
    name: str

    def fit(self, round: int, client_ids: Sequence[int], global_vector: torch.Tensor) -> ServerView: ...

    def after_round(self, report: RoundReport) -> dict[str, Any]:
        """The engine's facts about the round for its metrics (e.g. clients dropped by a crash)."""
        ...


def build_engine(config: Any, local: "LocalEngine", *, privacy: Any = None, num_labels: int | None = None,
                 progress: bool = True) -> Engine:
    """The engine ``config.federation.engine`` names: ``local`` (as given) or ``flower``.

    The Flower engine also needs the run's ``privacy`` hook (the server keeps each client's DP
    accountant), ``num_labels`` (the nodes build the same classification head) and ``progress``.
    """
    if config.federation.engine == "local":
        return local
    if local.secure_aggregation is not None:
        raise ConfigError("federation.engine = 'flower': trustfl's MPC secure aggregation runs on the local engine "
                          "only; use engine = 'local' for it")
    from trustfl.federation.flower.engine import flower_engine

    return flower_engine(config, privacy=privacy, num_labels=num_labels, progress=progress)


class LocalEngine:
    """In-process engine: one shared model, clients trained sequentially with a progress bar.

    Args:
        clients: ``{client_id: FederatedClient}``.
        seed: the run seed.
        secure_aggregation: a :class:`~trustfl.types.SecureAggregator` (MPC: each client submits its update
            as shares, the server view holds only the revealed sum), or a :class:`~trustfl.types.TrustedSum`
            (a trusted in-process ``weighted_sum``); both weigh clients by ``sum_weights`` (the pipeline's
            weights for a sum, e.g. ones for unweighted FedAvg).
    """

    name = "local"

    def __init__(self, clients: dict[int, FederatedClient], *, seed: int, progress: bool = True,
                 secure_aggregation: SecureAggregator | TrustedSum | None = None, sum_weights: Any = None) -> None:
        self.clients = clients
        self.seed = seed
        self.progress = progress
        self.secure_aggregation = secure_aggregation
        self.sum_weights = sum_weights

    @property
    def client_examples(self) -> dict[int, list[dict[str, Any]]]:
        return {cid: c.examples for cid, c in self.clients.items()}

    def after_round(self, report: RoundReport) -> dict[str, Any]:
        return {}

    def fit(self, round: int, client_ids: Sequence[int], global_vector: torch.Tensor) -> ServerView:
        if isinstance(self.secure_aggregation, SecureAggregator):
            return self._fit_secure(self.secure_aggregation, round, client_ids, global_vector)
        results = []
        bar = tqdm(client_ids, desc=f"round {round} clients", unit="client", leave=False, disable=not self.progress)
        for cid in bar:
            result = self.clients[cid].fit(round, global_vector, seed=self.seed)
            bar.set_postfix(client=cid, loss=f"{result.metrics['train_loss']:.3f}")
            results.append(result)
        ids = [r.client_id for r in results]
        if self.secure_aggregation is None:
            return ServerView(client_ids=ids, results=results)
        claimed = torch.tensor([float(r.num_samples) for r in results], dtype=torch.float64)
        weights = self.sum_weights(claimed, len(results)) if self.sum_weights is not None else claimed
        total, wsum = self.secure_aggregation.weighted_sum(torch.stack([r.delta for r in results]), weights)
        return ServerView(client_ids=ids, results=[], secure_sum=total, secure_weight=float(wsum))

    def _fit_secure(self, secure: SecureAggregator, round: int, client_ids: Sequence[int],
                    global_vector: torch.Tensor) -> ServerView:
        """Each client hands its update to the secure round as shares right after training; nothing of
        it is kept here, and the server view gets only the revealed sum of the clients whose shares arrived."""
        session = secure.open_round(round, client_ids, dim=global_vector.numel(), global_vector=global_vector)
        bar = tqdm(client_ids, desc=f"round {round} clients (secure)", unit="client", leave=False,
                   disable=not self.progress)
        for cid in bar:
            result = self.clients[cid].fit(round, global_vector, seed=self.seed)
            claimed = torch.tensor([float(result.num_samples)], dtype=torch.float64)
            weight = float((self.sum_weights(claimed, 1) if self.sum_weights is not None else claimed)[0])
            session.submit(cid, result.delta, weight)
            del result  # the plaintext update leaves the client only as shares
        out = session.finish()
        if out.total is None:  # no client's shares arrived: an empty round
            return ServerView(client_ids=[], results=[])
        return ServerView(client_ids=list(out.client_ids), results=[], secure_sum=out.total.to(torch.float32),
                          secure_weight=float(out.weight_sum), revealed=dict(out.revealed))
