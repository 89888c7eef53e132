"""Membership-inference costs (issue 11): records scored per second per attack, and the cost of one
shadow adapter vs one federated run, with and without the frozen-prefix cache.

Prints one JSON object:

1. ``scoring``: records/s of each attack's ``score`` on the same records, side by side in one
   process (median of ``--reps`` interleaved repetitions):
   * MiniLM + LoRA (top 2 blocks) classification on sms_spam: loss, reference (a second model),
     LiRA (fitted on precomputed shadow losses: one target pass), RMIA (target pass over the
     records and the population), gradient alignment (one backward per record);
   * SmolLM2-135M + LoRA (top 4 blocks) causal LM on health_tweets: loss, zlib, Min-K%, Min-K%++
     (vocabulary statistics), reference (base FM: a second full pass), and all five through
     ``score_attacks`` (one shared target pass + the base pass).
2. ``shadow_losses``: the shadows' per-record losses (what LiRA/RMIA need) by ``ShadowSet.losses`` (frozen
   prefix computed once, replayed per shadow) vs ``per_record_loss`` once per shadow, same adapters.
3. ``shadow_cost``: wall time of one federated run of the target config (``--rounds`` rounds) and of
   one shadow adapter (``train_shadow_adapters``, ``--shadow-rounds`` rounds, default the same, half the
   pool), each with adapters on the top 2 blocks with and without the frozen-prefix cache, interleaved
   ``--reps`` times in one process (medians; ``os.getloadavg()`` recorded next to each).

Usage: python benchmarks/mia.py [--reps 3] [--quick] [--threads 1] [--sections shadow_losses,...] [--out F]
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
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _rate(times: dict[str, list[float]], n: int) -> dict[str, dict[str, float]]:
    return {k: {"records_per_s": n / statistics.median(v), "seconds": statistics.median(v)} for k, v in times.items()}


def scoring_classification(n: int, reps: int) -> dict:
    from trustfl.attacks.membership import (GradientAlignmentAttack, LiRA, LiRAOnline, LossAttack, ReferenceAttack,
                                            RMIA, per_record_loss)
    from trustfl.data import load_dataset_source
    from trustfl.models import LoraSettings, ParamLayout, apply_lora, load_fm

    ds = load_dataset_source("sms_spam").shuffle(seed=0)
    records, population = ds.select(range(n)), ds.select(range(n, 2 * n))
    fm = load_fm("minilm", task="classification", num_labels=2, seed=0)
    torch.manual_seed(0)
    model = apply_lora(fm.model, LoraSettings(r=8, top_layers=2), task="classification")
    ref = load_fm("minilm", task="classification", num_labels=2, seed=1).model
    kw = dict(tokenizer=fm.tokenizer, task="classification", max_length=64, batch_size=32)
    shadow = torch.stack([per_record_loss(model, records, **kw)] * 4) + torch.rand(4, n)
    shadow_pop = torch.stack([per_record_loss(model, population, **kw)] * 2) + 0.1
    layout = ParamLayout.from_model(model)
    attacks = {
        "loss": LossAttack(),
        "reference (second model)": ReferenceAttack().fit(reference=ref),
        "lira offline (4 shadows, losses precomputed)": LiRA().fit(shadow_losses=shadow),
        "lira online (4 shadows, losses precomputed)": LiRAOnline().fit(
            shadow_losses=shadow, shadow_in=torch.arange(4)[:, None].expand(4, n) % 2 == 0),
        f"rmia (2 references, {n} population records)": RMIA().fit(reference_losses=shadow[:2], population=population,
                                                                   population_reference_losses=shadow_pop),
        "gradient alignment (1 update)": GradientAlignmentAttack().fit(updates=torch.randn(layout.size)),
    }
    times: dict[str, list[float]] = {k: [] for k in attacks}
    LossAttack().score(model, records.select(range(8)), **kw)  # warm-up
    for _ in range(reps):
        for name, attack in attacks.items():
            times[name].append(_timed(lambda: attack.score(model, records, **kw)))
    return {"model": "minilm + LoRA r=8 top 2 blocks", "records": n, "max_length": 64, **_rate(times, n)}


def scoring_causal(n: int, reps: int) -> dict:
    from trustfl.attacks.membership import (LossAttack, MinKPlusPlusAttack, MinKProbAttack, ReferenceAttack,
                                            ZlibAttack, score_attacks)
    from trustfl.data import load_dataset_source
    from trustfl.models import LoraSettings, apply_lora, load_fm

    records = load_dataset_source("health_tweets").shuffle(seed=0).select(range(n)).select_columns(["text"])
    fm = load_fm("smollm2-135m", task="causal_lm")
    torch.manual_seed(0)
    model = apply_lora(fm.model, LoraSettings(r=16, alpha=32, top_layers=4), task="causal_lm")
    kw = dict(tokenizer=fm.tokenizer, task="causal_lm", max_length=32, batch_size=16)
    attacks = {"loss": LossAttack(), "zlib": ZlibAttack(), "min_k": MinKProbAttack(), "min_k_pp": MinKPlusPlusAttack(),
               "reference (base FM)": ReferenceAttack().fit(reference="base")}
    times: dict[str, list[float]] = {k: [] for k in [*attacks, "all five via score_attacks"]}
    LossAttack().score(model, records.select(range(4)), **kw)  # warm-up
    for _ in range(reps):
        for name, attack in attacks.items():
            times[name].append(_timed(lambda: attack.score(model, records, **kw)))
        times["all five via score_attacks"].append(_timed(lambda: score_attacks(list(attacks.values()), model,
                                                                                 records, **kw)))
    return {"model": "smollm2-135m + LoRA r=16 top 4 blocks", "records": n, "max_length": 32, **_rate(times, n)}


def shadow_cost(records: int, rounds: int, shadow_rounds: int, reps: int) -> dict:
    """One federated run vs one shadow adapter, with and without the prefix cache, interleaved ``reps`` times in
    this one process (run+cache, shadow+cache, run, shadow, run+cache, ...) so load drifts hit every arm alike;
    medians, with os.getloadavg() next to each measurement."""
    from trustfl.attacks.membership import train_shadow_adapters
    from trustfl.config import RunConfig
    from trustfl.data import load_dataset_source
    from trustfl.federation import Federation

    pool = load_dataset_source("sms_spam").shuffle(seed=1).select(range(records))
    out: dict = {"records": records, "target_rounds": rounds, "shadow_rounds": shadow_rounds, "reps": reps,
                 "order": "interleaved: for each rep, with cache then without, run then shadow"}
    raw: dict = {k: {"federated_run_s": [], "one_shadow_s": [], "load_1min": []}
                 for k in ("with_cache", "without_cache")}
    for rep in range(reps):
        for cache in (True, False):
            cfg = RunConfig.from_dict({
                "name": "bench", "seed": 0, "model": {"name": "minilm", "max_length": 64},
                "lora": {"r": 8, "top_layers": 2, "cache_prefix": cache},
                "data": {"name": "sms_spam", "max_records": records},
                "partition": {"num_clients": 4, "scheme": "iid"},
                "client": {"batch_size": 16, "epochs": 1},
                "federation": {"rounds": rounds, "save_client_updates": False},
            })
            key = "with_cache" if cache else "without_cache"
            with tempfile.TemporaryDirectory() as tmp:
                raw[key]["load_1min"].append(os.getloadavg()[0])
                raw[key]["federated_run_s"].append(_timed(lambda: Federation(cfg, out_dir=f"{tmp}/run",
                                                                             progress=False).run()))
                t0 = time.perf_counter()
                shadows = train_shadow_adapters(cfg, pool, 1, f"{tmp}/shadows", rounds=shadow_rounds)
                raw[key]["one_shadow_s"].append(time.perf_counter() - t0)
                raw[key]["load_1min"].append(os.getloadavg()[0])
    for key, r in raw.items():
        run_s, shadow_s = statistics.median(r["federated_run_s"]), statistics.median(r["one_shadow_s"])
        out[key] = {"federated_run_s": run_s, "one_shadow_s": shadow_s, "shadow_over_run": shadow_s / run_s,
                    "raw": r}
    out["run_cache_speedup"] = out["without_cache"]["federated_run_s"] / out["with_cache"]["federated_run_s"]
    out["shadow_cache_speedup"] = out["without_cache"]["one_shadow_s"] / out["with_cache"]["one_shadow_s"]
    return out


def shadow_losses(records: int, shadows: int, reps: int) -> dict:
    """The shadows' per-record losses that LiRA and RMIA need: ``ShadowSet.losses`` (records tokenized and their
    frozen prefix computed once, the top blocks replayed per shadow) vs ``per_record_loss`` once per shadow (a
    full forward each), over the same ``shadows`` adapters, interleaved ``reps`` times, models built beforehand
    (only the scoring is timed)."""
    from trustfl.attacks.membership import per_record_loss, train_shadow_adapters
    from trustfl.config import RunConfig
    from trustfl.data import load_dataset_source

    ds = load_dataset_source("sms_spam").shuffle(seed=2)
    pool, scored = ds.select(range(200)), ds.select(range(200, 200 + records))
    cfg = RunConfig.from_dict({
        "name": "bench", "seed": 0, "model": {"name": "minilm", "max_length": 64},
        "lora": {"r": 8, "top_layers": 2, "cache_prefix": True}, "data": {"name": "sms_spam"},
        "partition": {"num_clients": 2, "scheme": "iid"}, "client": {"batch_size": 16, "epochs": 1},
        "federation": {"rounds": 1, "save_client_updates": False},
    })
    with tempfile.TemporaryDirectory() as tmp:
        trained = train_shadow_adapters(cfg, pool, shadows, f"{tmp}/shadows", rounds=1)
        _, tok = trained.model(0)  # builds the model side once (not timed)
        replay = "ShadowSet.losses (prefix once, top blocks per shadow)"
        full = "per_record_loss per shadow (full forward each)"

        def each_shadow() -> None:
            for i in range(len(trained)):
                m, _ = trained.model(i)
                per_record_loss(m, scored, tokenizer=tok, task="classification", max_length=64, batch_size=32)

        times: dict[str, list[float]] = {replay: [], full: []}
        loads = []
        for _ in range(reps):
            loads.append(os.getloadavg()[0])
            times[replay].append(_timed(lambda: trained.losses(scored, batch_size=32)))
            times[full].append(_timed(each_shadow))
        out = {"records": records, "shadows": len(trained), "reps": reps, "load_1min": loads,
               **{k: {"seconds": statistics.median(v), "record_shadow_pairs_per_s":
                      records * len(trained) / statistics.median(v), "raw_s": v} for k, v in times.items()}}
    out["speedup"] = out[full]["seconds"] / out[replay]["seconds"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    p.add_argument("--skip-causal", action="store_true")
    p.add_argument("--records", type=int, default=256, help="records scored (classification)")
    p.add_argument("--causal-records", type=int, default=32, help="records scored (SmolLM2)")
    p.add_argument("--shadow-pool", type=int, default=1200, help="records of the target run / shadow pool")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the target run")
    p.add_argument("--shadow-rounds", type=int, default=None, help="rounds of a shadow (default: --rounds, as the "
                   "audit trains them)")
    p.add_argument("--out", default=None, help="also write the JSON here (an existing file is updated: sections "
                   "run now replace theirs)")
    p.add_argument("--sections", default="shadow_cost,shadow_losses,scoring_classification,scoring_causal_lm",
                   help="comma-separated sections to run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    q = args.quick
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    known = {"shadow_cost", "shadow_losses", "scoring_classification", "scoring_causal_lm"}
    if not sections or set(sections) - known:
        p.error(f"--sections: unknown {sorted(set(sections) - known)}; choose from {sorted(known)}")
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg()},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }

    def done(key: str, value: dict) -> None:  # each section is printed (stderr) and saved as it finishes
        result[key] = value
        print(f"{key}: {json.dumps(value)}", file=sys.stderr, flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")

    rounds = 2 if q else args.rounds
    shadow_rounds = rounds if args.shadow_rounds is None else args.shadow_rounds
    reps = 1 if q else args.reps
    if args.out and Path(args.out).is_file():  # keep the sections not run now
        result = {**json.loads(Path(args.out).read_text()), **result}
    if "shadow_cost" in sections:
        done("shadow_cost", shadow_cost(200 if q else args.shadow_pool, rounds, shadow_rounds, reps))
    if "shadow_losses" in sections:
        done("shadow_losses", shadow_losses(32 if q else args.records, 2 if q else 8, reps))
    if "scoring_classification" in sections:
        done("scoring_classification", scoring_classification(32 if q else args.records, reps))
    if "scoring_causal_lm" in sections and not args.skip_causal:
        done("scoring_causal_lm", scoring_causal(8 if q else args.causal_records, reps))
    result["machine"]["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
