"""Attacks (installed as ``trustfl.attacks``).

Data attacks (label flipping, text backdoors, DBA) and update attacks (sign flip, noise,
scaling, ALIE, IPM, min-max, min-sum) subclass the stage contracts of :mod:`trustfl.types`;
configs name them through the registry (``attack.data = {name = "backdoor", ...}``).
Privacy attacks are membership scorers (:mod:`trustfl.attacks.membership`)."""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "ALIE": "trustfl.attacks.model_poisoning",
    "AttackComponent": "trustfl.attacks.component",
    "AttackSettings": "trustfl.attacks.settings",
    "DistributedBackdoor": "trustfl.attacks.data_poisoning",
    "GaussianUpdate": "trustfl.attacks.model_poisoning",
    "GradientAlignmentAttack": "trustfl.attacks.membership",
    "IPM": "trustfl.attacks.model_poisoning",
    "LabelFlip": "trustfl.attacks.data_poisoning",
    "LiRA": "trustfl.attacks.membership",
    "LossAttack": "trustfl.attacks.membership",
    "MembershipAttack": "trustfl.attacks.membership",
    "MembershipError": "trustfl.attacks.membership",
    "MembershipMetrics": "trustfl.attacks.membership",
    "MinKPlusPlusAttack": "trustfl.attacks.membership",
    "MinKProbAttack": "trustfl.attacks.membership",
    "MinMax": "trustfl.attacks.model_poisoning",
    "MinSum": "trustfl.attacks.model_poisoning",
    "RMIA": "trustfl.attacks.membership",
    "ReferenceAttack": "trustfl.attacks.membership",
    "Scaling": "trustfl.attacks.model_poisoning",
    "ShadowSet": "trustfl.attacks.membership",
    "SignFlip": "trustfl.attacks.model_poisoning",
    "TextBackdoor": "trustfl.attacks.data_poisoning",
    "ZlibAttack": "trustfl.attacks.membership",
    "available_attacks": "trustfl.attacks.registry",
    "client_membership_scores": "trustfl.attacks.membership",
    "insert_trigger": "trustfl.attacks.data_poisoning",
    "make_attack": "trustfl.attacks.registry",
    "membership_metrics": "trustfl.attacks.membership",
    "per_record_loss": "trustfl.attacks.membership",
    "register_attack": "trustfl.attacks.registry",
    "roc_plot": "trustfl.attacks.membership",
    "score_attacks": "trustfl.attacks.membership",
    "train_shadow_adapters": "trustfl.attacks.membership",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
