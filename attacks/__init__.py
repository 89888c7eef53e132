"""Attacks (installed as ``trustfl.attacks``).

Data attacks (label flipping, text backdoors, DBA) and update attacks (sign flip, noise,
scaling, ALIE, IPM, min-max, min-sum) plug into the hooks of :mod:`trustfl.federation.hooks`;
configs name them through the registry (``attack.data = {name = "backdoor", ...}``).
Privacy attacks (scorers) arrive with the privacy-audit issue.
"""

from trustfl.attacks.data_poisoning import DistributedBackdoor, LabelFlip, TextBackdoor, insert_trigger
from trustfl.attacks.model_poisoning import ALIE, IPM, GaussianUpdate, MinMax, MinSum, Scaling, SignFlip
from trustfl.attacks.registry import available_attacks, make_attack, register_attack


__all__ = sorted([
    "ALIE",
    "DistributedBackdoor",
    "GaussianUpdate",
    "IPM",
    "LabelFlip",
    "MinMax",
    "MinSum",
    "Scaling",
    "SignFlip",
    "TextBackdoor",
    "available_attacks",
    "insert_trigger",
    "make_attack",
    "register_attack",
])
