"""Federated unlearning: forget clients of a finished run into a new run directory linked to it.

Methods: ``retrain`` (exact baseline), ``federaser`` (Liu et al. 2021), ``pga`` (Halimi et al. 2022),
``rollback`` (subtract stored contributions, then recover). ``trustfl unlearn RUN_DIR --client ID
--method M``; verification in :mod:`trustfl.audits.unlearning`. See docs/unlearning.md.
"""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "ForgetFederation": "trustfl.defenses.unlearning.linked",
    "METHODS": "trustfl.defenses.unlearning.settings",
    "NEEDS_UPDATES": "trustfl.defenses.unlearning.settings",
    "Plan": "trustfl.defenses.unlearning.plan",
    "UnlearnResult": "trustfl.defenses.unlearning.api",
    "UnlearnSettings": "trustfl.defenses.unlearning.settings",
    "UnlearningError": "trustfl.defenses.unlearning.errors",
    "calibrate": "trustfl.defenses.unlearning.vectors",
    "client_samples": "trustfl.defenses.unlearning.api",
    "default_out": "trustfl.defenses.unlearning.linked",
    "fedavg": "trustfl.defenses.unlearning.vectors",
    "make_plan": "trustfl.defenses.unlearning.plan",
    "project_l2_ball": "trustfl.defenses.unlearning.vectors",
    "projected_gradient_ascent": "trustfl.defenses.unlearning.pga",
    "round_contribution": "trustfl.defenses.unlearning.vectors",
    "unlearn": "trustfl.defenses.unlearning.api",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
