"""The attacks plug-in: registers attacks, the ``[attack]`` and ``[canaries]`` config sections and their run components.

Light on purpose (imported whenever a config is loaded): factories are lazy ``"module:Name"`` strings.
"""

from __future__ import annotations

from trustfl.plugins import ATTACKS, register_component, register_section, register_validator

_A = "trustfl.attacks"
for _kind, _name, _target in [
    ("data", "label_flip", f"{_A}.data_poisoning:LabelFlip"),
    ("data", "backdoor", f"{_A}.data_poisoning:TextBackdoor"),
    ("data", "dba", f"{_A}.data_poisoning:DistributedBackdoor"),
    ("update", "sign_flip", f"{_A}.model_poisoning:SignFlip"),
    ("update", "gaussian", f"{_A}.model_poisoning:GaussianUpdate"),
    ("update", "scaling", f"{_A}.model_poisoning:Scaling"),
    ("update", "alie", f"{_A}.model_poisoning:ALIE"),
    ("update", "ipm", f"{_A}.model_poisoning:IPM"),
    ("update", "min_max", f"{_A}.model_poisoning:MinMax"),
    ("update", "min_sum", f"{_A}.model_poisoning:MinSum"),
]:
    ATTACKS.register(_kind, _name, _target)


def _components(config):  # type: ignore[no-untyped-def]
    from trustfl.attacks.component import from_config

    return from_config(config)


def _register() -> None:
    from trustfl.attacks.settings import AttackSettings, validate

    register_section("attack", AttackSettings, owner="trustfl.attacks")
    register_validator("trustfl.attacks", validate)
    register_component("trustfl.attacks", _components)
    from trustfl.attacks.membership.canaries import CanarySettings, canaries_from_config, validate_canaries

    register_section("canaries", CanarySettings, owner="trustfl.attacks")  # one-run privacy audit canaries
    register_validator("trustfl.attacks", validate_canaries)
    register_component("trustfl.attacks", canaries_from_config)


_register()
