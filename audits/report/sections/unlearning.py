"""Unlearning section of ``trustfl audit``: an unlearning run verified against its parent and retrain
(:mod:`trustfl.audits.unlearning`); any other run reports ``unavailable``."""

from __future__ import annotations

from typing import Any

from trustfl.audits.report.result import SectionResult
from trustfl.audits.report.settings import AuditSettings

__all__ = ["audit"]


def audit(run: Any, settings: AuditSettings) -> SectionResult:
    from trustfl.audits.unlearning.section import audit as unlearning_audit

    return unlearning_audit(run, settings)
