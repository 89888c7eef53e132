"""What one audit section returns, and the contract every section function follows.

A section is ``audit(run: trustfl.rundir.RunDir, settings: AuditSettings) -> SectionResult``. It
states what it checked, what it found, what it could not check and why (nothing is silently
skipped), and a one-line verdict. Figures are PNG bytes, inlined into the HTML report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Finding", "NotChecked", "SectionResult", "Status"]

Status = Literal["pass", "warn", "fail", "unavailable"]


@dataclass
class Finding:
    """One thing a section found: a short title, its severity and JSON-able details."""

    title: str
    severity: Literal["info", "warn", "fail"] = "info"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class NotChecked:
    """Something the section could not check, and why (e.g. "no client updates stored")."""

    what: str
    why: str


@dataclass
class SectionResult:
    """The result of one audit section (written to report.json, rendered into report.html)."""

    name: str
    status: Status
    verdict: str  # one line
    checked: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    not_checked: list[NotChecked] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # tables/scores, JSON-able
    figures: dict[str, bytes] = field(default_factory=dict)  # name -> PNG bytes (not in report.json)
    seconds: float = 0.0
