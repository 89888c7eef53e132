"""Typed run configuration, loaded from TOML or YAML and validated at load.

Every section is a dataclass; unknown keys are rejected (with the valid ones listed) and a
bad value is reported with its dotted field path and the rule it breaks, e.g.
``ConfigError: federation.rounds: must be >= 1, got 0``. ``RunConfig.to_dict()`` is what
goes into the run manifest, and loading that dict again gives the same config.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from trustfl.errors import ConfigError
from trustfl.models.lora import LoraSettings
from trustfl.defenses.dp.settings import PrivacySettings

__all__ = ["AttackSettings", "ClientSettings", "DataSettings", "DedupSettings", "FederationSettings", "ModelSettings",
           "PartitionSettings", "RunConfig", "ServerSettings", "from_dict", "load_config", "parse_override",
           "read_config_file"]


def _check(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: {msg}")


@dataclass
class ModelSettings:
    """Which FM, for which task, at which maximum sequence length, with which classifier pooling.

    ``pooling = "mean"`` classifies from the masked mean of the last hidden states (how sentence
    encoders like MiniLM were trained) instead of the [CLS] pooler; see trustfl.models.pooling.
    """

    name: str = "minilm"
    task: Literal["classification", "causal_lm"] = "classification"
    max_length: int = 64
    pooling: Literal["default", "mean"] = "default"

    def __post_init__(self) -> None:
        _check(self.max_length >= 8, "model.max_length", f"must be >= 8, got {self.max_length}")
        _check(self.pooling == "default" or self.task == "classification", "model.pooling",
               f"'mean' applies to task = 'classification' only, not {self.task!r}")


@dataclass
class DataSettings:
    """Where records come from: a built-in offline corpus, a CSV/JSONL path or a HF dataset name."""

    name: str = "sms_spam"
    text_column: str = "text"
    label_column: str = "label"
    test_fraction: float = 0.2
    holdout_fraction: float = 0.1
    max_records: int | None = None

    def __post_init__(self) -> None:
        _check(0 < self.test_fraction < 1, "data.test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        _check(0 <= self.holdout_fraction < 1, "data.holdout_fraction",
               f"must be in [0, 1), got {self.holdout_fraction}")
        _check(self.max_records is None or self.max_records >= 10, "data.max_records",
               f"must be >= 10 or unset, got {self.max_records}")


@dataclass
class PartitionSettings:
    """How training records are split over clients.

    ``dirichlet``: label skew (Hsu et al. 2019), ``alpha`` defaults to 0.5; ``iid``; ``key``:
    one client per value of ``key_column`` (e.g. tweet ``account``). ``alpha`` is accepted
    only with ``dirichlet`` and ``key_column`` only with ``key``, so nothing is silently ignored.
    """

    scheme: Literal["iid", "dirichlet", "key"] = "dirichlet"
    num_clients: int = 8
    alpha: float | None = None
    key_column: str | None = None

    def __post_init__(self) -> None:
        _check(self.num_clients >= 1, "partition.num_clients", f"must be >= 1, got {self.num_clients}")
        if self.scheme == "dirichlet" and self.alpha is None:
            self.alpha = 0.5
        _check(self.alpha is None or self.scheme == "dirichlet", "partition.alpha",
               f"only applies to scheme = 'dirichlet', not {self.scheme!r}; remove it")
        _check(self.alpha is None or self.alpha > 0, "partition.alpha", f"must be > 0, got {self.alpha}")
        _check(self.scheme != "key" or bool(self.key_column), "partition.key_column",
               "is required when scheme = 'key' (e.g. 'account')")
        _check(self.key_column is None or self.scheme == "key", "partition.key_column",
               f"only applies to scheme = 'key', not {self.scheme!r}; remove it")


@dataclass
class ClientSettings:
    """Local training of each sampled client over the adapter + head parameters.

    ``optimizer``: ``adamw`` (default) or ``sgd`` (with ``momentum``). Under DP-SGD, SGD often
    beats Adam at small budgets: Adam divides each coordinate by its own noise-dominated second
    moment, so pure-noise coordinates still move ~lr per step. ``head_lr`` gives the task head
    (PEFT's ``modules_to_save``, e.g. the classifier) its own learning rate; unset = ``lr``. A
    fresh head wants far larger steps than the adapters, which under DP-SGD drift by lr x noise.
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.0
    head_lr: float | None = None

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "client.epochs", f"must be >= 1, got {self.epochs}")
        _check(self.max_steps is None or self.max_steps >= 1, "client.max_steps",
               f"must be >= 1 or unset, got {self.max_steps}")
        _check(self.batch_size >= 1, "client.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(0 < self.lr <= 10, "client.lr", f"must be in (0, 10], got {self.lr}")
        _check(self.weight_decay >= 0, "client.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.max_grad_norm is None or self.max_grad_norm > 0, "client.max_grad_norm",
               f"must be > 0 or unset, got {self.max_grad_norm}")
        _check(0 <= self.momentum < 1, "client.momentum", f"must be in [0, 1), got {self.momentum}")
        _check(self.head_lr is None or 0 < self.head_lr <= 10, "client.head_lr",
               f"must be in (0, 10] or unset, got {self.head_lr}")
        _check(self.momentum == 0 or self.optimizer == "sgd", "client.momentum",
               f"only applies to optimizer = 'sgd', not {self.optimizer!r}; remove it")


@dataclass
class ServerSettings:
    """Server side: the aggregation pipeline by registry names, and the server learning rate.

    ``pre`` and ``post`` are lists of tables ``{name = "...", <options>}``; e.g.
    ``pre = [{name = "norm_clip", max_norm = 1.0}]``. Valid names: ``trustfl.defenses.available_stages``.
    """

    aggregator: str = "fedavg"
    aggregator_options: dict[str, Any] = field(default_factory=dict)
    pre: list[dict[str, Any]] = field(default_factory=list)
    post: list[dict[str, Any]] = field(default_factory=list)
    server_lr: float = 1.0

    def __post_init__(self) -> None:
        _check(self.server_lr > 0, "server.server_lr", f"must be > 0, got {self.server_lr}")
        from trustfl.defenses import build_pipeline

        try:  # build once at load so a bad name or option is reported with its field
            build_pipeline(aggregator=self.aggregator, aggregator_options=self.aggregator_options, pre=self.pre,
                           post=self.post)
        except ValueError as exc:
            raise ConfigError(f"server: {exc}") from exc

    def build_pipeline(self) -> Any:
        from trustfl.defenses import build_pipeline

        return build_pipeline(aggregator=self.aggregator, aggregator_options=self.aggregator_options, pre=self.pre,
                              post=self.post)


@dataclass
class FederationSettings:
    """Rounds, client sampling, engine and what the run directory keeps."""

    rounds: int = 3
    clients_per_round: int | None = None
    fraction: float | None = None
    engine: Literal["local"] = "local"
    save_client_updates: bool = True
    eval_every: int = 1

    def __post_init__(self) -> None:
        _check(self.rounds >= 1, "federation.rounds", f"must be >= 1, got {self.rounds}")
        _check(self.clients_per_round is None or self.clients_per_round >= 1, "federation.clients_per_round",
               f"must be >= 1 or unset, got {self.clients_per_round}")
        _check(self.fraction is None or 0 < self.fraction <= 1, "federation.fraction",
               f"must be in (0, 1] or unset, got {self.fraction}")
        _check(self.fraction is None or self.clients_per_round is None, "federation",
               "set either clients_per_round or fraction, not both")
        _check(self.eval_every >= 1, "federation.eval_every", f"must be >= 1, got {self.eval_every}")


@dataclass
class AttackSettings:
    """Who attacks and how (robustness evaluations).

    ``data`` and ``update`` are ``{name = "...", <options>}`` tables naming a registered attack
    (``trustfl.attacks.available_attacks("data" | "update")``). Attackers are the client ids in
    ``attackers``, or ``round(fraction * num_clients)`` clients drawn with the run seed.
    """

    data: dict[str, Any] | None = None
    update: dict[str, Any] | None = None
    attackers: list[int] | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        _check(self.attackers is None or self.fraction is None, "attack", "set attackers or fraction, not both")
        _check(self.fraction is None or 0 < self.fraction < 1, "attack.fraction",
               f"must be in (0, 1), got {self.fraction}")
        active = self.data is not None or self.update is not None
        _check(not active or self.attackers is not None or self.fraction is not None, "attack",
               "an attack is configured but no attackers: set attack.attackers or attack.fraction")
        from trustfl.attacks import make_attack

        for kind in ("data", "update"):
            spec = getattr(self, kind)
            if spec is not None:
                try:
                    make_attack(kind, spec)  # type: ignore[arg-type]
                except ValueError as exc:
                    raise ConfigError(f"attack.{kind}: {exc}") from exc

    @property
    def active(self) -> bool:
        return self.data is not None or self.update is not None


@dataclass
class DedupSettings:
    """Near-duplicate removal over the clients' training records before training (docs/dedup.md).

    Runs after the per-client holdout split and before data attacks; in every duplicate cluster
    (within or across clients) one record is kept (smallest client id, then index) and the rest
    dropped. ``methods``: ``exact`` (keyed HMAC), ``lexical`` (keyed MinHash over ``ngram``
    character/word shingles), ``semantic`` (SimHash of MiniLM embeddings; loads the FM).
    ``key_file``: the key shared by clients (created if missing); unset, the key is derived
    from the run seed so a run is reproducible (a simulation: the seed is not secret).
    """

    enabled: bool = False
    methods: list[str] = field(default_factory=lambda: ["exact", "lexical"])
    jaccard_threshold: float = 0.7
    semantic_threshold: float = 0.9
    num_perm: int = 128
    shingle: Literal["char", "word"] = "char"
    ngram: int = 5
    simhash_bits: int = 256
    confirm: bool = True
    confirm_margin: float = 0.1
    key_file: str | None = None

    def __post_init__(self) -> None:
        valid = ["exact", "lexical", "semantic"]
        bad = [m for m in self.methods if m not in valid]
        _check(not bad and bool(self.methods), "dedup.methods",
               f"must be a non-empty subset of {valid}, got {self.methods}")
        _check(len(set(self.methods)) == len(self.methods), "dedup.methods", f"has repeated entries: {self.methods}")
        _check(0 < self.jaccard_threshold <= 1, "dedup.jaccard_threshold",
               f"must be in (0, 1], got {self.jaccard_threshold}")
        _check(-1 < self.semantic_threshold <= 1, "dedup.semantic_threshold",
               f"must be in (-1, 1], got {self.semantic_threshold}")
        _check(self.num_perm >= 8, "dedup.num_perm", f"must be >= 8, got {self.num_perm}")
        _check(self.ngram >= 1, "dedup.ngram", f"must be >= 1, got {self.ngram}")
        _check(self.simhash_bits >= 8 and self.simhash_bits % 8 == 0, "dedup.simhash_bits",
               f"must be a positive multiple of 8, got {self.simhash_bits}")
        _check(0 <= self.confirm_margin < 1, "dedup.confirm_margin", f"must be in [0, 1), got {self.confirm_margin}")


@dataclass
class RunConfig:
    """A whole federated run. ``seed`` drives every random choice (same config + seed = same run)."""

    seed: int = 0
    name: str = "run"
    model: ModelSettings = field(default_factory=ModelSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    partition: PartitionSettings = field(default_factory=PartitionSettings)
    client: ClientSettings = field(default_factory=ClientSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    federation: FederationSettings = field(default_factory=FederationSettings)
    attack: AttackSettings = field(default_factory=AttackSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    dedup: DedupSettings = field(default_factory=DedupSettings)

    def __post_init__(self) -> None:
        fed, part = self.federation, self.partition
        if self.privacy.client is not None:
            srv = self.server
            _check(srv.aggregator == "fedavg" and srv.aggregator_options.get("weighted") is False,
                   "server.aggregator_options.weighted",
                   f"client-level DP (privacy.client) needs aggregator = 'fedavg' with weighted = false (equal "
                   f"weights bound one client's influence by C/m), got aggregator={srv.aggregator!r}, "
                   f"aggregator_options={srv.aggregator_options}")
            dp_stages = [s.get("name") for s in [*srv.pre, *srv.post] if str(s.get("name", "")).startswith("dp_")]
            _check(not dp_stages, "server.pre/server.post",
                   f"privacy.client adds the dp_clip / dp_fedavg stages itself; remove {dp_stages}")
        bad = [a for a in self.attack.attackers or [] if not 0 <= a < part.num_clients]
        _check(not bad, "attack.attackers", f"ids {bad} out of range [0, {part.num_clients - 1}]")
        if fed.clients_per_round is not None:
            _check(fed.clients_per_round <= part.num_clients, "federation.clients_per_round",
                   f"{fed.clients_per_round} exceeds partition.num_clients = {part.num_clients}")

    @property
    def clients_per_round(self) -> int:
        """How many clients each round samples (at least one)."""
        if self.federation.clients_per_round is not None:
            return self.federation.clients_per_round
        if self.federation.fraction is not None:
            return max(1, round(self.federation.fraction * self.partition.num_clients))
        return self.partition.num_clients

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        return from_dict(cls, data)


# ---------------------------------------------------------------------- generic loading
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the type hint ``tp`` (recursing into dataclasses and lists)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            _check(type(None) in args, path, "must not be empty/None")
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # `X | None`: keep X's own error (with its nested field path)
            return _coerce(options[0], value, path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 1)[-1])
        raise ConfigError(f"{path}: {' or '.join(errors)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        _check(value in choices, path, f"must be one of {list(choices)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), path, f"must be a table/section, got {type(value).__name__}")
        return from_dict(tp, value, path)
    if origin is list:
        _check(isinstance(value, list), path, f"must be a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _check(isinstance(value, dict), path, f"must be a table, got {value!r}")
        return dict(value)
    if tp is bool:
        _check(isinstance(value, bool), path, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), path, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), path,
               f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), path, f"must be a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and ill-typed values."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = path or "config"
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {names}")
    kwargs = {k: _coerce(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from exc


def parse_override(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` (a ``--set`` argument) -> ``(key, value)``; the value is parsed as JSON when it can be."""
    import argparse
    import json

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE (e.g. federation.rounds=2), got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def read_config_file(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The raw tables of a ``.toml`` or ``.yaml``/``.yml`` config file, with dotted-key ``overrides`` applied.

    Raises:
        ConfigError: missing or unparsable file, wrong suffix, top level not a table.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {str(p)!r}: expected a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config file {str(p)!r} is not valid {p.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r}: top level must be a table/mapping")
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a :class:`RunConfig` from a ``.toml`` or ``.yaml``/``.yml`` file.

    ``overrides`` maps dotted keys (``"federation.rounds"``) to values applied before validation.
    """
    return RunConfig.from_dict(read_config_file(path, overrides))
