"""Local training of one client: load the global adapter, train (AdamW or SGD), return the delta.

One :class:`LocalTrainer` (one model in memory) serves every client of a run in turn; a
client is just its records. With adapters only on the top blocks, the trainer caches each
record's frozen-prefix output the first time the client trains
(:class:`trustfl.models.FrozenPrefix`) and afterwards trains the top blocks only.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from trustfl.types import ClientPrivacyHook, ClientResult, PrivacyContext
from trustfl.seeding import derive_seed, generator
from trustfl.models.layout import ParamLayout
from trustfl.models.prefix_cache import FrozenPrefix, PrefixStore, pad_hidden

__all__ = ["Batcher", "LocalTrainer", "local_steps", "to_examples"]

Example = dict[str, Any]


def to_examples(tokenized: Any) -> list[Example]:
    """Turn a tokenized ``datasets.Dataset`` (``input_ids`` [+ ``labels``]) into a list of dicts of tensors."""
    cols = tokenized.column_names
    ids = tokenized["input_ids"]
    labels = tokenized["labels"] if "labels" in cols else None
    out: list[Example] = []
    for i, seq in enumerate(ids):
        ex: Example = {"input_ids": torch.as_tensor(seq, dtype=torch.long)}
        if labels is not None:
            ex["labels"] = int(labels[i])
        out.append(ex)
    return out


def local_steps(batches_per_epoch: int, *, epochs: int, max_steps: int | None) -> int:
    """Optimizer steps a client takes in one round: ``epochs`` passes over its batches, capped by ``max_steps``.
    The server uses it too, to check the private steps a node reports (sample-level DP on Flower)."""
    steps = epochs * batches_per_epoch
    return steps if max_steps is None else min(steps, max_steps)


class Batcher:
    """Collate examples with dynamic (right) padding, plus the cached frozen prefix when present.

    Padding and labels come from :class:`trustfl.data.DynamicPaddingCollator`; examples that
    hold a cached prefix (``"prefix"``, [len, h]) get it zero-padded alongside into
    ``"prefix"`` [b, L, h].
    """

    def __init__(self, *, pad_token_id: int, task: str) -> None:
        from trustfl.data import DynamicPaddingCollator

        self.collate = DynamicPaddingCollator(pad_token_id=int(pad_token_id), task=task)  # type: ignore[arg-type]

    def __call__(self, items: Sequence[Example]) -> dict[str, torch.Tensor]:
        batch = self.collate(items)
        if "prefix" in items[0]:
            batch["prefix"] = pad_hidden([it["prefix"] for it in items], batch["input_ids"].shape[1])
        return batch


class LocalTrainer:
    """Trains the shared adapter model on one client's examples at a time.

    Args:
        model: the peft model (adapters + head trainable, FM frozen).
        layout: its :class:`ParamLayout`.
        batcher: collates examples into batches.
        epochs, max_steps, batch_size, lr, weight_decay, max_grad_norm: local optimisation
            (a fresh optimizer each round, as in FedAvg).
        optimizer, momentum: ``"adamw"`` or ``"sgd"`` (with heavy-ball ``momentum``).
        head_lr: learning rate of the task head (PEFT ``modules_to_save`` parameters); None = ``lr``.
        prefix: a :class:`FrozenPrefix` to cache and replay the frozen bottom blocks, or None.
        prefix_store: a :class:`PrefixStore` to share the cached prefix through disk across runs.
        privacy: a :class:`~trustfl.types.ClientPrivacyHook` wrapping training (e.g. DP-SGD), or None.
    """

    def __init__(self, model: nn.Module, layout: ParamLayout, batcher: Batcher, *, epochs: int = 1,
                 max_steps: int | None = None, batch_size: int = 16, lr: float = 5e-4,
                 weight_decay: float = 0.0, max_grad_norm: float | None = 1.0, optimizer: str = "adamw",
                 momentum: float = 0.0, head_lr: float | None = None, prefix: FrozenPrefix | None = None,
                 privacy: ClientPrivacyHook | None = None,
                 prefix_batch_size: int = 64, prefix_store: PrefixStore | None = None) -> None:
        self.model = model
        self.layout = layout
        self.batcher = batcher
        self.epochs, self.max_steps, self.batch_size = epochs, max_steps, batch_size
        self.lr, self.weight_decay, self.max_grad_norm = lr, weight_decay, max_grad_norm
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
        if momentum and optimizer != "sgd":
            raise ValueError(f"momentum={momentum} only applies to optimizer='sgd', not {optimizer!r}")
        self.optimizer, self.momentum, self.head_lr = optimizer, momentum, head_lr
        self.prefix = prefix
        self.privacy = privacy
        self.prefix_batch_size = prefix_batch_size
        self.prefix_store = prefix_store
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._head_params = [p for n, p in model.named_parameters() if p.requires_grad and "modules_to_save" in n]
        if head_lr is not None and not self._head_params:
            raise ValueError("head_lr is set but the model has no trainable head (PEFT modules_to_save) parameters")

    # ------------------------------------------------------------------ prefix cache
    def attach_prefix(self, examples: list[Example]) -> list[Example]:
        """Return ``examples`` with their frozen-prefix output cached (computed once, by length)."""
        if self.prefix is None or not examples or "prefix" in examples[0]:
            return examples
        if self.prefix_store is not None:
            key = self.prefix_store.key([ex["input_ids"] for ex in examples])
            stored = self.prefix_store.load(key)
            if stored is not None and len(stored) == len(examples):
                return [{**ex, "prefix": hidden} for ex, hidden in zip(examples, stored)]
        order = sorted(range(len(examples)), key=lambda i: int(examples[i]["input_ids"].shape[0]))
        out: list[Example] = [dict(ex) for ex in examples]
        for start in range(0, len(order), self.prefix_batch_size):
            idx = order[start:start + self.prefix_batch_size]
            batch = self.batcher([examples[i] for i in idx])
            cached = self.prefix.compute(batch["input_ids"], batch["attention_mask"])
            for i, hidden in zip(idx, cached):
                out[i]["prefix"] = hidden
        if self.prefix_store is not None:
            self.prefix_store.save(key, [ex["prefix"] for ex in out])
        return out

    def forward(self, batch: dict[str, torch.Tensor], *, model: nn.Module | None = None,
                with_labels: bool = True) -> Any:
        """Model forward on a collated batch, replaying the cached prefix when the batch has one.

        ``model`` overrides ``self.model`` (e.g. the Opacus-wrapped module a privacy hook returns;
        parameters are shared); ``with_labels=False`` skips the model's internal loss.
        """
        model = self.model if model is None else model
        keys = ("input_ids", "attention_mask", "labels") if with_labels else ("input_ids", "attention_mask")
        inputs = {k: batch[k] for k in keys}
        if "prefix" in batch:
            if self.prefix is None:
                raise ValueError("batch carries a cached prefix but the trainer has no FrozenPrefix")
            with self.prefix.replay(batch["prefix"]):
                return model(**inputs)
        return model(**inputs)

    # ------------------------------------------------------------------ training
    def num_steps(self, num_examples: int) -> int:
        return local_steps(math.ceil(num_examples / self.batch_size), epochs=self.epochs, max_steps=self.max_steps)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """A fresh local optimizer over the trainable parameters."""
        groups: list[dict[str, Any]] = [{"params": self._params}]
        if self.head_lr is not None:
            head = {id(p) for p in self._head_params}
            groups = [{"params": [p for p in self._params if id(p) not in head]},
                      {"params": self._head_params, "lr": self.head_lr}]
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)

    def train(self, client_id: int, examples: list[Example], global_vector: torch.Tensor, *, round: int,
              seed: int) -> ClientResult:
        """Train from ``global_vector`` on ``examples``; return the update ``delta = local - global``."""
        if not examples:
            raise ValueError(f"client {client_id}: has no training examples")
        start = time.perf_counter()
        self.layout.load_into(self.model, global_vector)
        torch.manual_seed(derive_seed(seed, "dropout", round, client_id))
        model: nn.Module = self.model
        model.train()
        optimizer = self.make_optimizer()
        loader: Any = DataLoader(examples, batch_size=self.batch_size, shuffle=True, collate_fn=self.batcher,
                                 generator=generator(seed, "shuffle", round, client_id))
        budget = self.num_steps(len(examples))
        context = PrivacyContext(client_id=client_id, round=round, num_samples=len(examples), seed=seed,
                                 planned_steps=budget)
        # A privacy hook may supply the module to run forward through (e.g. Opacus's wrapper) and a
        # per-sample-aware loss `loss(logits, batch, client_id=...)`; without one, HF's internal loss.
        loss_fn = self.privacy.loss if self.privacy is not None and self.privacy.custom_loss else None
        forward_model: nn.Module | None = None
        if self.privacy is not None:
            model, optimizer, loader = self.privacy.prepare(model, optimizer, loader, context=context)
            forward_model = model
        steps, seen, loss_sum = 0, 0, 0.0
        while steps < budget:
            yielded = 0
            for batch in loader:
                yielded += 1
                if batch["input_ids"].shape[0] == 0:  # Poisson sampling may draw an empty batch
                    continue
                if loss_fn is None:
                    loss = self.forward(batch, model=forward_model).loss
                else:
                    logits = self.forward(batch, model=forward_model, with_labels=False).logits
                    loss = loss_fn(logits, batch, client_id=client_id)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.max_grad_norm is not None and self.privacy is None:
                    torch.nn.utils.clip_grad_norm_(self._params, self.max_grad_norm)
                optimizer.step()
                steps += 1
                seen += int(batch["input_ids"].shape[0])
                loss_sum += float(loss.detach()) * int(batch["input_ids"].shape[0])
                if steps >= budget:
                    break
            if yielded == 0:  # a private loader that reached its step cap (noise-only steps count) yields nothing
                break
        metrics = {"train_loss": loss_sum / max(seen, 1), "steps": float(steps), "samples_seen": float(seen),
                   "train_seconds": time.perf_counter() - start}
        if self.privacy is not None:
            metrics.update(self.privacy.finish(context=context))
        delta = self.layout.flatten(self.model) - global_vector
        return ClientResult(client_id=client_id, delta=delta, num_samples=len(examples), metrics=metrics)
