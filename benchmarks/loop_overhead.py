"""Loop overhead and local-training throughput of trustfl's client (issue: foundation).

Prints one JSON object:

1. ``round_split``: a real federated round (MiniLM + LoRA, sms_spam, 8 clients) split into
   client compute vs everything else the loop adds (update stacking, aggregation, run-dir
   writes of every update and the global adapter); evaluation is reported separately.
2. ``throughput``: samples/s of local training, side by side in one process on the same
   model, data and batch size:
   * ``plain``: a plain PEFT + PyTorch loop (HF DataCollatorWithPadding, AdamW, backward, step),
   * ``trustfl``: trustfl's ``LocalTrainer`` (same optimiser, same data),
   * ``plain_top2`` / ``trustfl_top2_cache``: adapters on the top 2 blocks only, without and
     with the frozen-prefix cache (cache build time reported separately, it is paid once per
     client and run).
   Repetitions are interleaved and the median is reported.

Usage: python benchmarks/loop_overhead.py [--records 768] [--reps 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def _records(n: int, max_length: int):
    from trustfl.data import load_dataset_source

    ds = load_dataset_source("sms_spam").shuffle(seed=0).select(range(n))
    return ds


def _model(top_layers: int | None):
    from trustfl.models import LoraSettings, apply_lora, load_fm

    fm = load_fm("minilm", task="classification", num_labels=2, seed=0)
    torch.manual_seed(0)
    model = apply_lora(fm.model, LoraSettings(r=8, alpha=16, top_layers=top_layers), task="classification")
    return fm, model


def plain_loop(model, tokenizer, ds, *, batch_size: int, max_length: int, lr: float, seed: int) -> float:
    """The reference: what a user writes with PEFT + PyTorch. Returns samples/s."""
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    tok = ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True,
                 remove_columns=[c for c in ds.column_names if c != "label"]).rename_column("label", "labels")
    loader = DataLoader(tok, batch_size=batch_size, shuffle=True, collate_fn=DataCollatorWithPadding(tokenizer),
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    start = time.perf_counter()
    n = 0
    for batch in loader:
        out = model(**batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        n += batch["input_ids"].shape[0]
    return n / (time.perf_counter() - start)


def trustfl_client(trainer, examples, vector, *, seed: int) -> float:
    start = time.perf_counter()
    result = trainer.train(0, examples, vector, round=1, seed=seed)
    return result.metrics["samples_seen"] / (time.perf_counter() - start)


def throughput(records: int, reps: int, batch_size: int, max_length: int) -> dict:
    from trustfl.data import tokenize_dataset
    from trustfl.federation import Batcher, LocalTrainer, to_examples
    from trustfl.models import FrozenPrefix, ParamLayout, find_layer_stack

    ds = _records(records, max_length)
    out: dict = {"records": records, "batch_size": batch_size, "max_length": max_length, "reps": reps}
    runs: dict[str, list[float]] = {}
    setups = {}
    for top in (None, 2):
        fm, model = _model(top)
        layout = ParamLayout.from_model(model)
        vector = layout.flatten(model).clone()
        examples = to_examples(tokenize_dataset(ds, fm.tokenizer, max_length=max_length, task="classification"))
        prefix = None
        if top is not None:
            _, stack = find_layer_stack(model)
            prefix = FrozenPrefix(model, first_trainable=len(stack) - top)
        trainer = LocalTrainer(model, layout, Batcher(pad_token_id=fm.pad_token_id, task="classification"),
                               batch_size=batch_size, lr=1e-3, max_grad_norm=None, prefix=prefix)
        if prefix is not None:
            t0 = time.perf_counter()
            cached = trainer.attach_prefix(examples)
            out["cache_build_s"] = time.perf_counter() - t0
            out["cache_build_samples_per_s"] = len(examples) / out["cache_build_s"]
            out["cache_mb"] = sum(e["prefix"].numel() * 4 for e in cached) / 2**20
        setups[top] = (fm, model, layout, vector, examples, trainer, cached if prefix is not None else None)
    # warm-up once each, then interleave
    order = [("plain", None), ("trustfl", None), ("plain_top2", 2), ("trustfl_top2_cache", 2)]
    for rep in range(reps + 1):
        for name, top in order:
            fm, model, layout, vector, examples, trainer, cached = setups[top]
            layout.load_into(model, vector)
            if name.startswith("plain"):
                sps = plain_loop(model, fm.tokenizer, ds, batch_size=batch_size, max_length=max_length, lr=1e-3,
                                 seed=rep)
            else:
                sps = trustfl_client(trainer, cached if cached is not None else examples, vector, seed=rep)
            if rep > 0:
                runs.setdefault(name, []).append(sps)
            print(f"rep {rep} {name}: {sps:.1f} samples/s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in runs.items()}
    out["samples_per_s"] = med
    out["all_runs"] = runs
    out["ratio_trustfl_vs_plain"] = med["trustfl"] / med["plain"]
    out["ratio_cache_top2_vs_plain_full"] = med["trustfl_top2_cache"] / med["plain"]
    out["ratio_cache_top2_vs_plain_top2"] = med["trustfl_top2_cache"] / med["plain_top2"]
    return out


def round_split(rounds: int, max_records: int | None) -> dict:
    from trustfl.config import RunConfig
    from trustfl.federation import Federation

    result = {}
    for label, lora in (("top2_cache", {"top_layers": 2}), ("all_layers", {})):
        cfg = RunConfig.from_dict({
            "name": "bench", "model": {"max_length": 64}, "lora": lora,
            "data": {"name": "sms_spam", "max_records": max_records},
            "partition": {"num_clients": 8}, "client": {"lr": 1e-3}, "federation": {"rounds": rounds}})
        with tempfile.TemporaryDirectory() as tmp:
            fed = Federation(cfg, out_dir=f"{tmp}/run", progress=False)
            fed.run()
            # the last round: prefix caches are built in round 1 and count as client compute there
            t = fed.timings[-1]
            rest = t["server_s"] + t["write_s"] - 0.0
            loop = t["clients_s"] + rest
            d = fed.layout.size
        result[label] = {"d": d, "clients_s": t["clients_s"], "server_s": t["server_s"], "write_s": t["write_s"],
                         "eval_s": t["eval_s"], "rest_fraction": rest / loop, "timings": fed.timings}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=768)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.records, args.reps, args.rounds = 96, 1, 1
    torch.manual_seed(0)
    report = {
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"),
        "throughput": throughput(args.records, args.reps, args.batch_size, args.max_length),
        "round_split": round_split(args.rounds, 600 if args.quick else None),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
