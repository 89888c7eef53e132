"""Verification of federated unlearning (:mod:`trustfl.defenses.unlearning`) and its audit section.

Compares unlearning runs with the exact baseline (retrain) on the forgotten clients: backdoor attack
success, membership-inference AUC, clean accuracy, distance of the adapters, wall time and client compute.
See docs/unlearning.md.
"""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "GOAL": "trustfl.audits.unlearning.verify",
    "MethodRow": "trustfl.audits.unlearning.verify",
    "Rebuilt": "trustfl.audits.unlearning.rebuild",
    "Verification": "trustfl.audits.unlearning.verify",
    "audit": "trustfl.audits.unlearning.section",
    "find_linked": "trustfl.audits.unlearning.section",
    "rebuild": "trustfl.audits.unlearning.rebuild",
    "verify_unlearning": "trustfl.audits.unlearning.verify",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
