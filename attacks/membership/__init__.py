"""Membership inference (installed as ``trustfl.attacks.membership``).

Scorers share one call shape, ``attack.fit(...).score(model, records, tokenizer=, task=)`` ->
float64 per record, higher = more likely a member; :func:`membership_metrics` turns member and
non-member scores into ROC AUC and TPR at low FPR with bootstrap CIs. See docs/membership.md.
"""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "CanaryComponent": "trustfl.attacks.membership.canaries",
    "CanarySettings": "trustfl.attacks.membership.canaries",
    "GradientAlignmentAttack": "trustfl.attacks.membership.server",
    "LiRA": "trustfl.attacks.membership.lira",
    "LiRAOnline": "trustfl.attacks.membership.lira",
    "LossAttack": "trustfl.attacks.membership.loss",
    "MembershipAttack": "trustfl.attacks.membership.base",
    "MembershipError": "trustfl.attacks.membership.errors",
    "MembershipMetrics": "trustfl.attacks.membership.metrics",
    "MinKPlusPlusAttack": "trustfl.attacks.membership.lm",
    "MinKProbAttack": "trustfl.attacks.membership.lm",
    "RMIA": "trustfl.attacks.membership.rmia",
    "ReferenceAttack": "trustfl.attacks.membership.reference",
    "ShadowSet": "trustfl.attacks.membership.shadows",
    "ZlibAttack": "trustfl.attacks.membership.lm",
    "base_model_loss": "trustfl.attacks.membership.reference",
    "canary_records": "trustfl.attacks.membership.canaries",
    "client_membership_scores": "trustfl.attacks.membership.server",
    "common_directions": "trustfl.attacks.membership.server",
    "gradient_alignment_scores": "trustfl.attacks.membership.server",
    "lira_scores": "trustfl.attacks.membership.lira",
    "lira_statistic": "trustfl.attacks.membership.lira",
    "membership_metrics": "trustfl.attacks.membership.metrics",
    "per_record_loss": "trustfl.attacks.membership.loss",
    "record_gradients": "trustfl.attacks.membership.server",
    "record_hash": "trustfl.attacks.membership.shadows",
    "rmia_log_scores": "trustfl.attacks.membership.rmia",
    "rmia_scores": "trustfl.attacks.membership.rmia",
    "roc_plot": "trustfl.attacks.membership.metrics",
    "score_attacks": "trustfl.attacks.membership.base",
    "train_shadow_adapters": "trustfl.attacks.membership.shadows",
    "zlib_length": "trustfl.attacks.membership.lm",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
