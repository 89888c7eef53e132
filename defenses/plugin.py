"""The defenses plug-in: registers stages, config sections and run components with core.

Light on purpose (imported whenever a config is loaded): every factory is a lazy
``"module:Name"`` string; settings dataclasses import nothing heavy.
"""

from __future__ import annotations

from trustfl.plugins import STAGES, register_component, register_pipeline_builder, register_section, register_validator

_D = "trustfl.defenses"
for _name, _target in {
    "fedavg": f"{_D}.fedavg:FedAvg",
    "median": f"{_D}.coordinate:CoordinateMedian",
    "trimmed_mean": f"{_D}.coordinate:TrimmedMean",
    "krum": f"{_D}.krum:Krum",
    "multi_krum": f"{_D}.krum:MultiKrum",
    "bulyan": f"{_D}.bulyan:Bulyan",
    "geometric_median": f"{_D}.geomed:GeometricMedian",
    "centered_clipping": f"{_D}.centered_clipping:CenteredClipping",
    "dnc": f"{_D}.dnc:DnC",
    "fltrust": f"{_D}.fltrust:FLTrust",
    "flame": f"{_D}.flame:FLAME",
    "foolsgold": f"{_D}.foolsgold:FoolsGold",
}.items():
    STAGES.register("aggregator", _name, _target)
STAGES.register("pre", "norm_clip", f"{_D}.preagg:NormClip")
STAGES.register("pre", "nnm", f"{_D}.preagg:NNM")
STAGES.register("pre", "bucketing", f"{_D}.preagg:Bucketing")
STAGES.register("pre", "dp_clip", f"{_D}.dp.client_level:ClientClip")
STAGES.register("post", "dp_fedavg", f"{_D}.dp.client_level:GaussianNoise")


def _build_pipeline(wrap=None, **kwargs):  # type: ignore[no-untyped-def]
    from trustfl.defenses.pipeline import Pipeline
    from trustfl.defenses.registry import build_pipeline

    if wrap is not None:
        return wrap if isinstance(wrap, Pipeline) else Pipeline(aggregator=wrap)
    return build_pipeline(**kwargs)


register_pipeline_builder(_build_pipeline)


def _privacy_components(config):  # type: ignore[no-untyped-def]
    from trustfl.defenses.dp.component import from_config

    return from_config(config)


def _dedup_components(config):  # type: ignore[no-untyped-def]
    from trustfl.defenses.dedup.wiring import from_config

    return from_config(config)


def _secure_aggregation_components(config):  # type: ignore[no-untyped-def]
    from trustfl.defenses.secure_aggregation.component import from_config

    return from_config(config)


def _validate(config):  # type: ignore[no-untyped-def]
    """Names and options of the server pipeline, its Byzantine tolerance for the configured n and f
    (before any data or model is loaded), and the DP / pipeline composition rules."""
    from trustfl.defenses.dp.component import validate
    from trustfl.errors import ConfigError, ToleranceError

    pipeline = config.server.build_pipeline()  # a bad stage name or option is reported with its field
    if config.server.aggregator == "fltrust":
        raise ConfigError("server.aggregator: 'fltrust' needs the server's root-data update every round, which a "
                          "config cannot supply yet; use FLTrust(root_update_fn=...) or FLTrustRootHook in code "
                          "(docs/defenses.md)")
    # n = clients per round; f = the attackers an [attack] section names (at most n of them in a round),
    # else the f the pipeline is built for (the aggregator's own, else the largest of its stages')
    n = config.clients_per_round
    attack = config.sections.get("attack")
    if attack is not None and getattr(attack, "active", False) and (attack.attackers or attack.fraction):
        k = (len(set(attack.attackers)) if attack.attackers is not None
             else max(1, round(attack.fraction * config.partition.num_clients)))
        f, source = min(k, n), f"{k} attacker(s) of [attack]"
    else:
        own = [s.f for s in [pipeline.aggregator, *pipeline.stages] if isinstance(getattr(s, "f", None), int)]
        f, source = (own[0], "the f the pipeline is configured with") if own else (0, "no attackers")
    try:
        pipeline.check_tolerance(n, f)
    except ToleranceError as exc:
        where, m, g = "server.aggregator", n, f
        slots = [(f"server.pre[{i}]", st) for i, st in enumerate(pipeline.pre)] + [("server.aggregator",
                 pipeline.aggregator)] + [(f"server.post[{i}]", st) for i, st in enumerate(pipeline.post)]
        for slot, stage in slots:  # name the stage that refuses
            try:
                stage.check_tolerance(m, g)
            except ToleranceError:
                where = slot
                break
            m, g = stage.tolerance_after(m, g)
        raise ConfigError(f"{where}: {exc} (n = {n} clients per round, f = {f}: {source}); sample more clients "
                          "per round (federation.clients_per_round / fraction), lower f, or pick an aggregator "
                          "that tolerates it (docs/defenses.md)") from None
    validate(config)
    from trustfl.defenses.secure_aggregation.component import validate as validate_secure

    validate_secure(config)


def _register_sections() -> None:
    from trustfl.defenses.dedup.settings import DedupSettings
    from trustfl.defenses.dp.settings import PrivacySettings

    register_section("privacy", PrivacySettings, owner="trustfl.defenses")
    register_section("dedup", DedupSettings, owner="trustfl.defenses")
    from trustfl.defenses.secure_aggregation.settings import SecureAggregationSettings

    register_section("secure_aggregation", SecureAggregationSettings, owner="trustfl.defenses")


_register_sections()
register_component("trustfl.defenses.dp", _privacy_components)
register_component("trustfl.defenses.dedup", _dedup_components)
register_component("trustfl.defenses.secure_aggregation", _secure_aggregation_components)
register_validator("trustfl.defenses", _validate)
