"""The client side on a Flower node: build trustfl's client from the run's config, keep it, train rounds.

A node (a simulated SuperNode in a Ray actor, or a real ``flower-supernode``'s ClientApp process)
builds, once per run config, what the local engine builds for its clients: the run's components
(dedup, data attacks, the sample-level DP hook), the FM with its adapters and prefix cache, and its
clients' tokenized data (each client's on first use). Where the data come from:

* simulation (``node_config`` has ``partition-id``): the node partitions ``config.data`` itself,
  exactly as :func:`~trustfl.federation.clients.split_data` does for the local engine, and serves
  client ``partition-id``. A Ray actor hosts many virtual SuperNodes in turn, so the build is kept
  per run config (not per partition): it holds every client's split, and each message picks its
  client by id;
* deployment (``node_config`` has ``client-id`` and ``data-file``): the node reads **its own**
  file (CSV/JSONL with columns ``text``/``label``, or as node config ``text-column``/``label-column``
  say; never the server's copy). Its held-out rows are those with ``holdout = true`` when the file
  has that column, else the node splits them with the same seed as the local engine would.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trustfl import plugins
from trustfl.config import RunConfig
from trustfl.errors import ConfigError
from trustfl.federation.assemble import assemble
from trustfl.federation.clients import FederatedClient, prepare_clients, split_data, tokenize_examples
from trustfl.federation.flower.codec import TrainTask
from trustfl.federation.flower.identity import hosted_client_ids
from trustfl.federation.setup import ModelSide, build_model_side
from trustfl.seeding import derive_seed
from trustfl.types import ClientResult, RunComponent, RunContext
from trustfl.types.distributed import DistributedDataStep, Payload

__all__ = ["NodeClients", "node_clients"]

_LOCK = threading.Lock()
_CACHE: dict[tuple[str, ...], "NodeClients"] = {}
_CLIENT_KEYS = ("partition-id", "num-partitions")  # a simulated node's client: chosen per message, not per build


@dataclass
class NodeClients:
    """One node's trustfl clients for one run config: model side, privacy hook, clients by id."""

    config: RunConfig
    side: ModelSide
    privacy: Any
    splits: dict[int, tuple[Any, Any]]
    clients: dict[int, FederatedClient] = field(default_factory=dict)

    def client(self, cid: int) -> FederatedClient:
        if cid not in self.splits:
            raise ConfigError(f"this node does not hold client {cid}'s data (it holds {sorted(self.splits)})")
        if cid not in self.clients:
            cfg = self.config
            examples = tokenize_examples(self.splits[cid][0], self.side.fm.tokenizer, max_length=cfg.model.max_length,
                                         task=cfg.model.task)
            self.clients[cid] = FederatedClient(cid, examples, self.side.trainer)
        return self.clients[cid]

    def train(self, task: TrainTask) -> tuple[ClientResult, dict[str, Any] | None]:
        """Train ``task``'s client for its round; return the result and the client's DP accountant state."""
        if task.global_vector.numel() != self.side.layout.size:
            raise ConfigError(f"client {task.client_id}: the server's adapter has {task.global_vector.numel()} "
                              f"entries, this node's model {self.side.layout.size}; node and server disagree on the "
                              "model, adapters or number of labels")
        key = str(task.client_id)
        if self.privacy is not None:  # the server keeps each client's accountant: its state replaces this node's
            self.privacy.load_state_json({key: task.privacy_state or
                                          {"noise_multiplier": None, "sample_rate": None, "history": []}}, replace=True)
        result = self.client(task.client_id).fit(task.round, task.global_vector, seed=self.config.seed)
        state = self.privacy.state_json().get(key) if self.privacy is not None else None
        return result, state


def node_clients(config_json: str, node_config: dict[str, Any], num_labels: int | None, *,
                 decisions: dict[str, Payload] | None = None) -> NodeClients:
    """The node's clients for this run config (built on first use, then kept for later rounds).

    Kept per run config, data source and decisions, not per client: in simulation one build serves
    every partition a Ray actor hosts (the caller checks the node hosts the task's client).

    ``decisions``: the server's decision of each distributed data step (e.g. dedup) for this node's
    client, applied to its own records in a deployment (:mod:`trustfl.federation.flower.data_step`).
    """
    decisions = decisions or {}
    digest = hashlib.sha256(config_json.encode()).hexdigest()
    steps = json.dumps({k: p.to_json() for k, p in sorted(decisions.items())}, sort_keys=True)
    source = {k: v for k, v in node_config.items() if k not in _CLIENT_KEYS}  # a deployment's own data file
    key = (digest, repr(num_labels), repr(sorted(source.items())), hashlib.sha256(steps.encode()).hexdigest())
    with _LOCK:
        if key not in _CACHE:
            _CACHE.clear()  # one run per process at a time: drop another config's model
            _CACHE[key] = _build(config_json, node_config, num_labels, decisions)
        return _CACHE[key]


