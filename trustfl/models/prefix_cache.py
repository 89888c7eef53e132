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

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from trustfl.models.lora import find_layer_stack

__all__ = ["FrozenPrefix", "PrefixStore", "pad_hidden"]


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


class PrefixStore:
    """A disk cache of frozen-prefix outputs, shared by runs that use the same frozen weights.

    The prefix output of a record depends only on the frozen weights below the first
    trainable block and on the record's token ids, so runs that differ in everything else
    (attacks, defenses, seeds: the cells of an evaluation matrix) can share it. The key is a
    sha256 over the frozen parameters, ``first_trainable`` and the token ids; files are
    written atomically, so concurrent workers may share a folder. Loaded tensors are the
    float32 values that were computed, bit for bit.
    """

    def __init__(self, root: str | os.PathLike[str], prefix: FrozenPrefix) -> None:
        self.root = Path(root)
        digest = hashlib.sha256(f"first_trainable={prefix.first_trainable}".encode())
        with torch.no_grad():
            for name, param in prefix.model.named_parameters():
                if not param.requires_grad:
                    digest.update(name.encode())
                    digest.update(param.detach().to(torch.float32).contiguous().numpy().tobytes())
        self.model_key = digest.hexdigest()[:16]

    def key(self, token_ids: Sequence[torch.Tensor]) -> str:
        digest = hashlib.sha256(self.model_key.encode())
        for ids in token_ids:
            digest.update(len(ids).to_bytes(4, "little"))
            digest.update(ids.to(torch.int64).numpy().tobytes())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / self.model_key / f"{key}.safetensors"

    def load(self, key: str) -> list[torch.Tensor] | None:
        """The cached per-record tensors for ``key``, or None (also for an unreadable file)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self._path(key)
        if not path.is_file():
            return None
        try:
            data = load_file(str(path))
        except (SafetensorError, OSError, RuntimeError):
            return None
        lengths = data["lengths"].tolist()
        return list(torch.split(data["hidden"], lengths)) if lengths else []

    def save(self, key: str, cached: Sequence[torch.Tensor]) -> None:
        from safetensors.torch import save

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = save({"hidden": torch.cat(list(cached)).contiguous(),
                        "lengths": torch.tensor([t.shape[0] for t in cached], dtype=torch.int64)})
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
