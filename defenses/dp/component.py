"""Differential privacy as run components (built from ``[privacy]``, or from hooks passed in code).

* :class:`SampleLevelDP` supplies the client-side DP-SGD hook, reports ε per client after every
  round and carries each client's accountant across a resume.
* :class:`ClientLevelDP` adds DP-FedAvg's clipping (last pre-stage) and Gaussian noise (first
  post-stage) to the pipeline, accounts every round, refuses to train a round whose ε would
  exceed ``max_epsilon`` (checked *before* the round, so also on resume), and carries the
  number of accounted rounds across a resume. It needs Poisson sampling of clients
  (``federation.sampling = "poisson"``, what its accountant analyses) and releases the
  fixed-denominator estimate (sum over the expected count qN); a round that sampled no client
  still releases noise and is accounted (:meth:`ClientLevelDP.empty_round`).
Both report ε in the round's metrics and in the manifest's ``extra["privacy"]``.
"""

from __future__ import annotations

from typing import Any

import torch

from trustfl.defenses.dp.accounting import noise_multiplier_for
from trustfl.defenses.dp.client_level import ClientClip, GaussianNoise, update_noise_multiplier
from trustfl.defenses.dp.reporting import ClientLevelAccountant, SampleLevelReport
from trustfl.errors import ConfigError
from trustfl.types import Aggregate, ClientPrivacyHook, RoundReport, RunComponent, RunContext

__all__ = ["ClientLevelDP", "SampleLevelDP", "from_config"]


