"""The federated LoRA loop, its client side, server round and engines (value types and contracts: trustfl.types)."""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "Batcher": "trustfl.federation.client",
    "Engine": "trustfl.federation.engine",
    "Federation": "trustfl.federation.loop",
    "FederatedClient": "trustfl.federation.clients",
    "RoundOutcome": "trustfl.federation.server",
    "ServerRound": "trustfl.federation.server",
    "LocalEngine": "trustfl.federation.engine",
    "LocalTrainer": "trustfl.federation.client",
    "RoundCallback": "trustfl.federation.hooks",
    "RunSummary": "trustfl.federation.loop",
    "derive_seed": "trustfl.seeding",
    "evaluate": "trustfl.federation.evaluate",
    "generator": "trustfl.seeding",
    "majority_baseline": "trustfl.federation.evaluate",
    "to_examples": "trustfl.federation.client",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
