"""Secure aggregation by MPC (CrypTen): clients secret-share, K compute parties sum, norm-bound and
noise on shares, the server learns only the result. See docs/secure_aggregation.md."""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "ClientShares": "trustfl.defenses.secure_aggregation.encoding",
    "MPCSecureAggregator": "trustfl.defenses.secure_aggregation.aggregator",
    "PartyFailure": "trustfl.defenses.secure_aggregation.pool",
    "PartyPool": "trustfl.defenses.secure_aggregation.pool",
    "SecureAggregation": "trustfl.defenses.secure_aggregation.component",
    "SecureAggregationError": "trustfl.defenses.secure_aggregation.pool",
    "SecureAggregationSettings": "trustfl.defenses.secure_aggregation.settings",
    "SecureDPRelease": "trustfl.defenses.secure_aggregation.release",
    "SecureRound": "trustfl.defenses.secure_aggregation.aggregator",
    "decode": "trustfl.defenses.secure_aggregation.encoding",
    "encode": "trustfl.defenses.secure_aggregation.encoding",
    "import_crypten": "trustfl.defenses.secure_aggregation.crypten_import",
    "share_update": "trustfl.defenses.secure_aggregation.encoding",
    "sum_error_bound": "trustfl.defenses.secure_aggregation.encoding",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
