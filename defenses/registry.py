"""A registry of aggregators by name, so configs can say ``aggregator = "fedavg"``."""

from __future__ import annotations

from typing import Any, Callable

from trustfl.defenses.fedavg import FedAvg

__all__ = ["available_aggregators", "make_aggregator", "register_aggregator"]

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_aggregator(name: str, factory: Callable[..., Any]) -> None:
    """Register ``factory`` (a class or function taking keyword options) under ``name``."""
    key = name.lower()
    if key in _REGISTRY:
        raise ValueError(f"aggregator {name!r} is already registered ({_REGISTRY[key]!r})")
    _REGISTRY[key] = factory


def available_aggregators() -> list[str]:
    return sorted(_REGISTRY)


def make_aggregator(name: str, **options: Any) -> Any:
    """Build a registered aggregator; unknown names list the valid ones."""
    try:
        factory = _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown aggregator {name!r}; valid names: {available_aggregators()}") from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise ValueError(f"aggregator {name!r}: bad options {options}: {exc}") from exc


register_aggregator("fedavg", FedAvg)
