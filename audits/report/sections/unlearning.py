"""Unlearning section: placeholder until the unlearning issue lands (linked runs and their verification)."""

from __future__ import annotations

from typing import Any

from trustfl.audits.report.result import NotChecked, SectionResult
from trustfl.audits.report.settings import AuditSettings

__all__ = ["audit"]


def audit(run: Any, settings: AuditSettings) -> SectionResult:
    return SectionResult(
        name="unlearning", status="unavailable",
        verdict="not checked: the unlearning issue has not landed yet",
        not_checked=[NotChecked("linked unlearning runs", "the unlearning issue has not landed yet")])
