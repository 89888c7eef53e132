"""The bottom layer: value types, stage contracts and protocols. Imports nothing else of trustfl."""

from trustfl.types.components import (ClientDataContext, PipelineLike, RunComponent, RunContext, SecureAggregator,
                                      SecureRound, SecureSum, ServerView, TrustedSum)
from trustfl.types.distributed import DistributedDataStep, Payload, PayloadError
from trustfl.types.stages import (AggregatorStage, ClientPrivacyHook, DataAttackStage, PostStageBase, PreStage, Stage,
                                  UpdateAttackStage, config_value)
from trustfl.types.values import Aggregate, AggregateInfo, AttackContext, ClientResult, PrivacyContext, RoundReport

__all__ = sorted([
    "Aggregate",
    "AggregateInfo",
    "AggregatorStage",
    "AttackContext",
    "ClientDataContext",
    "ClientPrivacyHook",
    "ClientResult",
    "DataAttackStage",
    "DistributedDataStep",
    "Payload",
    "PayloadError",
    "PipelineLike",
    "PostStageBase",
    "PreStage",
    "PrivacyContext",
    "RoundReport",
    "RunComponent",
    "RunContext",
    "SecureAggregator",
    "SecureRound",
    "SecureSum",
    "ServerView",
    "Stage",
    "TrustedSum",
    "UpdateAttackStage",
    "config_value",
])
