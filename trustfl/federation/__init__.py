"""The federated LoRA loop, its client trainer, engines and plug-in hooks."""

from trustfl.federation.client import Batcher, LocalTrainer, to_examples
from trustfl.federation.engine import Engine, LocalEngine
from trustfl.federation.evaluate import evaluate, majority_baseline
from trustfl.federation.hooks import (AttackContext, ClientPrivacy, ClientResult, DataAttack, PrivacyContext,
                                      RoundCallback, RoundReport, SecureAggregator, UpdateAttack)
from trustfl.federation.loop import Federation, RunSummary
from trustfl.seeding import derive_seed, generator

__all__ = sorted([
    "AttackContext",
    "Batcher",
    "ClientPrivacy",
    "ClientResult",
    "DataAttack",
    "Engine",
    "Federation",
    "LocalEngine",
    "LocalTrainer",
    "PrivacyContext",
    "RoundCallback",
    "RoundReport",
    "RunSummary",
    "SecureAggregator",
    "UpdateAttack",
    "derive_seed",
    "evaluate",
    "generator",
    "majority_baseline",
    "to_examples",
])