class SampleLevelDP(RunComponent):
    """Sample-level DP of each client's local training through ``hook`` (e.g. :class:`DPAdapterTraining`)."""

    name = "privacy_sample"

    def __init__(self, hook: ClientPrivacyHook) -> None:
        if not isinstance(hook, ClientPrivacyHook):
            raise TypeError(f"privacy: {hook!r} is not a trustfl.types.ClientPrivacyHook")
        self.hook = hook
        from trustfl.defenses.dp.sample_level import DPAdapterTraining

        # a user's own hook reports through its finish() metrics; trustfl's reports ε per client too
        self._report = SampleLevelReport(hook) if isinstance(hook, DPAdapterTraining) else None

    def client_privacy(self) -> ClientPrivacyHook:
        return self.hook

    def manifest(self) -> dict[str, Any]:
        return {"privacy_sample_hook": {"class": type(self.hook).__name__, **self.hook.get_config()}}

    def after_round(self, report: RoundReport) -> dict[str, Any]:
        return {self.name: self._report.summary()} if self._report is not None else {}

    def manifest_update(self) -> dict[str, Any]:
        return {"privacy": {"sample": self._report.summary()}} if self._report is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return {"accountants": self.hook.state_json()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "accountants" not in state:
            raise ConfigError("resume: the run has rounds but no sample-level accountant state; it was not run "
                              "with this privacy hook, so its epsilon cannot be continued")
        self.hook.load_state_json(state["accountants"])


class ClientLevelDP(RunComponent):
    """DP-FedAvg (McMahan et al. 2018) with optional adaptive clipping (Andrew et al. 2021)."""

    name = "privacy_client"

    def __init__(self, *, clip: ClientClip, noise: GaussianNoise, accountant: ClientLevelAccountant) -> None:
        self.clip, self.noise, self.accountant = clip, noise, accountant

    def configure_pipeline(self, pipeline: Any) -> Any:
        from trustfl.defenses.fedavg import FedAvg
        from trustfl.defenses.pipeline import Pipeline

        if any(isinstance(s, (ClientClip, GaussianNoise)) for s in pipeline.stages):
            raise ConfigError("privacy.client: the pipeline already has DP-FedAvg stages; the component adds "
                              "ClientClip and GaussianNoise itself")
        if not (isinstance(pipeline.aggregator, FedAvg) and not pipeline.aggregator.weighted):
            raise ConfigError(f"privacy.client: needs FedAvg(weighted=False) as the aggregator (equal weights bound "
                              f"one client's influence by C/m), got {pipeline.aggregator!r}")
        # a new pipeline: a pipeline passed in code is never mutated (reusing it must not stack DP stages)
        return Pipeline(pre=[*pipeline.pre, self.clip], aggregator=pipeline.aggregator,
                        post=[self.noise, *pipeline.post])

    def setup(self, context: RunContext) -> None:
        """Refuse a run whose sampling or estimator is not the one the accountant analyses."""
        fed = context.config.federation
        if fed.sampling != "poisson":
            raise ConfigError(f"federation.sampling: client-level DP accounts Poisson sampling of clients; set "
                              f"sampling = \"poisson\" (got {fed.sampling!r}: fixed-size rounds would make the "
                              "reported epsilon too small)")
        k, n, q = context.clients_per_round, context.num_clients, self.accountant.sample_rate
        if abs(q - k / n) > 1e-12 or any(e is None or abs(e - q * n) > 1e-9 * n
                                         for e in (self.clip.expected_clients, self.noise.expected_clients)):
            raise ConfigError(f"privacy.client: the accountant's sample_rate ({q}) and the stages' expected_clients "
                              f"({self.clip.expected_clients}, {self.noise.expected_clients}) must match the run: "
                              f"q = clients_per_round / num_clients = {k}/{n}, expected_clients = {k}")

    def empty_round(self, round: int, global_vector: torch.Tensor, *,
                    generator: torch.Generator) -> Aggregate | None:
        """No client sampled: the release is noise alone, N(0, z_Δ² C²) / (qN) (and the round is accounted)."""
        stats = self.clip.empty_round(generator)
        return self.noise.empty_round(global_vector.numel(), stats, dtype=global_vector.dtype, generator=generator)

    def check_budget(self, round: int) -> None:
        self.accountant.check_budget(round, who="client-level privacy budget")

    def after_round(self, report: RoundReport) -> dict[str, Any]:
        return self.accountant(report)  # accounts the round; BudgetExhausted (a StopFederation) ends the run

    def manifest(self) -> dict[str, Any]:
        return {"privacy_client_stages": {"noise": self.noise.get_config(), "clip": self.clip.get_config(),
                                             "sample_rate": self.accountant.sample_rate}}

    def manifest_update(self) -> dict[str, Any]:
        return {"privacy": {"client": self.accountant.summary()}}

    def state_dict(self) -> dict[str, Any]:
        return self.accountant.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.load_state_dict(state, who="client-level (privacy.client)")


def from_config(config: Any) -> list[RunComponent]:
    """The ``[privacy]`` section as components (none when it is empty)."""
    from trustfl.defenses.dp.sample_level import DPAdapterTraining

    settings, out = config.privacy, []
    if settings.sample is not None:
        out.append(SampleLevelDP(DPAdapterTraining.from_settings(settings.sample, rounds=config.federation.rounds,
                                                                 task=config.model.task)))
    c = settings.client
    if c is not None:
        q = config.clients_per_round / config.partition.num_clients
        z = c.noise_multiplier
        if z is None:
            assert c.target_epsilon is not None
            z = noise_multiplier_for(target_epsilon=c.target_epsilon, delta=c.delta, sample_rate=q,
                                     steps=config.federation.rounds)
        count_std = (c.count_noise_std if c.count_noise_std is not None else config.clients_per_round / 20.0) \
            if c.adaptive else None
        try:
            update_noise_multiplier(z, count_std)  # fail now, not in round 1
            out.append(ClientLevelDP(
                clip=ClientClip(clip_norm=c.clip_norm, adaptive=c.adaptive, target_quantile=c.target_quantile,
                                clip_lr=c.clip_lr, count_noise_std=count_std,
                                expected_clients=float(config.clients_per_round)),
                noise=GaussianNoise(noise_multiplier=z, expected_clients=float(config.clients_per_round)),
                accountant=ClientLevelAccountant(noise_multiplier=z, sample_rate=q, delta=c.delta,
                                                 max_epsilon=c.max_epsilon)))
        except ValueError as exc:
            raise ConfigError(f"privacy.client: {exc}") from exc
    return out


def validate(config: Any) -> None:
    """Cross-section check: client-level DP bounds one client's influence only with unweighted FedAvg."""
    if config.privacy.client is None:
        return
    srv = config.server
    if not (srv.aggregator == "fedavg" and srv.aggregator_options.get("weighted") is False):
        raise ConfigError(f"server.aggregator_options.weighted: client-level DP (privacy.client) needs aggregator "
                          f"= 'fedavg' with weighted = false (equal weights bound one client's influence by C/m), "
                          f"got aggregator={srv.aggregator!r}, aggregator_options={srv.aggregator_options}")
    if config.federation.sampling != "poisson":
        raise ConfigError(f"federation.sampling: client-level DP (privacy.client) needs sampling = \"poisson\" "
                          f"(each client joins a round independently with probability clients_per_round / "
                          f"num_clients: the sampling its accountant analyses), got {config.federation.sampling!r}")
    dp_stages = [s.get("name") for s in [*srv.pre, *srv.post] if str(s.get("name", "")).startswith("dp_")]
    if dp_stages:
        raise ConfigError(f"server.pre/server.post: privacy.client adds the dp_clip / dp_fedavg stages itself; "
                          f"remove {dp_stages}")
