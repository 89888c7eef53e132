"""The client side of a federation: what each client does with its own data, behind one interface.

:func:`split_data` produces each client's ``(train, holdout)`` from the configured source (in a
simulation the server process does it; on Flower each SuperNode loads its own file instead).
:func:`prepare_clients` then runs, per client, what its run components ask for (dedup
participation, data attacks) and tokenizes; :class:`FederatedClient` trains a round from the
global vector. The local engine calls these in-process; a Flower ClientApp will call the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from trustfl.errors import ConfigError
from trustfl.federation.client import Example, LocalTrainer, to_examples
from trustfl.seeding import derive_seed
from trustfl.types import ClientDataContext, ClientResult, RunComponent

__all__ = ["FederatedClient", "SplitData", "prepare_clients", "split_data", "tokenize_examples"]


@dataclass
class SplitData:
    """The source dataset, the server's test split and each client's ``(train, holdout)``."""

    dataset: Any
    train: Any
    test: Any
    splits: dict[int, tuple[Any, Any]] = field(default_factory=dict)


def split_data(config: Any) -> SplitData:
    """Load ``config.data``, hold out the test set, partition over clients, split each client's holdout."""
    import datasets

    from trustfl.data import holdout_split, load_dataset_source, partition_dataset, train_test_split_dataset

    cfg, seed = config, config.seed
    datasets.disable_progress_bars()  # one "tokenizing clients" bar instead of a bar per map
    ds = load_dataset_source(cfg.data.name, text_column=cfg.data.text_column, label_column=cfg.data.label_column)
    ds = ds.add_column("row_id", list(range(len(ds))))
    if cfg.data.max_records is not None and cfg.data.max_records < len(ds):
        ds = ds.shuffle(seed=derive_seed(seed, "subsample") % 2**32).select(range(cfg.data.max_records))
    train, test = train_test_split_dataset(ds, test_fraction=cfg.data.test_fraction,
                                           seed=derive_seed(seed, "test") % 2**32)
    parts = partition_dataset(train, scheme=cfg.partition.scheme, num_clients=cfg.partition.num_clients,
                              seed=derive_seed(seed, "partition") % 2**32, alpha=cfg.partition.alpha,
                              key_column=cfg.partition.key_column)
    if len(parts) != cfg.partition.num_clients:
        raise ConfigError(f"partition: produced {len(parts)} clients, config says num_clients = "
                          f"{cfg.partition.num_clients}")
    splits = {cid: holdout_split(part, holdout_fraction=cfg.data.holdout_fraction,
                                 seed=derive_seed(seed, "holdout", cid) % 2**32) for cid, part in enumerate(parts)}
    return SplitData(dataset=ds, train=train, test=test, splits=splits)


def prepare_clients(splits: dict[int, tuple[Any, Any]], components: Sequence[RunComponent], *,
                    seed: int) -> dict[int, tuple[Any, Any]]:
    """Each component's client-side data step, in order (dedup before data attacks, as registered)."""
    for component in components:
        splits = component.prepare_clients(ClientDataContext(splits=dict(splits), seed=seed))
    return splits


def tokenize_examples(dataset: Any, tokenizer: Any, *, max_length: int, task: str) -> list[Example]:
    from trustfl.data import tokenize_dataset

    return to_examples(tokenize_dataset(dataset, tokenizer, max_length=max_length, task=task))


class FederatedClient:
    """One client: its id and tokenized training examples; trains a round through the shared trainer."""

    def __init__(self, client_id: int, examples: list[Example], trainer: LocalTrainer) -> None:
        if not examples:
            raise ConfigError(f"partition: client {client_id} has no training records after the holdout split and "
                              "the data steps; use fewer clients or a smaller data.holdout_fraction")
        self.client_id, self.examples, self.trainer = client_id, examples, trainer

    def fit(self, round: int, global_vector: torch.Tensor, *, seed: int) -> ClientResult:
        self.examples = self.trainer.attach_prefix(self.examples)  # cached prefix kept for later rounds
        return self.trainer.train(self.client_id, self.examples, global_vector, round=round, seed=seed)


def build_clients(train: dict[int, Any], trainer: LocalTrainer, tokenizer: Any, *, max_length: int, task: str,
                  progress: bool) -> dict[int, FederatedClient]:
    bar = tqdm(train.items(), desc="tokenizing clients", disable=not progress, leave=False)
    return {cid: FederatedClient(cid, tokenize_examples(d, tokenizer, max_length=max_length, task=task), trainer)
            for cid, d in bar}
