"""Attacks (installed as ``trustfl.attacks``).

Data attacks (label flipping, text backdoors, DBA) and update attacks (sign flip, noise,
scaling, ALIE, IPM, min-max, min-sum) subclass the stage contracts of :mod:`trustfl.types`;
configs name them through the registry (``attack.data = {name = "backdoor", ...}``).
Privacy attacks (scorers) arrive with the privacy-audit issue."""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "ALIE": "trustfl.attacks.model_poisoning",
    "AttackComponent": "trustfl.attacks.component",
    "AttackSettings": "trustfl.attacks.settings",
    "DistributedBackdoor": "trustfl.attacks.data_poisoning",
    "GaussianUpdate": "trustfl.attacks.model_poisoning",
    "IPM": "trustfl.attacks.model_poisoning",
    "LabelFlip": "trustfl.attacks.data_poisoning",
    "MinMax": "trustfl.attacks.model_poisoning",
    "MinSum": "trustfl.attacks.model_poisoning",
    "Scaling": "trustfl.attacks.model_poisoning",
    "SignFlip": "trustfl.attacks.model_poisoning",
    "TextBackdoor": "trustfl.attacks.data_poisoning",
    "available_attacks": "trustfl.attacks.registry",
    "insert_trigger": "trustfl.attacks.data_poisoning",
    "make_attack": "trustfl.attacks.registry",
    "register_attack": "trustfl.attacks.registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
