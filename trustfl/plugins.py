"""Where plug-ins (``trustfl.defenses``, ``trustfl.attacks``, third-party packages) hook into core.

Core never imports a plug-in. Instead each plug-in has a small ``plugin`` module, named by the
``trustfl.plugins`` entry-point group (pyproject) or in :data:`BUILTIN_PLUGINS`, that registers
here: its config sections (typed dataclasses), run-component factories, cross-section config
checks, and its registry entries (stages, attacks) as lazy ``"module:Name"`` strings. The
module is imported by :func:`load_plugins` the first time a config is loaded or a registry is
read, and it must stay light (no torch-heavy or optional imports at module level).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

from trustfl.errors import ConfigError
from trustfl.registry import Registry

__all__ = ["ATTACKS", "BUILTIN_PLUGINS", "STAGES", "Section", "as_pipeline", "build_components", "build_pipeline", "load_plugins",
           "register_component", "register_pipeline_builder", "register_section", "register_validator", "sections",
           "validators"]
log = logging.getLogger(__name__)

BUILTIN_PLUGINS = ("trustfl.defenses.plugin", "trustfl.attacks.plugin")
ENTRY_POINT_GROUP = "trustfl.plugins"

STAGES = Registry(("aggregator", "pre", "post"))
ATTACKS = Registry(("data", "update"), noun="{kind} attack")


@dataclass(frozen=True)
class Section:
    """A plug-in's top-level config section: ``[name]`` parsed into ``settings`` (a dataclass)."""

    name: str
    settings: type
    owner: str


_SECTIONS: dict[str, Section] = {}
_COMPONENTS: list[tuple[str, Callable[[Any], list[Any]]]] = []
_VALIDATORS: list[tuple[str, Callable[[Any], None]]] = []
_PIPELINE_BUILDER: list[Callable[..., Any]] = []
_loaded = False


def register_section(name: str, settings: type, *, owner: str) -> None:
    """Add a top-level config section ``[name]``; its default is ``settings()``."""
    if name in _SECTIONS and _SECTIONS[name].settings is not settings:
        raise ValueError(f"config section [{name}] is already registered by {_SECTIONS[name].owner}")
    _SECTIONS[name] = Section(name, settings, owner)


def register_component(owner: str, factory: Callable[[Any], list[Any]]) -> None:
    """``factory(config) -> [RunComponent, ...]`` (empty when its section is off)."""
    if (owner, factory) not in _COMPONENTS:
        _COMPONENTS.append((owner, factory))


def register_validator(owner: str, check: Callable[[Any], None]) -> None:
    """``check(config)`` runs after a whole config is built; raise ``ConfigError`` with the field's path."""
    if (owner, check) not in _VALIDATORS:
        _VALIDATORS.append((owner, check))


def register_pipeline_builder(builder: Callable[..., Any]) -> None:
    """``builder(aggregator=, aggregator_options=, pre=, post=) -> Pipeline`` (the defenses plug-in)."""
    _PIPELINE_BUILDER[:] = [builder]


def load_plugins() -> None:
    """Import the built-in plug-ins and every ``trustfl.plugins`` entry point (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    names = list(BUILTIN_PLUGINS)
    try:
        from importlib.metadata import entry_points

        names += [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value not in names]
    except Exception as exc:  # pragma: no cover - broken metadata must not hide the built-ins
        log.warning("could not read %s entry points: %s", ENTRY_POINT_GROUP, exc)
    for name in names:
        importlib.import_module(name)


def sections() -> dict[str, Section]:
    load_plugins()
    return dict(_SECTIONS)


def validators() -> list[Callable[[Any], None]]:
    load_plugins()
    return [check for _, check in _VALIDATORS]


def build_components(config: Any) -> list[Any]:
    """Every registered plug-in's run components for ``config`` (in registration order)."""
    load_plugins()
    out: list[Any] = []
    for _, factory in _COMPONENTS:
        out.extend(factory(config))
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"run components: duplicate names {dup}")
    return out


def as_pipeline(obj: Any) -> Any:
    """A pipeline given in code: a pipeline as is, a bare aggregator wrapped in one (per-client checks)."""
    load_plugins()
    if not _PIPELINE_BUILDER:
        raise ConfigError("pipeline: no aggregation plug-in is installed (trustfl.defenses registers it)")
    return _PIPELINE_BUILDER[0](wrap=obj)


def build_pipeline(server: Any) -> Any:
    """The aggregation pipeline named by a ``[server]`` section."""
    load_plugins()
    if not _PIPELINE_BUILDER:
        raise ConfigError("server: no aggregation plug-in is installed (trustfl.defenses registers it)")
    try:
        return _PIPELINE_BUILDER[0](aggregator=server.aggregator, aggregator_options=server.aggregator_options,
                                    pre=server.pre, post=server.post)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"server: {exc}") from exc
