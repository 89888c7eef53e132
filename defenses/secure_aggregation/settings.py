"""Typed settings of the ``[secure_aggregation]`` config section (light: imports nothing heavy)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from trustfl.errors import ConfigError

__all__ = ["SecureAggregationSettings"]


def _check(cond: bool, field: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"secure_aggregation.{field}: {msg}")


@dataclass
class SecureAggregationSettings:
    """Secure aggregation by MPC (docs/secure_aggregation.md).

    Attributes:
        enabled: run the federation's sums through the compute parties.
        parties: K compute parties (processes), >= 2; plus CrypTen's trusted third party.
        rendezvous: ``"loopback"``, ``"env"`` (``MASTER_ADDR``/``MASTER_PORT``) or ``"tcp://host:port"``.
        host: address the coordinator's control listener binds to.
        launch: ``"local"`` (start the parties here) or ``"external"`` (wait for parties started by hand,
            with the operator's key in ``TRUSTFL_MPC_AUTHKEY``; needs ``port`` and a non-loopback rendezvous).
        port: the coordinator's control listener port (0: any free port; required with ``"external"``).
        precision_bits: fixed-point precision p in [12, 20] (CrypTen's encoder; default 16).
        timeout: seconds any wait on a party may take.
        norm_bound: B, the per-client L2 bound applied on shares (unset: no bounding).
        over_bound: ``"scale"`` (clip to B) or ``"zero"`` (leave the update out of the sum).
        noise_multiplier: z, distributed DP noise N(0, z^2 B^2) on the sum (needs norm_bound and
            ``federation.sampling = "poisson"``, unweighted FedAvg; client-level accounting).
        delta: delta of the reported client-level epsilon.
        max_epsilon: budget; a round that would exceed it does not run.
        cosine_threshold: reveal per client the bit ``cos(update, previous global step) < tau`` (not with
            ``noise_multiplier``: the bits are outside the mechanism the accountant covers).
    """

    enabled: bool = False
    parties: int = 3
    rendezvous: str = "loopback"
    host: str = "127.0.0.1"
    launch: Literal["local", "external"] = "local"
    port: int = 0
    precision_bits: int = 16
    timeout: float = 300.0
    norm_bound: float | None = None
    over_bound: Literal["scale", "zero"] = "scale"
    noise_multiplier: float | None = None
    delta: float = 1e-5
    max_epsilon: float | None = None
    cosine_threshold: float | None = None

    def __post_init__(self) -> None:
        _check(not isinstance(self.parties, bool) and isinstance(self.parties, int) and self.parties >= 2, "parties",
               f"must be an int >= 2 (additive sharing among K parties), got {self.parties!r}")
        _check(self.rendezvous in ("loopback", "env") or str(self.rendezvous).startswith("tcp://"), "rendezvous",
               f"must be 'loopback', 'env' or 'tcp://host:port', got {self.rendezvous!r}")
        _check(not isinstance(self.port, bool) and isinstance(self.port, int) and 0 <= self.port <= 65535, "port",
               f"must be an int in [0, 65535], got {self.port!r}")
        _check(self.launch != "external" or (self.port != 0 and self.rendezvous != "loopback"), "launch",
               "'external': parties started by hand must know where to connect: set port and rendezvous = "
               "'tcp://host:port' or 'env'")
        _check(12 <= self.precision_bits <= 20, "precision_bits", f"must be in [12, 20], got {self.precision_bits}")
        _check(math.isfinite(self.timeout) and self.timeout > 0, "timeout", f"must be > 0 seconds, got {self.timeout}")
        _check(self.norm_bound is None or (math.isfinite(self.norm_bound) and 1e-4 <= self.norm_bound <= 1e3),
               "norm_bound", f"must be in [1e-4, 1e3] or unset, got {self.norm_bound}")
        _check(self.noise_multiplier is None or (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0),
               "noise_multiplier", f"must be > 0 (0 would mean no privacy) or unset, got {self.noise_multiplier}")
        _check(self.noise_multiplier is None or self.norm_bound is not None, "noise_multiplier",
               "DP noise needs norm_bound (the noise is calibrated to each client's bounded contribution)")
        _check(self.noise_multiplier is None or self.over_bound == "scale", "over_bound",
               "DP noise is calibrated to clipping; use over_bound = 'scale' with noise_multiplier")
        _check(0 < self.delta < 1, "delta", f"must be in (0, 1), got {self.delta}")
        _check(self.max_epsilon is None or self.max_epsilon > 0, "max_epsilon", f"must be > 0 or unset, got "
               f"{self.max_epsilon}")
        _check(self.max_epsilon is None or self.noise_multiplier is not None, "max_epsilon",
               "a budget needs noise_multiplier (without noise there is no epsilon to bound)")
        _check(self.cosine_threshold is None or -1 <= self.cosine_threshold <= 1, "cosine_threshold",
               f"must be in [-1, 1] or unset, got {self.cosine_threshold}")
        _check(self.cosine_threshold is None or self.noise_multiplier is None, "cosine_threshold",
               "reveals one bit per client per round outside the Gaussian mechanism, which the client-level "
               "accountant does not cover; unset it or noise_multiplier")