def node_splits(config: RunConfig, node_config: dict[str, Any]) -> dict[int, tuple[Any, Any]]:
    """This node's clients' ``(train, holdout)`` before any data step: its own file (deployment), or its
    partition of ``config.data`` (simulation)."""
    ids = hosted_client_ids(node_config)
    data_file = node_config.get("data-file")
    if data_file is None:
        splits = split_data(config).splits
        return {cid: splits[cid] for cid in ids}
    return _own_file(config, ids, str(data_file), text_column=str(node_config.get("text-column", "text")),
                     label_column=str(node_config.get("label-column", "label")))


def _build(config_json: str, node_config: dict[str, Any], num_labels: int | None,
           decisions: dict[str, Payload]) -> NodeClients:
    config = RunConfig.from_dict(json.loads(config_json))
    threads = node_config.get("torch-threads")
    if isinstance(threads, int) and threads >= 1:
        torch.set_num_threads(threads)
    ids = hosted_client_ids(node_config)
    context = RunContext(config=config, seed=config.seed, num_clients=config.partition.num_clients,
                         clients_per_round=config.clients_per_round, rounds=config.federation.rounds, progress=False)
    assembled = assemble(config, config.server.build_pipeline(), plugins.build_components(config), context,
                         secure=False)
    data_file = node_config.get("data-file")
    if data_file is None:  # simulation: the same partition the local engine computes, every client's (kept per config)
        splits = prepare_clients(split_data(config).splits, assembled.components, seed=config.seed)
    else:
        splits = node_splits(config, node_config)
        for step in assembled.components:  # distributed data steps: apply the server's decision to own records
            if isinstance(step, DistributedDataStep):
                step.defer_to_nodes()  # a deployment's step: its own rules apply here too (e.g. dedup's key file)
                if step.name not in decisions:
                    raise ConfigError(f"node of client(s) {ids}: the server sent no decision of data step "
                                      f"{step.name!r}, which this run needs before training")
                splits = {cid: (step.apply(cid, tr, decisions[step.name]), ho) for cid, (tr, ho) in splits.items()}
        # any other client-side data step (data attacks on a coalition) sees every client's data at
        # once; a deployed node holds only its own
        stepping = [c.name for c in assembled.components if not isinstance(c, DistributedDataStep)
                    and type(c).prepare_clients is not RunComponent.prepare_clients]
        if stepping:
            raise ConfigError(f"node of client(s) {ids}: run component(s) {stepping} prepare all clients' data "
                              "together, which a Flower deployment (one data file per SuperNode) does not have; "
                              "run them in simulation (federation.engine = 'flower' via trustfl run) or locally")
    side = build_model_side(config, num_labels=num_labels, privacy=assembled.privacy)
    return NodeClients(config=config, side=side, privacy=assembled.privacy, splits=splits)


def _own_file(config: RunConfig, ids: list[int], data_file: str, *, text_column: str,
              label_column: str) -> dict[int, tuple[Any, Any]]:
    """Deployment: this node's own records, with the holdout split the local engine would make."""
    from trustfl.data import holdout_split, load_dataset_source

    if len(ids) != 1:
        raise ConfigError(f"node config: one client per SuperNode with a data-file, got {ids}")
    path = Path(data_file).expanduser()
    if not path.is_file():
        raise ConfigError(f"node config 'data-file': {str(path)!r} is not a file")
    ds = load_dataset_source(str(path), text_column=text_column, label_column=label_column)
    if len(ds) == 0:
        raise ConfigError(f"node config 'data-file': {str(path)!r} holds no records")
    cid = ids[0]
    if "holdout" in ds.column_names:  # the node's own choice of held-out rows (e.g. written by make_node_data.py)
        flags = ds["holdout"]
        if not all(isinstance(f, bool) for f in flags):
            raise ConfigError(f"node config 'data-file': {str(path)!r}: column 'holdout' must hold true/false")
        train = ds.select([i for i, f in enumerate(flags) if not f])
        return {cid: (train, ds.select([i for i, f in enumerate(flags) if f]))}
    return {cid: holdout_split(ds, holdout_fraction=config.data.holdout_fraction,
                               seed=derive_seed(config.seed, "holdout", cid) % 2**32)}
