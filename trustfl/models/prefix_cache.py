"""Frozen-prefix cache: run the frozen bottom blocks once per record, train only the top.

When LoRA adapters sit only on the top ``k`` blocks, the bottom blocks (and embeddings) are
frozen and identical across every round and every local step, so their output for a
record never changes. :class:`FrozenPrefix` computes it once (``compute``) and replays it
(``replay``): during a replayed forward the bottom blocks are swapped for a module that
returns the cached hidden states, so local training runs the top ``k`` blocks only and
backpropagation stops there. This is the cost reduction of split/offsite tuning for
federated FMs (e.g. Xiao et al. 2023, "Offsite-Tuning"; FedBERT-style split training).

Semantics (documented difference from full-model training): the prefix is computed in
**eval mode**, so dropout inside the frozen blocks is off. The top blocks still train in
train mode. Replayed outputs equal a full eval-mode forward up to float rounding (a test
checks this). Records are cached unpadded; batches are right-padded with zeros, which the
attention mask hides from every real position.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from trustfl.models.lora import find_layer_stack

__all__ = ["FrozenPrefix", "pad_hidden"]


class _Done(Exception):
    def __init__(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden


class _Replay(nn.Module):
    """Stands in for a frozen block: ignores its input and returns the cached hidden states."""

    def __init__(self, owner: "FrozenPrefix") -> None:
        super().__init__()
        self._owner = [owner]  # a list, so the owner is not registered as a submodule

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        cached = self._owner[0]._current
        if cached is None:
            raise RuntimeError("FrozenPrefix: a replayed block ran outside `replay()`")
        if cached.shape[:2] != hidden_states.shape[:2]:
            raise ValueError(f"FrozenPrefix: cached hidden states {tuple(cached.shape)} do not match the "
                             f"batch {tuple(hidden_states.shape[:2])}; pad them with pad_hidden() to the "
                             "batch's padded length")
        return cached.to(hidden_states.dtype)


class FrozenPrefix:
    """Cache and replay the output of blocks ``[0, first_trainable)`` of ``model``.

    Args:
        model: the (peft-wrapped) model; its blocks below ``first_trainable`` must be frozen.
        first_trainable: index of the first block that has trainable parameters.

    Example:
        >>> prefix = FrozenPrefix(model, first_trainable=4)           # doctest: +SKIP
        >>> cached = prefix.compute(input_ids, attention_mask)        # list of [len_i, h]
        >>> with prefix.replay(pad_hidden(cached, input_ids.shape[1])):
        ...     out = model(input_ids=input_ids, attention_mask=attention_mask)
    """

    def __init__(self, model: nn.Module, *, first_trainable: int) -> None:
        _, stack = find_layer_stack(model)
        if not 0 < first_trainable < len(stack):
            raise ValueError(f"first_trainable: must be in [1, {len(stack) - 1}] for a model with "
                             f"{len(stack)} blocks, got {first_trainable}")
        frozen = [n for i in range(first_trainable) for n, p in stack[i].named_parameters() if p.requires_grad]
        if frozen:
            raise ValueError(f"FrozenPrefix: blocks below {first_trainable} have trainable parameters, "
                             f"e.g. {frozen[:2]}; their output cannot be cached")
        self.model = model
        self.stack = stack
        self.first_trainable = first_trainable
        self._current: torch.Tensor | None = None
        self._replays = [_Replay(self) for _ in range(first_trainable)]

    @torch.no_grad()
    def compute(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states after the frozen blocks, one unpadded ``[len_i, h]`` tensor per record."""
        was_training = self.model.training
        self.model.eval()

        def stop(_module: nn.Module, _inputs: object, output: object) -> None:
            raise _Done(output[0] if isinstance(output, tuple) else output)  # type: ignore[index]

        handle = self.stack[self.first_trainable - 1].register_forward_hook(stop)
        try:
            self.model(input_ids=input_ids, attention_mask=attention_mask)
        except _Done as done:
            hidden = done.hidden
        else:  # pragma: no cover - the hook always fires
            raise RuntimeError("FrozenPrefix: the last frozen block never ran")
        finally:
            handle.remove()
            self.model.train(was_training)
        lengths = attention_mask.sum(dim=1).tolist()
        return [hidden[i, : int(n)].clone() for i, n in enumerate(lengths)]

    @contextmanager
    def replay(self, hidden: torch.Tensor) -> Iterator[None]:
        """Within the block, forwards of ``model`` use ``hidden`` ([b, L, h]) as the prefix output."""
        originals = [self.stack[i] for i in range(self.first_trainable)]
        self._current = hidden
        try:
            for i, rep in enumerate(self._replays):
                self.stack[i] = rep
            yield
        finally:
            for i, block in enumerate(originals):
                self.stack[i] = block
            self._current = None


def pad_hidden(cached: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """Right-pad a list of ``[len_i, h]`` tensors with zeros into one ``[b, length, h]`` tensor."""
    if not cached:
        raise ValueError("pad_hidden: empty batch")
    h = cached[0].shape[-1]
    out = cached[0].new_zeros((len(cached), length, h))
    for i, t in enumerate(cached):
        if t.shape[0] > length:
            raise ValueError(f"pad_hidden: record {i} has {t.shape[0]} positions, more than length={length}")
        out[i, : t.shape[0]] = t
    return out
