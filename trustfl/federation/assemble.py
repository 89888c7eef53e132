"""Put a run's pieces together before it starts: components set up, pipeline configured, rules checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from trustfl.errors import ConfigError
from trustfl.types import PipelineLike, RunComponent, RunContext

__all__ = ["Assembled", "assemble"]


@dataclass
class Assembled:
    pipeline: PipelineLike
    components: list[RunComponent]
    privacy: Any  # the one client-side privacy hook, or None
    malicious: list[int]


def assemble(config: Any, pipeline: PipelineLike, components: Sequence[RunComponent], context: RunContext, *,
             secure: bool) -> Assembled:
    """Set every component up, let it configure the pipeline, and refuse combinations that cannot hold.

    Raises:
        ConfigError: secure aggregation (trustfl's MPC, or Flower's SecAgg+ named by
            ``federation.flower.secure_aggregation``) with client updates stored, with a pipeline that needs
            individual updates, or with update attacks; two client-side privacy hooks.
        TypeError: a component is not a :class:`~trustfl.types.RunComponent`.
    """
    components = list(components)
    what = "secure_aggregation"
    if config.federation.engine == "flower" and config.federation.flower.secure_aggregation != "none":
        secure, what = True, f"federation.flower.secure_aggregation = {config.federation.flower.secure_aggregation!r}"
    for c in components:
        if not isinstance(c, RunComponent):
            raise TypeError(f"components: {c!r} is not a trustfl.types.RunComponent")
    if secure and config.federation.save_client_updates:
        raise ConfigError(f"{what}: federation.save_client_updates must be false (the server never sees "
                          "individual updates)")
    for c in components:
        c.setup(context)
        pipeline = c.configure_pipeline(pipeline)
    if secure:
        if pipeline.requires_individual_updates:
            raise ConfigError(f"{what}: the pipeline {pipeline!r} needs individual updates, which secure "
                              "aggregation hides; use a sum-only pipeline (FedAvg [+ noise])")
        if any(c.update_attackers() for c in components):
            raise ConfigError(f"{what}: update attacks rewrite individual updates on the server, which "
                              "secure aggregation hides; run them without it")
    hooks = [p for p in (c.client_privacy() for c in components) if p is not None]
    if len(hooks) > 1:
        raise ConfigError(f"privacy: {len(hooks)} client-side privacy hooks were given ({hooks}); use one")
    malicious = sorted({m for c in components for m in c.malicious_clients()})
    return Assembled(pipeline=pipeline, components=components, privacy=hooks[0] if hooks else None,
                     malicious=malicious)
