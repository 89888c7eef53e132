"""trustfl: private, trustworthy and auditable federated fine-tuning of foundation models.

Subpackages: ``trustfl.types`` (value types and stage contracts), ``trustfl.models`` (FM + LoRA),
``trustfl.data`` (offline corpora, partitioners), ``trustfl.federation`` (the loop, server round,
engines), ``trustfl.rundir`` (run directory), ``trustfl.defenses``, ``trustfl.attacks``,
``trustfl.audits``. Names load lazily, so ``import trustfl`` is cheap.
"""

from trustfl._version import __version__
from trustfl.lazy import lazy_exports

_EXPORTS = {
    "ConfigError": "trustfl.errors",
    "ModelLoadError": "trustfl.errors",
    "StopFederation": "trustfl.errors",
    "ToleranceError": "trustfl.errors",
    "TrustFLError": "trustfl.errors",
    "UpdateError": "trustfl.errors",
    "RunConfig": "trustfl.config",
    "load_config": "trustfl.config",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted([*_EXPORTS, "__version__"])
