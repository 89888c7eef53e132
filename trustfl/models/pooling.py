"""Masked mean pooling for encoder classification heads.

BERT-style ``*ForSequenceClassification`` models classify from a pooler over the first
([CLS]) token. Sentence encoders such as all-MiniLM-L6-v2 were trained with *mean* pooling
over the real tokens (Reimers & Gurevych 2019, Sentence-BERT), and their [CLS] pooler is
left over from pre-training: on sms_spam its outputs have mean pairwise cosine 0.69 against
0.14 for mean-pooled states, and a strongly regularised linear probe reaches 85 % on the
pooler against 93 % on the mean (the numbers are in docs/dp.md). Under DP-SGD, where every
step carries noise, well-spread features matter most (Tramèr & Boneh 2021, "Differentially
private learning needs better features"), so :func:`use_mean_pooling` swaps the pooler for
the mean over the attention mask.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trustfl.errors import ModelLoadError

__all__ = ["MaskedMeanPooler", "use_mean_pooling"]


class MaskedMeanPooler(nn.Module):
    """Mean of the last hidden states over the tokens the attention mask marks as real.

    The encoder calls its pooler with the hidden states only, so the mask arrives through a
    forward pre-hook on the encoder (:func:`use_mean_pooling` installs it) and is checked
    against the hidden states' shape on every call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if mask is None:
            return hidden_states.mean(dim=1)
        if tuple(mask.shape) != tuple(hidden_states.shape[:2]):
            raise RuntimeError(f"MaskedMeanPooler: attention mask {tuple(mask.shape)} does not match hidden states "
                               f"{tuple(hidden_states.shape[:2])}; was the encoder called without its pre-hook?")
        weights = mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def use_mean_pooling(model: nn.Module) -> nn.Module:
    """Replace the [CLS] pooler of a HF encoder classifier with :class:`MaskedMeanPooler` (in place).

    Works for architectures whose base encoder has a ``pooler`` submodule called on the last
    hidden states (BERT, MiniLM, RoBERTa-style with pooler). Raises ``ModelLoadError`` otherwise.
    """
    prefix = getattr(model, "base_model_prefix", "")
    encoder = getattr(model, prefix, None) if prefix else None
    if encoder is None or not isinstance(getattr(encoder, "pooler", None), nn.Module):
        raise ModelLoadError(f"pooling='mean' needs an encoder with a `pooler` submodule (BERT-style); "
                             f"{type(model).__name__} has none")
    if isinstance(encoder.pooler, MaskedMeanPooler):
        return model
    pooler = MaskedMeanPooler()
    encoder.pooler = pooler

    def remember_mask(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
            mask = args[1]
        pooler.mask = mask

    encoder.register_forward_pre_hook(remember_mask, with_kwargs=True)
    return model
