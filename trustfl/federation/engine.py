"""Engines execute the client side of a round and hand the server round what it may see.

``local`` trains clients one after another in this process (deterministic). With a secure
aggregator the engine passes the server only the secure (weighted) sum; the Flower engine (a
later issue) will run the same clients as Flower ClientApps. The loop only talks to this interface.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from trustfl.federation.clients import FederatedClient
from trustfl.types import SecureAggregator, ServerView

__all__ = ["Engine", "LocalEngine"]


class Engine(Protocol):
    name: str

    def fit(self, round: int, client_ids: Sequence[int], global_vector: torch.Tensor) -> ServerView: ...


class LocalEngine:
    """In-process engine: one shared model, clients trained sequentially with a progress bar.

    Args:
        clients: ``{client_id: FederatedClient}``.
        seed: the run seed.
        secure_aggregation: when set, the server view holds only ``weighted_sum`` of the updates
            with ``sum_weights`` (the pipeline's weights for a sum, e.g. ones for unweighted FedAvg).
    """

    name = "local"

    def __init__(self, clients: dict[int, FederatedClient], *, seed: int, progress: bool = True,
                 secure_aggregation: SecureAggregator | None = None, sum_weights: Any = None) -> None:
        self.clients = clients
        self.seed = seed
        self.progress = progress
        self.secure_aggregation = secure_aggregation
        self.sum_weights = sum_weights

    @property
    def client_examples(self) -> dict[int, list[dict[str, Any]]]:
        return {cid: c.examples for cid, c in self.clients.items()}

    def fit(self, round: int, client_ids: Sequence[int], global_vector: torch.Tensor) -> ServerView:
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
