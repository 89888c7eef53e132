"""The ``[attack]`` config section (robustness evaluations), registered by the attacks plug-in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustfl.config import check
from trustfl.errors import ConfigError

__all__ = ["AttackSettings"]


@dataclass
class AttackSettings:
    """Who attacks and how.

    ``data`` and ``update`` are ``{name = "...", <options>}`` tables naming a registered attack
    (``trustfl.attacks.available_attacks("data" | "update")``). Attackers are the client ids in
    ``attackers``, or ``round(fraction * num_clients)`` clients drawn with the run seed.
    """

    data: dict[str, Any] | None = None
    update: dict[str, Any] | None = None
    attackers: list[int] | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        check(self.attackers is None or self.fraction is None, "attack", "set attackers or fraction, not both")
        check(self.fraction is None or 0 < self.fraction < 1, "attack.fraction",
              f"must be in (0, 1), got {self.fraction}")
        check(not self.active or self.attackers is not None or self.fraction is not None, "attack",
              "an attack is configured but no attackers: set attack.attackers or attack.fraction")
        from trustfl.attacks.registry import make_attack

        for kind, spec in (("data", self.data), ("update", self.update)):
            if spec is not None:
                try:
                    make_attack(kind, spec)  # type: ignore[arg-type]
                except ValueError as exc:
                    raise ConfigError(f"attack.{kind}: {exc}") from exc

    @property
    def active(self) -> bool:
        return self.data is not None or self.update is not None


def validate(config: Any) -> None:
    """Cross-section check: attacker ids must name clients of the partition."""
    n = config.partition.num_clients
    bad = [a for a in config.attack.attackers or [] if not 0 <= a < n]
    check(not bad, "attack.attackers", f"ids {bad} out of range [0, {n - 1}]")


