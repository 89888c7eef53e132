"""Per-step time of DP-SGD (Opacus hooks, ghost clipping) vs non-private LoRA training on MiniLM.

One process, one fixed batch (32 sms_spam messages padded to 64 tokens), three copies of the
same LoRA model: non-DP AdamW, DP hooks, DP ghost. Modes are interleaved in every repetition
(so load from other jobs hits all alike); the ratio is the median of the per-repetition ratios.
Prints JSON. ``--top-layers 2`` measures adapters on the top 2 blocks only (the frozen prefix is
cached, as trustfl's client does).

    python benchmarks/dp_overhead.py [--reps 5] [--steps 5] [--top-layers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from torch import nn


def build(top_layers: int | None):
    from trustfl.models import FrozenPrefix, apply_lora, find_layer_stack, load_fm
    from trustfl.models.lora import LoraSettings

    fm = load_fm("minilm", task="classification", num_labels=2, seed=0)
    torch.manual_seed(0)
    model = apply_lora(fm.model, LoraSettings(r=8, alpha=16, top_layers=top_layers), task="classification").train()
    prefix = None
    if top_layers is not None:
        _, stack = find_layer_stack(model)
        prefix = FrozenPrefix(model, first_trainable=len(stack) - top_layers)
    return fm, model, prefix


def batch_of(fm, n: int = 32, length: int = 64) -> dict[str, torch.Tensor]:
    from trustfl.data import load_dataset_source

    texts = load_dataset_source("sms_spam")[:400]
    order = sorted(range(400), key=lambda i: -len(texts["text"][i]))[:n]  # long messages: fill 64 tokens
    enc = fm.tokenizer([texts["text"][i] for i in order], padding="max_length", truncation=True, max_length=length,
                       return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "labels": torch.tensor([texts["label"][i] for i in order])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top-layers", type=int, default=None)
    args = ap.parse_args()
    from trustfl.defenses.dp import make_private
    from trustfl.models.prefix_cache import pad_hidden

    modes = ["non_dp", "dp_hooks", "dp_ghost"]
    setups = {}
    for mode in modes:
        fm, model, prefix = build(args.top_layers)
        batch = batch_of(fm)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        if prefix is not None:
            cached = prefix.compute(batch["input_ids"], batch["attention_mask"])
            batch["prefix"] = pad_hidden(cached, batch["input_ids"].shape[1])
        if mode == "non_dp":
            setups[mode] = (model, opt, None, batch, prefix)
            continue
        examples = [{"i": i} for i in range(32 * 8)]  # the loader only sets q; the step uses `batch`
        loader = torch.utils.data.DataLoader(examples, batch_size=32)
        private = make_private(model, opt, loader, noise_multiplier=1.0, max_grad_norm=1.0,
                               grad_sample_mode=mode.split("_")[1])
        setups[mode] = (private.model, private.optimizer, private, batch, prefix)

    def step(mode: str) -> None:
        model, opt, private, batch, prefix = setups[mode]
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        ctx = prefix.replay(batch["prefix"]) if prefix is not None else _null()
        with ctx:
            if private is None:
                loss = model(**inputs, labels=batch["labels"]).loss
            else:
                loss = private.loss(model(**inputs).logits, batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for mode in modes:  # warm-up
        step(mode)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.reps):
        for mode in modes:
            t = time.perf_counter()
            for _ in range(args.steps):
                step(mode)
            times[mode].append((time.perf_counter() - t) / args.steps)
    ratios = {m: statistics.median(a / b for a, b in zip(times[m], times["non_dp"])) for m in modes[1:]}
    print(json.dumps({
        "model": "minilm", "lora_r": 8, "top_layers": args.top_layers, "batch": 32, "seq_len": 64,
        "reps": args.reps, "steps_per_rep": args.steps, "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "step_seconds_median": {m: statistics.median(v) for m, v in times.items()},
        "ratio_vs_non_dp": ratios,
    }, indent=2))


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


if __name__ == "__main__":
    main()
