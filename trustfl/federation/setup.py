"""Build the model side of a run: the FM with LoRA adapters, its layout, prefix cache and trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trustfl.federation.client import Batcher, LocalTrainer
from trustfl.models import FrozenPrefix, ParamLayout, PrefixStore, apply_lora, find_layer_stack, load_fm
from trustfl.seeding import derive_seed

__all__ = ["ModelSide", "build_model_side"]


@dataclass
class ModelSide:
    fm: Any
    model: torch.nn.Module
    layout: ParamLayout
    trainer: LocalTrainer


def build_model_side(config: Any, *, num_labels: int | None, privacy: Any) -> ModelSide:
    """Load the FM, add adapters (seeded), cache the frozen prefix when adapters sit on the top blocks only."""
    cfg, seed = config, config.seed
    fm = load_fm(cfg.model.name, task=cfg.model.task, num_labels=num_labels, seed=derive_seed(seed, "head") % 2**32,
                 pooling=cfg.model.pooling)
    torch.manual_seed(derive_seed(seed, "lora"))
    model = apply_lora(fm.model, cfg.lora, task=cfg.model.task)
    layout = ParamLayout.from_model(model)
    prefix = None
    if cfg.lora.top_layers is not None and cfg.lora.cache_prefix:
        _, stack = find_layer_stack(model)
        first = len(stack) - cfg.lora.top_layers
        if first > 0:
            prefix = FrozenPrefix(model, first_trainable=first)
    store = PrefixStore(cfg.lora.prefix_cache_dir, prefix) if prefix and cfg.lora.prefix_cache_dir else None
    c = cfg.client
    trainer = LocalTrainer(model, layout, Batcher(pad_token_id=fm.pad_token_id, task=cfg.model.task),
                           epochs=c.epochs, max_steps=c.max_steps, batch_size=c.batch_size, lr=c.lr,
                           weight_decay=c.weight_decay, max_grad_norm=c.max_grad_norm, optimizer=c.optimizer,
                           momentum=c.momentum, head_lr=c.head_lr, prefix=prefix, privacy=privacy,
                           prefix_store=store)
    return ModelSide(fm=fm, model=model, layout=layout, trainer=trainer)
