"""Build trustfl's DP pieces from a run config's ``[privacy]`` section, and report/restore them.

Used by :class:`trustfl.federation.Federation`; kept here so the loop only calls three
functions: :func:`configure_privacy`, :func:`privacy_summary` and :func:`restore_privacy`.
"""

from __future__ import annotations

from typing import Any

from trustfl.defenses.dp.accounting import noise_multiplier_for
from trustfl.defenses.dp.client_level import ClientClip, GaussianNoise
from trustfl.defenses.dp.reporting import ClientLevelAccountant, SampleLevelReport
from trustfl.defenses.dp.sample_level import DPAdapterTraining
from trustfl.errors import ConfigError

__all__ = ["configure_privacy", "privacy_summary", "restore_privacy"]


def configure_privacy(config: Any, *, privacy: Any, pipeline: Any, pipeline_given: bool
                      ) -> tuple[Any, Any, list[Any]]:
    """Return ``(privacy hook, pipeline, round callbacks)`` for ``config.privacy``.

    * ``privacy.sample``: a :class:`DPAdapterTraining` hook (+ a :class:`SampleLevelReport`).
    * ``privacy.client``: the pipeline gets a :class:`ClientClip` as its last pre-stage and a
      :class:`GaussianNoise` as its first post-stage, plus a :class:`ClientLevelAccountant`
      with q = clients_per_round / num_clients.

    Raises:
        ConfigError: a hook/pipeline passed in code conflicts with the config, or the budget
            cannot afford one round.
    """
    settings = config.privacy
    callbacks: list[Any] = []
    if settings.sample is not None:
        if privacy is not None:
            raise ConfigError(f"privacy.sample: the config asks for sample-level DP but a privacy hook was passed "
                              f"too ({privacy!r}); use one of them")
        privacy = DPAdapterTraining.from_settings(settings.sample, rounds=config.federation.rounds,
                                                  task=config.model.task)
    if isinstance(privacy, DPAdapterTraining):
        callbacks.append(SampleLevelReport(privacy))
    c = settings.client
    if c is not None:
        if pipeline_given:
            raise ConfigError("privacy.client: builds the pipeline from server.* itself; pass pipeline=None, or "
                              "compose ClientClip/GaussianNoise in your pipeline and account with "
                              "ClientLevelAccountant yourself")
        q = config.clients_per_round / config.partition.num_clients
        z = c.noise_multiplier
        if z is None:
            assert c.target_epsilon is not None
            z = noise_multiplier_for(target_epsilon=c.target_epsilon, delta=c.delta, sample_rate=q,
                                     steps=config.federation.rounds)
        count_std = (c.count_noise_std if c.count_noise_std is not None else config.clients_per_round / 20.0) \
            if c.adaptive else None
        try:
            pipeline.pre.append(ClientClip(clip_norm=c.clip_norm, adaptive=c.adaptive,
                                           target_quantile=c.target_quantile, clip_lr=c.clip_lr,
                                           count_noise_std=count_std))
            noise = GaussianNoise(noise_multiplier=z)
            from trustfl.defenses.dp.client_level import update_noise_multiplier

            update_noise_multiplier(z, count_std)  # fail now, not in round 1
            pipeline.post.insert(0, noise)
            callbacks.append(ClientLevelAccountant(noise_multiplier=z, sample_rate=q, delta=c.delta,
                                                   max_epsilon=c.max_epsilon))
        except ValueError as exc:
            raise ConfigError(f"privacy.client: {exc}") from exc
    return privacy, pipeline, callbacks


def privacy_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The ε/δ part of a round's metrics (``privacy_sample``/``privacy_client``), without resume state."""
    out = {}
    for key, value in metrics.items():
        if key.startswith("privacy_") and isinstance(value, dict):
            out[key[len("privacy_"):]] = {k: v for k, v in value.items() if k != "state"}
    return out


def restore_privacy(callbacks: list[Any], history: list[dict[str, Any]]) -> None:
    """After a resume, put the accountants back where the completed rounds left them."""
    for cb in callbacks:
        if isinstance(cb, ClientLevelAccountant):
            cb.restore(len(history))
        elif isinstance(cb, SampleLevelReport):
            last = next((m["privacy_sample"] for m in reversed(history) if "privacy_sample" in m), None)
            if last is None and history:
                raise ConfigError("resume: the run has rounds but no sample-level privacy state in metrics.jsonl; "
                                  "it was not run with privacy.sample")
            if last is not None:
                cb.hook.load_state_json(last["state"])
