"""Defenses: aggregation pipeline and aggregators (more in later issues: robust aggregators,
DP, secure aggregation, dedup, unlearning). Import as ``trustfl.defenses``."""

from trustfl.defenses.base import (Aggregate, AggregateInfo, Aggregator, PostStage, PreAggregator, validate_updates,
                           validate_weights)
from trustfl.defenses.fedavg import FedAvg
from trustfl.defenses.pipeline import Pipeline
from trustfl.defenses.registry import (available_aggregators, available_stages, build_pipeline, make_aggregator,
                                      make_stage, register_aggregator, register_stage)

__all__ = sorted([
    "Aggregate",
    "AggregateInfo",
    "Aggregator",
    "FedAvg",
    "Pipeline",
    "PostStage",
    "PreAggregator",
    "available_aggregators",
    "available_stages",
    "build_pipeline",
    "make_aggregator",
    "make_stage",
    "register_aggregator",
    "register_stage",
    "validate_updates",
    "validate_weights",
])
