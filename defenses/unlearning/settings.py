"""Options of the unlearning methods, validated at construction (one error line naming the field)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from trustfl.defenses.unlearning.errors import UnlearningError

__all__ = ["METHODS", "NEEDS_UPDATES", "Method", "UnlearnSettings"]

Method = Literal["retrain", "federaser", "pga", "rollback"]
METHODS: tuple[str, ...] = ("retrain", "federaser", "pga", "rollback")
# the methods that read the stored client updates (retrain replays the federation instead)
NEEDS_UPDATES: frozenset[str] = frozenset({"federaser", "pga", "rollback"})


@dataclass
class UnlearnSettings:
    """Method options (defaults chosen for >= 5x less client compute than retraining).

    Attributes:
        recovery_rounds: pga / rollback: federated rounds without the forgotten clients afterwards.
        calibration_ratio: federaser: calibration training length as a fraction of the run's local
            steps (Liu et al. 2021 use 1/2 of the local epochs).
        interval: federaser: calibrate every ``interval``-th round from the first one the clients took
            part in (Liu et al.'s retaining interval Δt, 2 in their experiments; the rounds in between are skipped).
        pga_lr: pga: SGD step size of the gradient ascent.
        pga_epochs: pga: passes over the forgotten clients' records, at most.
        radius_fraction: pga: radius of the L2 ball as a fraction of |reference - round-0 adapter|
            (Halimi et al. 2022 use a third of the distance from the reference to a random model).
        early_stop_accuracy: pga: stop the ascent once accuracy on the forgotten records falls below
            this (None: 1 / number of labels, chance level).
        batch_size: pga: batch size of the ascent (None: the run's client batch size).
        allow_nonlinear: rollback / pga: accept subtracting FedAvg contributions from a run whose pipeline was
            not a plain FedAvg (a robust aggregator, pre- or post-stages): then the subtraction is not the
            round's real contribution, only an approximation. Off by default (refused with an error); recorded
            in the manifest with the other settings.
    """

    recovery_rounds: int = 1
    calibration_ratio: float = 0.25
    interval: int = 2
    pga_lr: float = 0.01
    pga_epochs: int = 5
    radius_fraction: float = 1 / 3
    early_stop_accuracy: float | None = None
    batch_size: int | None = None
    allow_nonlinear: bool = False

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise UnlearningError(f"unlearning.{name}: {rule}, got {getattr(self, name)!r}")

        for name in ("recovery_rounds", "interval", "pga_epochs"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool), name, "must be an integer")
        check(self.recovery_rounds >= 0, "recovery_rounds", "must be >= 0")
        check(self.interval >= 1, "interval", "must be >= 1")
        check(self.pga_epochs >= 1, "pga_epochs", "must be >= 1")
        for name in ("calibration_ratio", "pga_lr", "radius_fraction"):
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"),
                  name, "must be a finite number")
        check(0 < self.calibration_ratio <= 1, "calibration_ratio", "must be in (0, 1]")
        check(self.pga_lr > 0, "pga_lr", "must be > 0")
        check(self.radius_fraction > 0, "radius_fraction", "must be > 0")
        check(self.early_stop_accuracy is None or (isinstance(self.early_stop_accuracy, (int, float))
                                                   and 0 <= self.early_stop_accuracy <= 1),
              "early_stop_accuracy", "must be in [0, 1] or unset")
        check(isinstance(self.allow_nonlinear, bool), "allow_nonlinear", "must be true or false")
        check(self.batch_size is None or (isinstance(self.batch_size, int) and self.batch_size >= 1),
              "batch_size", "must be an integer >= 1 or unset")

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> "UnlearnSettings":
        """Settings from ``{name: value}``; an unknown name is an error listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise UnlearningError(f"unlearning: unknown option(s) {unknown}; valid options: {valid}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
