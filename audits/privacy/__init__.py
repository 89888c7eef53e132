"""Privacy audit of a run directory (``trustfl audit privacy RUN_DIR``): membership inference on the final
global adapter (members = the clients' training records, non-members = their holdouts) with ROC AUC and TPR
at low FPR, and the one-run canary audit with an empirical ε lower bound (Steinke, Nasr & Jagielski 2023)
next to the accountant's ε. See docs/privacy_audit.md.
"""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "CanaryBound": "trustfl.audits.privacy.empirical",
    "EmpiricalEpsilonError": "trustfl.audits.privacy.empirical",
    "MembershipData": "trustfl.audits.privacy.records",
    "PrivacyAuditError": "trustfl.audits.privacy.settings",
    "PrivacyAuditResult": "trustfl.audits.privacy.audit",
    "PrivacyAuditSettings": "trustfl.audits.privacy.settings",
    "RunModel": "trustfl.audits.privacy.model",
    "canary_audit": "trustfl.audits.privacy.canary",
    "canary_epsilon": "trustfl.audits.privacy.empirical",
    "canary_guesses": "trustfl.audits.privacy.empirical",
    "empirical_epsilon": "trustfl.audits.privacy.empirical",
    "exposure": "trustfl.audits.privacy.exposure",
    "load_run_model": "trustfl.audits.privacy.model",
    "membership_audit": "trustfl.audits.privacy.membership",
    "membership_data": "trustfl.audits.privacy.records",
    "p_value": "trustfl.audits.privacy.empirical",
    "privacy_audit": "trustfl.audits.privacy.audit",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
