"""``[secure_aggregation]`` as a run component: supplies the MPC aggregator, its DP release and accounting.

With ``noise_multiplier`` the component is client-level DP done inside MPC: the parties clip every
update to B and add N(0, z^2 B^2) before revealing; the server only divides by the expected count
(:class:`~.release.SecureDPRelease`). Accounting is the existing client-level accountant
(:class:`~trustfl.defenses.dp.reporting.ClientLevelAccountant`: Poisson-subsampled Gaussian, q = k/N,
one step per round, empty rounds included), checked *before* each round (also after a resume),
reported in the round metrics and in the manifest's ``extra["privacy"]["client"]``.
"""

from __future__ import annotations

from typing import Any

import torch

from trustfl.defenses.secure_aggregation.aggregator import MPCSecureAggregator
from trustfl.defenses.secure_aggregation.release import SecureDPRelease
from trustfl.defenses.secure_aggregation.settings import SecureAggregationSettings
from trustfl.errors import ConfigError, StopFederation
from trustfl.types import Aggregate, RoundReport, RunComponent, RunContext

__all__ = ["SecureAggregation", "from_config", "validate"]


class SecureAggregation(RunComponent):
    """Secure aggregation by MPC for the federated loop (built from ``[secure_aggregation]`` or in code)."""

    name = "secure_aggregation"

    def __init__(self, settings: SecureAggregationSettings, *, aggregator: MPCSecureAggregator | None = None) -> None:
        self.settings = settings
        s = settings
        self.aggregator = aggregator if aggregator is not None else MPCSecureAggregator(
            parties=s.parties, rendezvous=s.rendezvous, host=s.host, launch=s.launch, precision_bits=s.precision_bits,
            timeout=s.timeout, port=s.port, norm_bound=s.norm_bound, over_bound=s.over_bound,
            noise_multiplier=s.noise_multiplier,
            cosine_threshold=s.cosine_threshold)
        self._owns_parties = aggregator is None  # close only the parties this component started
        self.accountant: Any = None
        self.release: SecureDPRelease | None = None
        self.rounds = 0

    def secure_aggregator(self) -> MPCSecureAggregator:
        return self.aggregator

    def setup(self, context: RunContext) -> None:
        self.rounds = context.rounds
        z = self.settings.noise_multiplier
        if z is None:
            return
        fed = context.config.federation
        if fed.sampling != "poisson":
            raise ConfigError(f"federation.sampling: secure_aggregation.noise_multiplier is client-level DP, which "
                              f"accounts Poisson sampling of clients; set sampling = \"poisson\" "
                              f"(got {fed.sampling!r})")
        from trustfl.defenses.dp.reporting import ClientLevelAccountant

        q = context.clients_per_round / context.num_clients
        try:
            self.accountant = ClientLevelAccountant(noise_multiplier=z, sample_rate=q, delta=self.settings.delta,
                                                    max_epsilon=self.settings.max_epsilon)
        except ValueError as exc:
            raise ConfigError(f"secure_aggregation.max_epsilon: {exc}") from None
        assert self.settings.norm_bound is not None
        self.release = SecureDPRelease(expected_clients=float(context.clients_per_round),
                                       norm_bound=self.settings.norm_bound, noise_multiplier=z)

    def configure_pipeline(self, pipeline: Any) -> Any:
        if self.release is None:
            return pipeline
        from trustfl.defenses.fedavg import FedAvg
        from trustfl.defenses.pipeline import Pipeline

        if not (isinstance(pipeline.aggregator, FedAvg) and not pipeline.aggregator.weighted):
            raise ConfigError(f"secure_aggregation.noise_multiplier: needs FedAvg(weighted=False) (equal weights bound "
                              f"one client's influence by B / (qN)), got {pipeline.aggregator!r}")
        return Pipeline(pre=list(pipeline.pre), aggregator=pipeline.aggregator, post=[self.release, *pipeline.post])

    def check_budget(self, round: int) -> None:
        if self.accountant is None:
            return
        try:
            self.accountant.check_budget(round, who="client-level privacy budget (secure aggregation)")
        except StopFederation:
            self._close()
            raise

    def empty_round(self, round: int, global_vector: torch.Tensor, *, generator: torch.Generator) -> Aggregate | None:
        if self.release is None:
            return None
        return self.release.empty_round(global_vector.numel(), dtype=global_vector.dtype, generator=generator)

    def after_round(self, report: RoundReport) -> dict[str, Any]:
        last = self.aggregator.last
        facts: dict[str, Any] = {"parties": self.aggregator.pool.parties}
        if last is not None:
            facts.update(included=list(last.client_ids), dropped=list(last.dropped))
            if last.anomalous is not None:
                facts["anomalous"] = list(last.anomalous)
            elif self.settings.cosine_threshold is not None:  # said, not silently absent
                facts["anomalous"] = None
                facts["anomalous_not_computed"] = ("no previous global step known to this process (the run's first "
                                                   "round, or the first after a resume), or a zero step")
        self.aggregator.last = None
        metrics: dict[str, Any] = {"secure_aggregation": facts}
        try:
            if self.accountant is not None:
                metrics.update(self.accountant(report))
        except StopFederation:
            self._close()
            raise
        if report.round >= self.rounds:
            self._close()  # the parties live for the run, not longer
        return metrics

    def _close(self) -> None:
        if self._owns_parties:
            self.aggregator.close()

    def manifest(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"secure_aggregation": {**asdict(self.settings), "provider": "crypten-ttp"}}

    def manifest_update(self) -> dict[str, Any]:
        return {"privacy": {"client": self.accountant.summary()}} if self.accountant is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return self.accountant.state_dict() if self.accountant is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.accountant is None:
            super().load_state_dict(state)
            return
        self.accountant.load_state_dict(state, who="secure-aggregation (client-level DP)")


