"""trustfl: private, trustworthy and auditable federated fine-tuning of foundation models.

Subpackages: ``trustfl.models`` (FM + LoRA), ``trustfl.data`` (offline corpora,
partitioners), ``trustfl.federation`` (the loop), ``trustfl.rundir`` (run directory),
``trustfl.defenses``, ``trustfl.attacks``, ``trustfl.audits``.
"""

from trustfl.config import RunConfig, load_config
from trustfl.errors import ConfigError, ModelLoadError, StopFederation, ToleranceError, TrustFLError, UpdateError

__version__ = "0.1.0"

__all__ = sorted([
    "ConfigError",
    "ModelLoadError",
    "RunConfig",
    "StopFederation",
    "ToleranceError",
    "TrustFLError",
    "UpdateError",
    "__version__",
    "load_config",
])
