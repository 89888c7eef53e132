"""Audits (installed as ``trustfl.audits``): privacy, robustness, data origin and unlearning
audits that read a run directory (:class:`trustfl.rundir.RunDir`). ``run_audit`` (``trustfl audit``)
runs every section and writes one report; implementations of further sections arrive with their issues."""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "AuditReport": "trustfl.audits.report",
    "AuditSettings": "trustfl.audits.report",
    "Finding": "trustfl.audits.report",
    "NotChecked": "trustfl.audits.report",
    "SectionResult": "trustfl.audits.report",
    "run_audit": "trustfl.audits.report",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
