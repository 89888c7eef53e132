"""Settings of one ``trustfl audit``: which sections run, their thresholds and free options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trustfl.errors import TrustFLError

__all__ = ["AuditError", "AuditSettings", "DEFAULT_THRESHOLDS"]

# Thresholds a section may read (settings.thresholds overrides any of them).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "epsilon_warn": 10.0,      # privacy: an accounted ε above this is flagged as a weak guarantee
    "epsilon_slack": 1e-6,     # privacy: relative slack before ε counts as above its target/budget
}


class AuditError(TrustFLError, ValueError):
    """A user error of an audit (unknown section, bad settings); one line."""


@dataclass
class AuditSettings:
    """What ``run_audit`` runs and how.

    Attributes:
        sections: section names to run, in registry order (``None``: all of them).
        thresholds: numeric thresholds read by sections (defaults: :data:`DEFAULT_THRESHOLDS`).
        progress: show a tqdm bar over the sections (and let sections show their own).
        options: free per-section options, e.g. ``{"public_key": "op.pub"}`` (integrity),
            ``{"origin_report": "path/report.json"}`` (data).
    """

    sections: list[str] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def threshold(self, name: str) -> float:
        """``thresholds[name]``, else its default."""
        if name in self.thresholds:
            return float(self.thresholds[name])
        if name not in DEFAULT_THRESHOLDS:
            raise AuditError(f"unknown audit threshold {name!r}; known: {', '.join(sorted(DEFAULT_THRESHOLDS))}")
        return DEFAULT_THRESHOLDS[name]