def from_config(config: Any) -> list[RunComponent]:
    settings = config.sections.get("secure_aggregation")
    if settings is None or not settings.enabled:
        return []
    return [SecureAggregation(settings)]


def validate(config: Any) -> None:
    """Cross-section rules, checked at config load (before any data, model or party is started)."""
    s = config.sections.get("secure_aggregation")
    if s is None or not s.enabled:
        return
    if config.federation.save_client_updates:
        raise ConfigError("federation.save_client_updates: must be false with [secure_aggregation] (the server never "
                          "holds an individual update, so the run directory cannot store one)")
    pipeline = config.server.build_pipeline()
    if pipeline.requires_individual_updates:
        needs = [type(st).__name__ for st in pipeline.stages if st.requires_individual_updates]
        raise ConfigError(f"server.aggregator: {needs} need individual updates, which secure aggregation hides (there "
                          "is no plaintext fallback); use aggregator = 'fedavg' and bound norms with "
                          "secure_aggregation.norm_bound instead of pre-stages")
    if config.privacy.client is not None:
        raise ConfigError("privacy.client: with [secure_aggregation] client-level DP runs inside MPC; set "
                          "secure_aggregation.norm_bound and noise_multiplier (and remove [privacy.client])")
    if config.federation.engine != "local":
        raise ConfigError(f"federation.engine: [secure_aggregation] runs on the local engine, got "
                          f"{config.federation.engine!r}")
    if s.noise_multiplier is not None:
        srv = config.server
        if not (srv.aggregator == "fedavg" and srv.aggregator_options.get("weighted") is False):
            raise ConfigError("server.aggregator_options.weighted: secure_aggregation.noise_multiplier needs "
                              "aggregator = 'fedavg' with weighted = false (equal weights bound one client's "
                              "influence)")
        if config.federation.sampling != "poisson":
            raise ConfigError(f"federation.sampling: secure_aggregation.noise_multiplier needs sampling = \"poisson\" "
                              f"(what the client-level accountant analyses), got {config.federation.sampling!r}")
