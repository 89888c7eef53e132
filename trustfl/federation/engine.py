"""Engines execute the client side of a round. ``local`` trains clients one after another in
this process (deterministic); the Flower engine (a later issue) runs the same clients as
Flower ClientApps. The federated loop only talks to this interface."""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from tqdm.auto import tqdm

from trustfl.federation.client import Example, LocalTrainer
from trustfl.federation.hooks import ClientResult

__all__ = ["Engine", "LocalEngine"]


class Engine(Protocol):
    def fit(self, round: int, client_ids: Sequence[int], global_vector: torch.Tensor) -> list[ClientResult]: ...


class LocalEngine:
    """In-process engine: one shared model, clients trained sequentially with a progress bar."""

    name = "local"

    def __init__(self, trainer: LocalTrainer, client_examples: dict[int, list[Example]], *, seed: int,
                 progress: bool = True) -> None:
        self.trainer = trainer
        self.client_examples = client_examples
        self.seed = seed
        self.progress = progress

    def fit(self, round: int, client_ids: Sequence[int], global_vector: torch.Tensor) -> list[ClientResult]:
        results = []
        bar = tqdm(client_ids, desc=f"round {round} clients", unit="client", leave=False,
                   disable=not self.progress)
        for cid in bar:
            examples = self.trainer.attach_prefix(self.client_examples[cid])
            self.client_examples[cid] = examples  # cached prefix kept for later rounds
            result = self.trainer.train(cid, examples, global_vector, round=round, seed=self.seed)
            bar.set_postfix(client=cid, loss=f"{result.metrics['train_loss']:.3f}")
            results.append(result)
        return results
