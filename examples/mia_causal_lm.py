"""Membership inference on a federated causal LM (issue 11, example (c)); numbers in docs/membership.md.

SmolLM2-135M + LoRA on the top blocks, fine-tuned by the federated loop on health_tweets (4 clients,
iid); members = the clients' training tweets, non-members = their holdout tweets (never trained on;
exact duplicates of member texts removed). Scores LOSS, zlib, Min-K% Prob, Min-K%++ and the
reference attack (base FM without the adapter) side by side, on one shared forward pass of the target
plus one of the base model, and writes ``OUT/mia_results.json`` and ``OUT/mia_roc.png``.

    python examples/mia_causal_lm.py --out runs/mia_causal_lm            # ~20-30 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/mia_causal_lm")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--records", type=int, default=400, help="tweets drawn from health_tweets")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    p.add_argument("--max-length", type=int, default=24)
    p.add_argument("--top-layers", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--k", type=float, default=0.2, help="Min-K%% fraction")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from trustfl.attacks.membership import (LossAttack, MinKPlusPlusAttack, MinKProbAttack, ReferenceAttack,
                                            ZlibAttack, membership_metrics, roc_plot, score_attacks)
    from trustfl.config import RunConfig
    from trustfl.federation import Federation
    from trustfl.rundir.atomic import atomic_write_bytes

    out = Path(args.out)
    config = RunConfig.from_dict({
        "name": "mia_causal_lm", "seed": 0,
        "model": {"name": args.model, "task": "causal_lm", "max_length": args.max_length},
        "lora": {"r": 16, "alpha": 32, "top_layers": args.top_layers},
        "data": {"name": "health_tweets", "max_records": args.records, "test_fraction": 0.1,
                 "holdout_fraction": 0.5},
        "partition": {"scheme": "iid", "num_clients": 4},
        "client": {"epochs": args.epochs, "batch_size": 8, "lr": args.lr},
        "federation": {"rounds": args.rounds, "eval_every": args.rounds},
    })
    t0 = time.perf_counter()
    fed = Federation(config, out_dir=out / "run", overwrite=True, progress=True)
    summary = fed.run()
    train_s = time.perf_counter() - t0
    from datasets import concatenate_datasets

    members = concatenate_datasets(list(fed.client_train.values())).select_columns(["text"])
    seen = set(members["text"])
    holdout = concatenate_datasets(list(fed.client_holdout.values())).select_columns(["text"])
    keep, kept_texts = [], set()
    for i, t in enumerate(holdout["text"]):
        if t not in seen and t not in kept_texts:
            keep.append(i)
            kept_texts.add(t)
    nonmembers = holdout.select(keep)
    n = min(len(members), len(nonmembers))
    members, nonmembers = members.select(range(n)), nonmembers.select(range(n))
    records = concatenate_datasets([members, nonmembers])
    attacks = [LossAttack(), ZlibAttack(), MinKProbAttack(k=args.k), MinKPlusPlusAttack(k=args.k),
               ReferenceAttack().fit(reference="base")]
    t1 = time.perf_counter()
    scores = score_attacks(attacks, fed.model, records, tokenizer=fed.fm.tokenizer, task="causal_lm",
                           max_length=args.max_length, batch_size=16, progress=True)
    score_s = time.perf_counter() - t1
    results, curves = {}, {}
    for name, s in scores.items():
        m = membership_metrics(s[:n], s[n:], fprs=(0.01, 0.001), bootstrap=1000, seed=0)
        results[name] = m.to_dict()
        curves[name] = (s[:n], s[n:])
    roc_plot(curves, out / "mia_roc.png")
    report = {"command": "python examples/mia_causal_lm.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "config": config.to_dict(), "members": n, "nonmembers": n,
              "final_eval": summary.final_metrics, "train_seconds": train_s, "score_seconds": score_s,
              "threads": args.threads, "attacks": {a.name: a.get_config() for a in attacks}, "results": results}
    atomic_write_bytes(out / "mia_results.json", json.dumps(report, indent=1).encode())
    print(f"{n} members / {n} non-members; test perplexity {summary.final_metrics.get('perplexity', float('nan')):.1f}")
    print(f"{'attack':<10} {'AUC':>6} {'95% CI':>15} {'TPR@1%FPR':>10} {'95% CI':>15}")
    for name, r in results.items():
        auc_ci, tpr, tpr_ci = r["auc_ci"], r["tpr_at_fpr"]["0.01"], r["tpr_at_fpr_ci"]["0.01"]
        print(f"{name:<10} {r['auc']:>6.3f} [{auc_ci[0]:.3f}, {auc_ci[1]:.3f}] {tpr:>10.3f} "
              f"[{tpr_ci[0]:.3f}, {tpr_ci[1]:.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
