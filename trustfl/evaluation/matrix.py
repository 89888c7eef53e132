"""The attack x defense evaluation matrix: its spec (TOML) and the cells it expands to.

A matrix file holds a ``[base]`` run config (or ``base = "path.toml"``), lists of
``[[attacks]]`` and ``[[defenses]]`` and a ``[grid]`` of attacker fractions, seeds and
Dirichlet alphas. Every combination is one cell: a full federated run of the real loop.
The "no attack" row is run once per (defense, seed, alpha), not once per fraction.
Alphas exist only for ``base.partition.scheme = "dirichlet"`` (the default scheme); an
``iid`` or ``key`` partition has no alpha axis. Every key: docs/eval.md.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustfl.config import RunConfig, from_dict
from trustfl.errors import ConfigError

__all__ = ["AttackSpec", "Cell", "DefenseSpec", "GridSpec", "MatrixSpec", "load_matrix"]


@dataclass
class AttackSpec:
    """One row of the matrix: a data and/or update attack (both None: no attack)."""

    label: str
    data: dict[str, Any] | None = None
    update: dict[str, Any] | None = None

    @property
    def is_none(self) -> bool:
        return self.data is None and self.update is None


@dataclass
class DefenseSpec:
    """One column: a server pipeline by registry names (see ``server`` in the run config)."""

    label: str
    aggregator: str = "fedavg"
    aggregator_options: dict[str, Any] = field(default_factory=dict)
    pre: list[dict[str, Any]] = field(default_factory=list)
    post: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class GridSpec:
    """The axes besides attacks and defenses.

    ``alphas``: Dirichlet concentrations, only with ``base.partition.scheme = "dirichlet"``;
    unset or ``[]``: the base's ``partition.alpha`` (default 0.5). Non-dirichlet schemes have no
    alpha axis, so ``alphas`` must then be unset or ``[]``.
    """

    fractions: list[float] = field(default_factory=lambda: [0.2])
    seeds: list[int] = field(default_factory=lambda: [0])
    alphas: list[float] | None = None

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0 < f < 1 for f in self.fractions):
            raise ConfigError(f"grid.fractions: need values in (0, 1), got {self.fractions}")
        if not self.seeds:
            raise ConfigError("grid.seeds: need at least one seed")
        if self.alphas is not None and any(a <= 0 for a in self.alphas):
            raise ConfigError(f"grid.alphas: need values > 0, got {self.alphas}")
        for name in ("fractions", "seeds", "alphas"):
            values = getattr(self, name) or []
            if len(set(values)) != len(values):
                raise ConfigError(f"grid.{name}: repeated values in {values}")


@dataclass
class MatrixSpec:
    """A whole evaluation matrix."""

    name: str
    base: dict[str, Any]
    attacks: list[AttackSpec]
    defenses: list[DefenseSpec]
    grid: GridSpec = field(default_factory=GridSpec)
    out: str | None = None
    workers: int = 1
    threads_per_worker: int | None = None
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if not self.attacks or not self.defenses:
            raise ConfigError("matrix: needs at least one [[attacks]] and one [[defenses]] entry")
        for kind, labels in (("attacks", [a.label for a in self.attacks]), ("defenses", [d.label for d in self.defenses])):
            dup = sorted({x for x in labels if labels.count(x) > 1})
            if dup:
                raise ConfigError(f"{kind}: duplicate labels {dup}")
        if self.workers < 1:
            raise ConfigError(f"workers: must be >= 1, got {self.workers}")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ConfigError(f"threads_per_worker: must be >= 1, got {self.threads_per_worker}")
        partition = self.base.get("partition", {})
        if not isinstance(partition, dict):
            raise ConfigError(f"base.partition: must be a table/section, got {type(partition).__name__}")
        if self.scheme != "dirichlet" and self.grid.alphas:
            raise ConfigError(f"grid.alphas: only applies to base.partition.scheme = 'dirichlet', not "
                              f"{self.scheme!r}; remove grid.alphas (an {self.scheme} partition has no alpha)")
        for cell in self.cells():  # validate every cell's config at load, with the cell named
            try:
                cell.run_config()
            except ConfigError as exc:
                raise ConfigError(f"cell {cell.cell_id}: {exc}") from exc

    @property
    def scheme(self) -> str:
        """The base's partition scheme (``dirichlet`` when unset, as in the run config)."""
        return str(self.base.get("partition", {}).get("scheme", "dirichlet"))

    @property
    def alphas(self) -> list[float | None]:
        """The alpha axis of the grid: ``[None]`` for a non-dirichlet scheme, else ``grid.alphas``
        or, when those are unset/empty, the base's ``partition.alpha`` (default 0.5)."""
        if self.scheme != "dirichlet":
            return [None]
        if self.grid.alphas:
            return list(self.grid.alphas)
        return [float(self.base.get("partition", {}).get("alpha") or 0.5)]

    def cells(self) -> list["Cell"]:
        out = []
        for attack in self.attacks:
            fractions = [0.0] if attack.is_none else self.grid.fractions
            for defense in self.defenses:
                for fraction in fractions:
                    for alpha in self.alphas:
                        for seed in self.grid.seeds:
                            out.append(Cell(self.base, attack, defense, fraction, alpha, seed))
        return out


@dataclass
class Cell:
    base: dict[str, Any]
    attack: AttackSpec
    defense: DefenseSpec
    fraction: float
    alpha: float | None  # None: the partition is not dirichlet (no alpha)
    seed: int

    @property
    def cell_id(self) -> str:
        safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "-" for c in s)  # noqa: E731
        alpha = "" if self.alpha is None else f"__a{self.alpha:g}"
        return f"{safe(self.attack.label)}__{safe(self.defense.label)}__f{self.fraction:g}{alpha}__s{self.seed}"

    def params(self) -> dict[str, Any]:
        return {"attack": self.attack.label, "defense": self.defense.label, "fraction": self.fraction,
                "alpha": self.alpha, "seed": self.seed}

    def config_dict(self) -> dict[str, Any]:
        cfg = copy.deepcopy(self.base)
        cfg["name"] = self.cell_id
        cfg["seed"] = self.seed
        if self.alpha is not None:
            cfg.setdefault("partition", {})["alpha"] = self.alpha
        d = self.defense
        cfg["server"] = {**cfg.get("server", {}), "aggregator": d.aggregator,
                         "aggregator_options": dict(d.aggregator_options), "pre": list(d.pre), "post": list(d.post)}
        if self.attack.is_none:
            cfg.pop("attack", None)
        else:
            cfg["attack"] = {"data": self.attack.data, "update": self.attack.update, "fraction": self.fraction}
            cfg["attack"] = {k: v for k, v in cfg["attack"].items() if v is not None}
        return cfg

    def run_config(self) -> RunConfig:
        return RunConfig.from_dict(self.config_dict())


def load_matrix(path: str | Path) -> MatrixSpec:
    """Load and validate a matrix TOML file (every cell's run config is validated too)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"matrix file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"matrix file {str(p)!r} is not valid TOML: {exc}") from exc
    base = data.get("base")
    if isinstance(base, str):
        base_path = (p.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file():
            raise ConfigError(f"base: config file {str(base_path)!r} does not exist")
        base = tomllib.loads(base_path.read_text(encoding="utf-8"))
    if not isinstance(base, dict):
        raise ConfigError("base: need a [base] table (a run config) or base = \"path.toml\"")
    data["base"] = base
    data.setdefault("name", p.stem)
    return from_dict(MatrixSpec, data)
