"""Foundation models, LoRA adapters, the flat parameter layout and the frozen-prefix cache."""

from trustfl.models.layout import ParamLayout
from trustfl.models.loading import OFFLINE_MODELS, FoundationModel, cache_dir, load_fm, resolve_model_path
from trustfl.models.lora import LoraSettings, adapted_layer_indices, apply_lora, find_layer_stack
from trustfl.models.pooling import MaskedMeanPooler, use_mean_pooling
from trustfl.models.prefix_cache import FrozenPrefix, PrefixStore, pad_hidden

__all__ = sorted([
    "FoundationModel",
    "FrozenPrefix",
    "LoraSettings",
    "MaskedMeanPooler",
    "OFFLINE_MODELS",
    "ParamLayout",
    "PrefixStore",
    "adapted_layer_indices",
    "apply_lora",
    "cache_dir",
    "find_layer_stack",
    "load_fm",
    "pad_hidden",
    "resolve_model_path",
    "use_mean_pooling",
])
