"""Typed run configuration, loaded from TOML or YAML and validated at load.

Every section is a dataclass; unknown keys are rejected (with the valid ones listed) and a
bad value is reported with its dotted field path and the rule it breaks, e.g.
``ConfigError: federation.rounds: must be >= 1, got 0``. ``RunConfig.to_dict()`` is what
goes into the run manifest, and loading that dict again gives the same config.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from trustfl import plugins
from trustfl.errors import ConfigError
from trustfl.models.lora import LoraSettings

__all__ = ["ClientSettings", "DataSettings", "FederationSettings", "FlowerSettings", "ModelSettings",
           "PartitionSettings", "RunConfig", "ServerSettings", "check", "from_dict", "load_config", "parse_override",
           "read_config_file"]


def check(cond: bool, path: str, msg: str) -> None:
    """Raise ``ConfigError("<path>: <msg>")`` unless ``cond`` (the one way a config field is rejected)."""
    if not cond:
        raise ConfigError(f"{path}: {msg}")


_check = check


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
        for key in ("pre", "post"):
            for k, spec in enumerate(getattr(self, key)):
                _check(isinstance(spec.get("name"), str), f"server.{key}[{k}]",
                       f"each stage needs a 'name' string, got {spec}")

    def build_pipeline(self) -> Any:
        """The pipeline these names describe (built by the defenses plug-in's registered builder)."""
        return plugins.build_pipeline(self)


@dataclass
class FlowerSettings:
    """``[federation.flower]``: how the ``flower`` engine runs (docs/flower.md).

    ``client_cpus``: CPUs Ray reserves per simulated ClientApp (1.0 on a 2-core machine runs two
    clients at a time); ``round_timeout``: seconds the server waits for a round's replies (a client
    that has not replied by then is dropped from the round); ``connect_timeout``: seconds to wait for
    the nodes that host the sampled clients to connect; ``min_clients``: fewest replies a round
    accepts (fewer stops the run with a clear error; the pipeline's own Byzantine tolerance is
    checked on the clients that replied as well). ``secure_aggregation = "secaggplus"``: Flower's SecAgg+
    with Flower's parameters ``num_shares``, ``reconstruction_threshold``, ``clipping_range`` (entries of
    each weighted update are clipped to it), ``quantization_range`` and ``max_weight`` (the largest
    per-client weight; None: 1 for unweighted aggregation, else 1000).
    """

    client_cpus: float = 1.0
    round_timeout: float = 600.0
    connect_timeout: float = 120.0
    min_clients: int = 1
    # "secaggplus": Flower's SecAgg+ (Bell et al. 2020) sums the updates; the server sees only the aggregate
    # (trustfl.federation.flower.secaggplus, docs/flower.md). Its parameters keep Flower's names and meaning.
    secure_aggregation: Literal["none", "secaggplus"] = "none"
    num_shares: int | float = 1.0
    reconstruction_threshold: int | float = 0.5
    clipping_range: float = 8.0
    quantization_range: int = 4194304
    max_weight: float | None = None  # None: 1 for unweighted aggregation (w_i = 1), else 1000 (Flower's default)

    def __post_init__(self) -> None:
        p = "federation.flower."
        if isinstance(self.num_shares, int):
            _check(self.num_shares == 1 or self.num_shares > 2, p + "num_shares",
                   f"an integer must be > 2 (or a float in (0, 1]: a fraction of the round's clients), got "
                   f"{self.num_shares}")
        else:
            _check(0 < self.num_shares <= 1, p + "num_shares",
                   f"a float is a fraction of the round's clients and must be in (0, 1], got {self.num_shares}")
        if isinstance(self.reconstruction_threshold, int):
            _check(self.reconstruction_threshold >= 1, p + "reconstruction_threshold",
                   f"must be >= 1, got {self.reconstruction_threshold}")
            _check(not isinstance(self.num_shares, int) or self.num_shares == 1
                   or self.reconstruction_threshold < self.num_shares, p + "reconstruction_threshold",
                   f"must be < num_shares = {self.num_shares}, got {self.reconstruction_threshold}")
        else:
            _check(0 < self.reconstruction_threshold <= 1, p + "reconstruction_threshold",
                   f"a float is a fraction of num_shares and must be in (0, 1], got {self.reconstruction_threshold}")
        _check(self.clipping_range > 0, p + "clipping_range", f"must be > 0, got {self.clipping_range}")
        _check(1 < self.quantization_range < 2**32, p + "quantization_range",
               f"must be in (1, 2**32) (Flower's modulus_range is 2**32), got {self.quantization_range}")
        _check(self.max_weight is None or self.max_weight > 0, p + "max_weight", f"must be > 0, got {self.max_weight}")
        _check(self.client_cpus > 0, "federation.flower.client_cpus", f"must be > 0, got {self.client_cpus}")
        _check(self.round_timeout > 0, "federation.flower.round_timeout", f"must be > 0, got {self.round_timeout}")
        _check(self.connect_timeout > 0, "federation.flower.connect_timeout",
               f"must be > 0, got {self.connect_timeout}")
        _check(self.min_clients >= 1, "federation.flower.min_clients", f"must be >= 1, got {self.min_clients}")


@dataclass
class FederationSettings:
    """Rounds, client sampling, engine and what the run directory keeps."""

    rounds: int = 3
    clients_per_round: int | None = None
    fraction: float | None = None
    # "local": in-process (deterministic); "flower": Flower's Message API (simulation on Ray, or under `flwr run`)
    engine: Literal["local", "flower"] = "local"
    flower: FlowerSettings = field(default_factory=FlowerSettings)
    # "fixed": exactly clients_per_round clients, uniformly without replacement; "poisson": each client
    # independently with probability clients_per_round / num_clients (what client-level DP accounts for)
    sampling: Literal["fixed", "poisson"] = "fixed"
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
        _check(self.flower.secure_aggregation == "none" or self.engine == "flower",
               "federation.flower.secure_aggregation", f"{self.flower.secure_aggregation!r} runs on engine = 'flower', "
               f"got engine = {self.engine!r} (trustfl's own MPC secure aggregation is [secure_aggregation])")
        # a Poisson round may sample 0, 1 or more than clients_per_round clients: SecAgg+ cannot sum one client
        # and its modulus is checked for clients_per_round; the round is redrawn identically on resume
        _check(self.sampling == "fixed" or self.flower.secure_aggregation == "none", "federation.sampling",
               f"{self.sampling!r} with federation.flower.secure_aggregation = {self.flower.secure_aggregation!r} "
               "is refused: a Poisson round can sample fewer than the 2 clients SecAgg+ needs (or more than "
               "clients_per_round), and a resumed run redraws the same round; use sampling = 'fixed'")


_NAME_RE = re.compile(r"[\w-][\w.-]{0,127}")  # file-name safe: no '/', no '..' escape from runs/
_CORE_SECTIONS = ("seed", "name", "model", "lora", "data", "partition", "client", "server", "federation")


@dataclass
class RunConfig:
    """A whole federated run. ``seed`` drives every random choice (same config + seed = same run).

    Core sections are fields; plug-in sections (``[attack]``, ``[privacy]``, ``[dedup]``, ...)
    are registered by their plug-ins (:mod:`trustfl.plugins`) and live in ``sections``, read as
    attributes (``config.privacy``). After the sections are built, every plug-in's cross-section
    check runs (e.g. client-level DP needs unweighted FedAvg).
    """

    seed: int = 0
    name: str = "run"
    model: ModelSettings = field(default_factory=ModelSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    partition: PartitionSettings = field(default_factory=PartitionSettings)
    client: ClientSettings = field(default_factory=ClientSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    federation: FederationSettings = field(default_factory=FederationSettings)
    sections: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and bool(_NAME_RE.fullmatch(self.name)) and self.name not in (".", ".."),
               "name", "must be a simple file name (1-128 letters, digits, '.', '_' or '-', not starting with '.'; "
               f"it names the run directory runs/<name>), got {self.name!r}")
        registered = plugins.sections()
        unknown = sorted(set(self.sections) - set(registered))
        _check(not unknown, "config", f"unknown section(s) {unknown}; plug-in sections: {sorted(registered)}")
        for name, section in registered.items():
            value = self.sections.get(name)
            if value is None:
                self.sections[name] = section.settings()
            elif isinstance(value, dict):
                self.sections[name] = from_dict(section.settings, value, name)
            elif not isinstance(value, section.settings):
                raise ConfigError(f"{name}: expected a table or {section.settings.__name__}, got {type(value).__name__}")
        fed, part = self.federation, self.partition
        if fed.clients_per_round is not None:
            _check(fed.clients_per_round <= part.num_clients, "federation.clients_per_round",
                   f"{fed.clients_per_round} exceeds partition.num_clients = {part.num_clients}")
        if fed.flower.secure_aggregation == "secaggplus":
            k, q = self.clients_per_round, fed.flower.quantization_range
            _check(k >= 2, "federation.clients_per_round", f"SecAgg+ sums at least 2 clients' updates (one client's "
                   f"sum is its update), got {k}")
            _check(k * q < 2**32, "federation.flower.quantization_range", f"{k} clients x {q} overflows SecAgg+'s "
                   f"modulus 2**32; lower it below {2**32 // k}")
        for validate in plugins.validators():
            validate(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "sections":
            raise AttributeError(name)
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        raise AttributeError(f"RunConfig has no field or section {name!r}; sections: {sorted(sections)}")

    @property
    def clients_per_round(self) -> int:
        """How many clients each round samples (at least one)."""
        if self.federation.clients_per_round is not None:
            return self.federation.clients_per_round
        if self.federation.fraction is not None:
            return max(1, round(self.federation.fraction * self.partition.num_clients))
        return self.partition.num_clients

    def to_dict(self) -> dict[str, Any]:
        """Core fields and every plug-in section at the top level, as the config file states them."""
        out = {name: getattr(self, name) for name in _CORE_SECTIONS}
        out = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in out.items()}
        for name, value in sorted(self.sections.items()):
            out[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        _reject_non_finite(data, "")
        registered = plugins.sections()
        core = {k: v for k, v in data.items() if k not in registered}
        unknown = sorted(set(core) - set(_CORE_SECTIONS))
        if unknown:
            raise ConfigError(f"config: unknown key(s) {unknown}; valid keys: "
                              f"{[*_CORE_SECTIONS, *sorted(registered)]}")
        sections = {}
        for name in registered:
            if name in data:
                value = data[name]
                _check(isinstance(value, dict), name, f"must be a table/section, got {type(value).__name__}")
                sections[name] = from_dict(registered[name].settings, value, name)
        config = from_dict(cls, core)
        # rebuild with the sections so the plug-in checks see them (from_dict built defaults)
        return cls(**{k: getattr(config, k) for k in _CORE_SECTIONS}, sections=sections)


# ---------------------------------------------------------------------- generic loading
def _reject_non_finite(value: Any, path: str) -> None:
    """``ConfigError`` naming the field of any NaN/inf float (TOML ``nan``/``inf``, YAML ``.nan``, --set NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path or 'config'}: must be a finite number, got {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_non_finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _reject_non_finite(v, f"{path}[{i}]")


def _yaml_error(p: Path, exc: Exception) -> ConfigError:
    """One line for a YAML error: where, and what (a ``!!python/...`` tag is named as refused)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    if "!!python/" in problem or "tag:yaml.org,2002:python/" in problem:
        tag = re.search(r"'(tag:yaml.org,2002:python/[^']*|!!python/[^']*)'", problem)
        shown = tag.group(1).replace("tag:yaml.org,2002:", "!!") if tag else "!!python/..."
        return ConfigError(f"config file {str(p)!r}:{where} YAML tag {shown} is "
                           "refused: configs are plain data (loaded with yaml.safe_load), not Python objects")
    context = " ".join(str(getattr(exc, "context", None) or "").split())
    return ConfigError(f"config file {str(p)!r} is not valid YAML:{where} {problem}"
                       + (f" ({context})" if context and context not in problem else ""))


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
    if p.is_dir():
        raise ConfigError(f"config file {str(p)!r} is a directory; give the path of a .toml or .yaml file")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (byte {exc.start}: "
                          f"{exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {str(p)!r}: expected a .toml, .yaml or .yml file")
    except ConfigError:
        raise
    except Exception as exc:  # TOML/YAML syntax errors (yaml.YAMLError is no ValueError) get one clear line
        if not isinstance(exc, (tomllib.TOMLDecodeError, ValueError)) and type(exc).__module__.split(".")[0] != "yaml":
            raise
        if type(exc).__module__.split(".")[0] == "yaml":
            raise _yaml_error(p, exc) from None
        raise ConfigError(f"config file {str(p)!r} is not valid {p.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r}: top level must be a table/mapping")
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        _check(all(key.split(".")), f"--set {key}", "expects a dotted key such as federation.rounds")
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            _check(isinstance(node, dict), f"--set {key}", f"{'.'.join(parents[:i + 1])} is {node!r}, not a "
                   "table, so it has no field " + repr(".".join([*parents[i + 1:], leaf])))
        node[leaf] = value
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a :class:`RunConfig` from a ``.toml`` or ``.yaml``/``.yml`` file.

    ``overrides`` maps dotted keys (``"federation.rounds"``) to values applied before validation.
    """
    return RunConfig.from_dict(read_config_file(path, overrides))
