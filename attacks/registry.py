"""Registries of attacks by name, so configs can say ``attack.update = {name = "alie"}``.

Kinds: ``data`` (rewrite a client's records: :class:`trustfl.types.DataAttackStage`) and
``update`` (rewrite the attackers' updates: :class:`trustfl.types.UpdateAttackStage`).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping

from trustfl.plugins import ATTACKS, load_plugins

__all__ = ["available_attacks", "make_attack", "register_attack"]

Kind = Literal["data", "update"]


def register_attack(kind: Kind, name: str, factory: Callable[..., Any] | str) -> None:
    """Register a ``kind`` attack ``name`` (a factory or ``"module:Name"``); a taken name is an error."""
    load_plugins()
    ATTACKS.register(kind, name, factory)


def available_attacks(kind: Kind) -> list[str]:
    load_plugins()
    return ATTACKS.available(kind)


def make_attack(kind: Kind, spec: Mapping[str, Any]) -> Any:
    """Build an attack from ``{"name": ..., **options}``; unknown names list the valid ones."""
    if "name" not in spec:
        raise ValueError(f"{kind} attack spec {dict(spec)} needs a 'name'; valid: {available_attacks(kind)}")
    load_plugins()
    return ATTACKS.make(kind, str(spec["name"]), **{k: v for k, v in spec.items() if k != "name"})
