"""Registries of pipeline stages by name, so configs can say ``aggregator = "fedavg"``.

Three kinds: ``aggregator`` (``[n, d] -> Aggregate``), ``pre`` (pre-aggregators such as norm
clipping, NNM, bucketing) and ``post`` (stages on the aggregate, such as Gaussian noise). The
table itself is core's :data:`trustfl.plugins.STAGES`; the built-ins are registered lazily by
:mod:`trustfl.defenses.plugin`. Registering a taken name is an error; an unknown name lists the
valid ones.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Sequence

from trustfl.plugins import STAGES, load_plugins

__all__ = ["available_aggregators", "available_stages", "build_pipeline", "make_aggregator", "make_stage",
           "register_aggregator", "register_stage"]

Kind = Literal["aggregator", "pre", "post"]


def register_stage(kind: Kind, name: str, factory: Callable[..., Any] | str) -> None:
    """Register ``factory`` (a class, a function taking keyword options, or ``"module:Name"``) as ``name``."""
    load_plugins()
    STAGES.register(kind, name, factory)


def available_stages(kind: Kind) -> list[str]:
    load_plugins()
    return STAGES.available(kind)


def make_stage(kind: Kind, name: str, **options: Any) -> Any:
    """Build a registered stage; an unknown name lists the valid ones, bad options name the stage."""
    load_plugins()
    return STAGES.make(kind, name, **options)


def register_aggregator(name: str, factory: Callable[..., Any] | str) -> None:
    register_stage("aggregator", name, factory)


def available_aggregators() -> list[str]:
    return available_stages("aggregator")


def make_aggregator(name: str, **options: Any) -> Any:
    return make_stage("aggregator", name, **options)


def build_pipeline(*, aggregator: str = "fedavg", aggregator_options: Mapping[str, Any] | None = None,
                   pre: Sequence[Mapping[str, Any]] = (), post: Sequence[Mapping[str, Any]] = ()) -> Any:
    """A :class:`~trustfl.defenses.Pipeline` from names, as a config states it.

    ``pre``/``post`` are lists of ``{"name": ..., **options}``.

    Example:
        >>> build_pipeline(aggregator="fedavg", aggregator_options={"weighted": False})
        Pipeline(pre=[], aggregator=FedAvg(weighted=False), post=[])
    """
    from trustfl.defenses.pipeline import Pipeline

    def stages(kind: Kind, specs: Sequence[Mapping[str, Any]]) -> list[Any]:
        out = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, Mapping) or "name" not in spec:
                raise ValueError(f"{kind}[{i}]: each stage needs a 'name'; valid names: {available_stages(kind)}")
            options = {k: v for k, v in spec.items() if k != "name"}
            out.append(make_stage(kind, str(spec["name"]), **options))
        return out

    return Pipeline(pre=stages("pre", pre), aggregator=make_aggregator(aggregator, **dict(aggregator_options or {})),
                    post=stages("post", post))
