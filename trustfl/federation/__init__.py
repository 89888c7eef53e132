"""The federated LoRA loop, its client trainer, engines and plug-in hooks."""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "AttackContext": "trustfl.federation.hooks",
    "Batcher": "trustfl.federation.client",
    "ClientPrivacy": "trustfl.federation.hooks",
    "ClientResult": "trustfl.federation.hooks",
    "DataAttack": "trustfl.federation.hooks",
    "Engine": "trustfl.federation.engine",
    "Federation": "trustfl.federation.loop",
    "FederatedClient": "trustfl.federation.clients",
    "RoundOutcome": "trustfl.federation.server",
    "ServerRound": "trustfl.federation.server",
    "LocalEngine": "trustfl.federation.engine",
    "LocalTrainer": "trustfl.federation.client",
    "PrivacyContext": "trustfl.federation.hooks",
    "RoundCallback": "trustfl.federation.hooks",
    "RoundReport": "trustfl.federation.hooks",
    "RunSummary": "trustfl.federation.loop",
    "SecureAggregator": "trustfl.federation.hooks",
    "UpdateAttack": "trustfl.federation.hooks",
    "derive_seed": "trustfl.seeding",
    "evaluate": "trustfl.federation.evaluate",
    "generator": "trustfl.seeding",
    "majority_baseline": "trustfl.federation.evaluate",
    "to_examples": "trustfl.federation.client",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
