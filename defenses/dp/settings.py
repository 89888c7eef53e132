"""Typed settings of trustfl's two differential-privacy guarantees (the ``[privacy]`` config section).

* ``privacy.sample``: sample-level DP of each client's local LoRA training (DP-SGD, Abadi et
  al. 2016, "Deep Learning with Differential Privacy", CCS; via Opacus). The unit of privacy
  is one training record of one client; each client has its own accountant.
* ``privacy.client``: client-level DP of the federation (DP-FedAvg, McMahan et al. 2018,
  "Learning Differentially Private Recurrent Language Models", ICLR), with optional adaptive
  clipping (Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping",
  NeurIPS). The unit of privacy is one client's whole data set.

Either, both or neither may be set. Every field is checked in ``__post_init__`` and a bad
value is reported with its dotted path, the value and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trustfl.errors import ConfigError

__all__ = ["ClientLevelSettings", "PrivacySettings", "SampleLevelSettings"]


def _check(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: {msg}")


def _check_delta(delta: float, path: str) -> None:
    _check(0 < delta < 1, path, f"must be in (0, 1), got {delta}; typical: 1e-5 or below 1/(number of records)")


def _check_noise_or_target(target_epsilon: float | None, noise_multiplier: float | None, p: str) -> None:
    """Exactly one of ``target_epsilon`` / ``noise_multiplier``, and it must be > 0."""
    _check((target_epsilon is None) != (noise_multiplier is None), p,
           "set exactly one of target_epsilon or noise_multiplier, got "
           f"target_epsilon={target_epsilon}, noise_multiplier={noise_multiplier}")
    _check(target_epsilon is None or target_epsilon > 0, f"{p}.target_epsilon", f"must be > 0, got {target_epsilon}")
    _check(noise_multiplier is None or noise_multiplier > 0, f"{p}.noise_multiplier",
           f"must be > 0 (0 would mean no privacy at all), got {noise_multiplier}")


@dataclass
class SampleLevelSettings:
    """DP-SGD on every client's adapter (+ head) parameters through Opacus.

    Exactly one of ``target_epsilon`` (σ is solved per client so that ε reaches the target
    after ``federation.rounds`` rounds of local training, assuming the client takes part in
    every round: an upper bound) or ``noise_multiplier`` (fixed σ; ε is whatever accrues).

    Attributes:
        target_epsilon: ε to reach at ``delta`` after all rounds (> 0).
        noise_multiplier: σ, the noise std in units of ``max_grad_norm`` (> 0).
        delta: δ of the reported (ε, δ).
        max_grad_norm: per-sample L2 clipping norm C (> 0).
        grad_sample_mode: ``"hooks"`` (per-sample gradients materialized) or ``"ghost"``
            (fast gradient / ghost clipping, Li et al. 2022; two backward passes).
        accountant: ``"rdp"`` (default; Mironov 2017 / Mironov et al. 2019) or ``"prv"``
            (Gopi et al. 2021; Opacus's PRV accountant fails at large ε: Opacus #601/#604/#591).
    """

    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    grad_sample_mode: Literal["hooks", "ghost"] = "hooks"
    accountant: Literal["rdp", "prv"] = "rdp"

    def __post_init__(self) -> None:
        p = "privacy.sample"
        _check_noise_or_target(self.target_epsilon, self.noise_multiplier, p)
        _check_delta(self.delta, f"{p}.delta")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", f"must be > 0, got {self.max_grad_norm}")


@dataclass
class ClientLevelSettings:
    """DP-FedAvg on the server: clip each client update to C, average, add Gaussian noise.

    Exactly one of ``noise_multiplier`` (z: the noise std of the *sum* is z·C) or
    ``target_epsilon`` (z solved so that ε reaches the target after ``federation.rounds``).

    Attributes:
        noise_multiplier: z > 0.
        target_epsilon: ε to reach at ``delta`` after all rounds.
        clip_norm: C (> 0); with ``adaptive`` the initial C.
        adaptive: update C each round towards the ``target_quantile`` of update norms
            (Andrew et al. 2021, Algorithm 1, geometric update).
        target_quantile: γ in (0, 1).
        clip_lr: η_C > 0, the geometric learning rate of C.
        count_noise_std: σ_b, noise std of the clipped-count estimate; default
            ``clients_per_round / 20`` (Andrew et al. 2021, §3). Part of the same budget: the
            update noise becomes z_Δ = (z⁻² − (2σ_b)⁻²)^(-1/2) (their Theorem 1).
        delta: δ of the reported (ε, δ).
        max_epsilon: budget; the run stops cleanly after the last round that keeps ε ≤ it.
    """

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    clip_norm: float = 0.1
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_noise_std: float | None = None
    delta: float = 1e-5
    max_epsilon: float | None = None

    def __post_init__(self) -> None:
        p = "privacy.client"
        _check_noise_or_target(self.target_epsilon, self.noise_multiplier, p)
        _check(self.clip_norm > 0, f"{p}.clip_norm", f"must be > 0, got {self.clip_norm}")
        _check(0 < self.target_quantile < 1, f"{p}.target_quantile", f"must be in (0, 1), got {self.target_quantile}")
        _check(self.clip_lr > 0, f"{p}.clip_lr", f"must be > 0, got {self.clip_lr}")
        _check(self.count_noise_std is None or self.count_noise_std > 0, f"{p}.count_noise_std",
               f"must be > 0 or unset, got {self.count_noise_std}")
        _check(self.count_noise_std is None or self.adaptive, f"{p}.count_noise_std",
               "only applies with adaptive = true; remove it")
        _check_delta(self.delta, f"{p}.delta")
        _check(self.max_epsilon is None or self.max_epsilon > 0, f"{p}.max_epsilon",
               f"must be > 0 or unset, got {self.max_epsilon}")


@dataclass
class PrivacySettings:
    """The ``[privacy]`` section: ``sample`` and/or ``client`` level DP (both unset: no DP)."""

    sample: SampleLevelSettings | None = None
    client: ClientLevelSettings | None = None

    @property
    def enabled(self) -> bool:
        return self.sample is not None or self.client is not None
