"""LoRA adapters on a foundation model, via peft.

Only the adapter matrices (and, for classification, the task head) are trainable and
federated; the FM stays frozen. Adapters can be restricted to the top ``k`` transformer
blocks, which is what makes the frozen-prefix cache (:mod:`trustfl.models.prefix_cache`)
possible. LoRA: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from trustfl.errors import ConfigError

__all__ = ["LoraSettings", "apply_lora", "find_layer_stack", "adapted_layer_indices"]


@dataclass
class LoraSettings:
    """Typed LoRA configuration.

    Attributes:
        r: adapter rank (>= 1).
        alpha: LoRA scaling numerator (scale = alpha / r).
        dropout: dropout on the adapter input, in [0, 1).
        target_modules: module names to adapt; ``["auto"]`` uses peft's per-architecture
            defaults (BERT: query, value; Llama: q_proj, v_proj).
        layers: ``"all"`` or explicit block indices that get adapters.
        top_layers: if set, adapters only on the top ``k`` blocks (then ``layers`` must stay ``"all"``).
        cache_prefix: with ``top_layers``, compute the frozen bottom blocks once per record
            and train only the top blocks (see :mod:`trustfl.models.prefix_cache`).
        prefix_cache_dir: also keep those outputs in this folder, shared by later runs with the
            same frozen weights and records (e.g. the cells of ``trustfl eval``); unset: memory only.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["auto"])
    layers: Literal["all"] | list[int] = "all"
    top_layers: int | None = None
    cache_prefix: bool = True
    prefix_cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r: must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha: must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout: must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules: must name at least one module, or ['auto']")
        if self.layers != "all" and (not isinstance(self.layers, list) or not self.layers
                                     or any(i < 0 for i in self.layers)):
            raise ConfigError(f"lora.layers: must be 'all' or a non-empty list of block indices >= 0, "
                              f"got {self.layers!r}")
        if self.top_layers is not None and self.top_layers < 1:
            raise ConfigError(f"lora.top_layers: must be >= 1 or unset, got {self.top_layers}")
        if self.top_layers is not None and self.layers != "all":
            raise ConfigError(f"lora.top_layers: set either top_layers ({self.top_layers}) or an explicit "
                              f"layers list ({self.layers}), not both")


def find_layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Find the transformer block list (e.g. ``bert.encoder.layer``, ``model.layers``).

    It is the longest ``nn.ModuleList`` whose children all share one class; ties go to the
    first found. Raises ``ValueError`` if the model has none.
    """
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            kinds = {type(m) for m in module}
            if len(kinds) == 1 and (best is None or len(module) > len(best[1])):
                best = (name, module)
    if best is None:
        raise ValueError(f"{type(model).__name__} has no stack of transformer blocks (nn.ModuleList)")
    return best


def adapted_layer_indices(num_layers: int, settings: LoraSettings) -> list[int]:
    """Which block indices receive adapters under ``settings``, validated against the model."""
    if settings.top_layers is not None:
        if settings.top_layers > num_layers:
            raise ConfigError(f"lora.top_layers: the model has {num_layers} blocks, got {settings.top_layers}")
        return list(range(num_layers - settings.top_layers, num_layers))
    if settings.layers == "all":
        return list(range(num_layers))
    bad = [i for i in settings.layers if i >= num_layers]
    if bad:
        raise ConfigError(f"lora.layers: indices {bad} out of range for a model with {num_layers} blocks")
    return sorted(set(settings.layers))


def apply_lora(model: nn.Module, settings: LoraSettings, *, task: str) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters; only adapters (+ classification head) train.

    Returns the ``PeftModel``. Parameters are created deterministically from the current
    torch RNG state; seed it first for reproducible adapters.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    stack_name, stack = find_layer_stack(model)
    indices = adapted_layer_indices(len(stack), settings)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets: list[str] | None = None if settings.target_modules == ["auto"] else list(settings.target_modules)
    if targets is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

        if model_type not in defaults:
            raise ConfigError(f"lora.target_modules: no default for model type {model_type!r}; "
                              "name the modules to adapt, e.g. ['q_proj', 'v_proj']")
        targets = list(defaults[model_type])
    task_type = {"classification": TaskType.SEQ_CLS, "causal_lm": TaskType.CAUSAL_LM,
                 "embedding": TaskType.FEATURE_EXTRACTION}[task]
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=targets, task_type=task_type,
        layers_to_transform=None if len(indices) == len(stack) else indices,
        layers_pattern=None if len(indices) == len(stack) else stack_name.rsplit(".", 1)[-1],
    )
    try:
        with warnings.catch_warnings():  # peft 0.21 calls a helper transformers 5 deprecated
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, config)
    except ValueError as exc:
        if "target" not in str(exc).lower():
            raise
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(f"lora.target_modules: {targets} matched no module of {type(model).__name__} in "
                          f"blocks {indices}; its linear layers are named {linear}") from exc
    return peft_model
