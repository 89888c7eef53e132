"""Options of the privacy audit (``trustfl audit privacy`` flags, or ``options["privacy"]`` of ``trustfl audit``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from trustfl.audits.report.settings import AuditError

__all__ = ["DEFAULT_ATTACKS", "PrivacyAuditError", "PrivacyAuditSettings"]

# those available are run; the rest are reported as not run, with why
DEFAULT_ATTACKS = ("loss", "reference", "rmia", "lira", "lira_online", "gradient_alignment")


class PrivacyAuditError(AuditError):
    """A user error of the privacy audit (missing files, overlapping sets, a changed dataset); one line."""


@dataclass
class PrivacyAuditSettings:
    """What the privacy audit runs.

    Attributes:
        attacks: membership attacks by name (``trustfl.attacks.membership``); names not installed are reported.
        max_records: members and non-members scored at most (each side; a seeded sample), >= 2.
        fprs: target false-positive rates of the TPR (each in (0, 1)).
        bootstrap: bootstrap resamples of the CIs, >= 1.
        confidence: level of the CIs and of the empirical ε, in (0, 1).
        candidates: random candidate secrets for the canaries' exposure (Carlini et al. 2019), >= 1; at most
            10^secret_digits - m are drawn (distinct, none a canary; the cap is recorded).
        shadows: shadow federations for LiRA and RMIA (``trustfl.attacks.membership.train_shadow_adapters``): the
            run's recipe trained by the federated loop on a random part of a pool holding the audited members and
            non-members plus population records, so each audited record is IN some of them (a share ``in_fraction``
            <= 1/2) and OUT of the rest (the online setting); 0: those attacks are skipped.
        population: population records (non-members of everything) RMIA compares with, >= 1.
        update_rounds: the server's attack (``gradient_alignment``) uses each client's last this many stored
            updates, >= 1.
        batch_size: scoring batch size, >= 1.
        seed: seed of the sampling and the bootstrap, >= 0.
        membership / canaries: run the membership-inference part / the canary part.
        shadow: train the one-client shadow adapter (reference attack; canary scores calibrated by it); without
            it ``reference`` is skipped and canaries are scored by ``-loss``.
        progress: progress bars.
        cache: reuse cached scores in ``RUN_DIR/audit/privacy/cache`` (resumable audits).
    """

    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    max_records: int = 1000
    fprs: tuple[float, ...] = (0.01, 0.001)
    bootstrap: int = 500
    confidence: float = 0.95
    candidates: int = 200
    shadows: int = 2
    population: int = 300
    update_rounds: int = 2
    batch_size: int = 32
    seed: int = 0
    membership: bool = True
    shadow: bool = True
    canaries: bool = True
    progress: bool = False
    cache: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.attacks, str):
            self.attacks = tuple(a.strip() for a in self.attacks.split(",") if a.strip())
        self.attacks = tuple(self.attacks)
        self.fprs = tuple(self.fprs)
        for name in ("max_records", "bootstrap", "candidates", "batch_size", "seed", "shadows", "population",
                     "update_rounds"):
            v = getattr(self, name)
            low = {"max_records": 2, "seed": 0, "shadows": 0}.get(name, 1)
            if isinstance(v, bool) or not isinstance(v, int) or v < low or v > 10**7:
                raise PrivacyAuditError(f"privacy audit: {name}={v!r} must be an integer in [{low}, 10^7]")
        if not all(isinstance(a, str) and a for a in self.attacks):
            raise PrivacyAuditError(f"privacy audit: attacks={self.attacks!r} must be attack names")
        if not self.fprs or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f)
                                    and 0 < f < 1 for f in self.fprs):
            raise PrivacyAuditError(f"privacy audit: fprs={self.fprs!r} must be rates in (0, 1)")
        c = self.confidence
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or not 0 < c < 1:
            raise PrivacyAuditError(f"privacy audit: confidence={c!r} must be in (0, 1), e.g. 0.95")

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> "PrivacyAuditSettings":
        """From ``options["privacy"]`` of an ``AuditSettings`` (unknown keys rejected, listing the valid ones)."""
        options = dict(options or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise PrivacyAuditError(f"privacy audit: unknown option(s) {unknown}; valid: {sorted(names)}")
        return cls(**options)
