"""Defenses: aggregation pipeline, robust aggregators and pre-aggregators (more in later issues:
DP, secure aggregation, dedup, unlearning). Import as ``trustfl.defenses``. See docs/defenses.md."""

from trustfl.defenses.base import (Aggregate, AggregateInfo, Aggregator, PostStage, PreAggregator, validate_updates,
                           validate_weights)
from trustfl.defenses.bulyan import Bulyan
from trustfl.defenses.centered_clipping import CenteredClipping
from trustfl.defenses.coordinate import CoordinateMedian, TrimmedMean
from trustfl.defenses.dnc import DnC
from trustfl.defenses.fedavg import FedAvg
from trustfl.defenses.flame import FLAME
from trustfl.defenses.fltrust import FLTrust, FLTrustRootHook
from trustfl.defenses.foolsgold import FoolsGold
from trustfl.defenses.geomed import GeometricMedian
from trustfl.defenses.krum import Krum, MultiKrum
from trustfl.defenses.pipeline import Pipeline
from trustfl.defenses.preagg import NNM, Bucketing, NormClip
from trustfl.defenses.registry import (available_aggregators, available_stages, build_pipeline, make_aggregator,
                                      make_stage, register_aggregator, register_stage)
from trustfl.defenses.dp import (BudgetExhausted, ClientClip, ClientLevelAccountant, ClientLevelSettings,
                                DPAdapterTraining, DPCheckError, GaussianNoise, PrivacySettings, SampleLevelSettings,
                                make_private, noise_share)

__all__ = sorted([
    "Bulyan",
    "Bucketing",
    "CenteredClipping",
    "CoordinateMedian",
    "DnC",
    "FLAME",
    "FLTrust",
    "FLTrustRootHook",
    "FoolsGold",
    "GeometricMedian",
    "Krum",
    "MultiKrum",
    "NNM",
    "NormClip",
    "TrimmedMean",
    "BudgetExhausted",
    "ClientClip",
    "ClientLevelAccountant",
    "ClientLevelSettings",
    "DPAdapterTraining",
    "DPCheckError",
    "GaussianNoise",
    "PrivacySettings",
    "SampleLevelSettings",
    "make_private",
    "noise_share",
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
