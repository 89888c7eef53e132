"""Differential privacy for federated LoRA: sample-level DP-SGD (Opacus) and client-level DP-FedAvg.

Import as ``trustfl.defenses.dp`` (the public names are re-exported by ``trustfl.defenses``).
See docs/dp.md for which compositions keep which guarantee.
"""

from trustfl.defenses.dp.accounting import PrivacyLedger, epsilon, noise_multiplier_for
from trustfl.defenses.dp.client_level import ClientClip, GaussianNoise, clip_rows, noise_share, update_noise_multiplier
from trustfl.defenses.dp.reporting import BudgetExhausted, ClientLevelAccountant, SampleLevelReport
from trustfl.defenses.dp.sample_level import (DPAdapterTraining, DPCheckError, PrivateTraining, make_private,
                                              per_sequence_loss)
from trustfl.defenses.dp.settings import ClientLevelSettings, PrivacySettings, SampleLevelSettings

__all__ = sorted([
    "BudgetExhausted",
    "ClientClip",
    "ClientLevelAccountant",
    "ClientLevelSettings",
    "DPAdapterTraining",
    "DPCheckError",
    "GaussianNoise",
    "PrivacyLedger",
    "PrivacySettings",
    "PrivateTraining",
    "SampleLevelReport",
    "SampleLevelSettings",
    "clip_rows",
    "epsilon",
    "make_private",
    "noise_multiplier_for",
    "noise_share",
    "per_sequence_loss",
    "update_noise_multiplier",
])
