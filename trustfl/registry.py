"""One registry mechanism for everything configs name: pipeline stages, attacks, config sections.

A :class:`Registry` holds factories by ``(kind, name)``; registering a taken name is an error,
an unknown name lists the valid ones, and bad options name the factory. A factory may be given
lazily as ``"package.module:Attribute"``: it is imported on first use, so registering every
built-in stage costs nothing at ``import trustfl`` time (and core never imports a plug-in).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable

__all__ = ["Registry", "resolve"]

Factory = Callable[..., Any] | str


def resolve(target: Factory) -> Callable[..., Any]:
    """A factory from a callable or a ``"module:attr"`` string."""
    if callable(target):
        return target
    module, _, attr = str(target).partition(":")
    if not module or not attr:
        raise ValueError(f"registry: lazy factory must look like 'package.module:Name', got {target!r}")
    return getattr(importlib.import_module(module), attr)


class Registry:
    """Factories by kind and (case-insensitive) name.

    Args:
        kinds: the valid kinds, e.g. ``("aggregator", "pre", "post")``.
        noun: how errors call an entry of kind ``{kind}``, e.g. ``"{kind} attack"``.
    """

    def __init__(self, kinds: Iterable[str], *, noun: str = "{kind}") -> None:
        self._tables: dict[str, dict[str, Factory]] = {k: {} for k in kinds}
        self._noun = noun

    def _table(self, kind: str) -> dict[str, Factory]:
        if kind not in self._tables:
            raise ValueError(f"unknown kind {kind!r}; valid kinds: {sorted(self._tables)}")
        return self._tables[kind]

    def register(self, kind: str, name: str, factory: Factory) -> None:
        table, key = self._table(kind), name.lower()
        if key in table and table[key] != factory:
            raise ValueError(f"{self._noun.format(kind=kind)} {name!r} is already registered ({table[key]!r})")
        table[key] = factory

    def available(self, kind: str) -> list[str]:
        return sorted(self._table(kind))

    def get(self, kind: str, name: str) -> Callable[..., Any]:
        """The factory registered as ``name`` (imported if it was registered lazily)."""
        table, noun = self._table(kind), self._noun.format(kind=kind)
        try:
            return resolve(table[name.lower()])
        except KeyError:
            raise ValueError(f"unknown {noun} {name!r}; valid names: {sorted(table)}") from None

    def make(self, kind: str, name: str, **options: Any) -> Any:
        factory, noun = self.get(kind, name), self._noun.format(kind=kind)
        try:
            return factory(**options)
        except TypeError as exc:
            raise ValueError(f"{noun} {name.lower()!r}: bad options {options}: {exc}") from exc
