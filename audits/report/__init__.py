"""``trustfl audit``: one report (report.html + report.json) for a federated run directory.

Each section is ``audit(run: RunDir, settings: AuditSettings) -> SectionResult`` and states what it
checked, what it found, what it could not check and why, with a one-line verdict. Sections are
registered by name in :data:`SECTIONS` (``"module:function"``, loaded lazily).

Example:
    >>> from trustfl.audits.report import run_audit            # doctest: +SKIP
    >>> report = run_audit("runs/qs", sections="integrity,privacy")   # doctest: +SKIP
    >>> report.paths["html"]                                    # doctest: +SKIP
    'runs/qs/audit/report.html'
"""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "AUDIT_DIR": "trustfl.audits.report.runner",
    "AuditError": "trustfl.audits.report.settings",
    "AuditReport": "trustfl.audits.report.runner",
    "AuditSettings": "trustfl.audits.report.settings",
    "Finding": "trustfl.audits.report.result",
    "NotChecked": "trustfl.audits.report.result",
    "SECTIONS": "trustfl.audits.report.runner",
    "SectionResult": "trustfl.audits.report.result",
    "parse_sections": "trustfl.audits.report.runner",
    "render_html": "trustfl.audits.report.html",
    "run_audit": "trustfl.audits.report.runner",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
