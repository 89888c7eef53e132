"""Registries of attacks by name, so configs can say ``attack.update = {name = "alie"}``.

Kinds: ``data`` (rewrite a client's records: :class:`trustfl.federation.DataAttack`) and
``update`` (rewrite the attackers' updates: :class:`trustfl.federation.UpdateAttack`).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping

__all__ = ["available_attacks", "make_attack", "register_attack"]

Kind = Literal["data", "update"]
_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {"data": {}, "update": {}}


def _table(kind: str) -> dict[str, Callable[..., Any]]:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown attack kind {kind!r}; valid kinds: {sorted(_REGISTRY)}")
    return _REGISTRY[kind]


def register_attack(kind: Kind, name: str, factory: Callable[..., Any]) -> None:
    """Register a ``kind`` attack ``name``; a taken name is an error."""
    table, key = _table(kind), name.lower()
    if key in table:
        raise ValueError(f"{kind} attack {name!r} is already registered ({table[key]!r})")
    table[key] = factory


def available_attacks(kind: Kind) -> list[str]:
    return sorted(_table(kind))


def make_attack(kind: Kind, spec: Mapping[str, Any]) -> Any:
    """Build an attack from ``{"name": ..., **options}``; unknown names list the valid ones."""
    if "name" not in spec:
        raise ValueError(f"{kind} attack spec {dict(spec)} needs a 'name'; valid: {available_attacks(kind)}")
    table = _table(kind)
    name = str(spec["name"]).lower()
    if name not in table:
        raise ValueError(f"unknown {kind} attack {spec['name']!r}; valid names: {sorted(table)}")
    options = {k: v for k, v in spec.items() if k != "name"}
    try:
        return table[name](**options)
    except TypeError as exc:
        raise ValueError(f"{kind} attack {name!r}: bad options {options}: {exc}") from exc
