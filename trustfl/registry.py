"""One registry mechanism for everything configs name: pipeline stages, attacks.

A :class:`Registry` holds factories by ``(kind, name)``; registering a taken name is an
error, an unknown name lists the valid ones, and bad options name the factory.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

__all__ = ["Registry"]


class Registry:
    """Factories by kind and (case-insensitive) name.

    Args:
        kinds: the valid kinds, e.g. ``("aggregator", "pre", "post")``.
        noun: how errors call an entry of kind ``{kind}``, e.g. ``"{kind} attack"``.
    """

    def __init__(self, kinds: Iterable[str], *, noun: str = "{kind}") -> None:
        self._tables: dict[str, dict[str, Callable[..., Any]]] = {k: {} for k in kinds}
        self._noun = noun

    def _table(self, kind: str) -> dict[str, Callable[..., Any]]:
        if kind not in self._tables:
            raise ValueError(f"unknown kind {kind!r}; valid kinds: {sorted(self._tables)}")
        return self._tables[kind]

    def register(self, kind: str, name: str, factory: Callable[..., Any]) -> None:
        table, key = self._table(kind), name.lower()
        if key in table:
            raise ValueError(f"{self._noun.format(kind=kind)} {name!r} is already registered ({table[key]!r})")
        table[key] = factory

    def available(self, kind: str) -> list[str]:
        return sorted(self._table(kind))

    def make(self, kind: str, name: str, **options: Any) -> Any:
        table, noun = self._table(kind), self._noun.format(kind=kind)
        try:
            factory = table[name.lower()]
        except KeyError:
            raise ValueError(f"unknown {noun} {name!r}; valid names: {sorted(table)}") from None
        try:
            return factory(**options)
        except TypeError as exc:
            raise ValueError(f"{noun} {name.lower()!r}: bad options {options}: {exc}") from exc
