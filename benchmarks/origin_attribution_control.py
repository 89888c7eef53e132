"""Attribution control on a real run: can the scores tell G's samples from its *base model's* samples?

The example's attribution compares G's samples with human tweets. A stricter question is whether a
score picks out G rather than any language model: this samples `--num` texts from the base FM
(G with its adapters disabled) with the same sampler settings and first tokens as the run's
`synthetic.jsonl`, scores both sets under G with every attribution score, and reports the AUC of
G's samples (positives) against the base model's samples (negatives), and against the human texts
of the report. Writes benchmarks/results/origin_attribution_control.json.

    python benchmarks/origin_attribution_control.py runs/synthetic_origin_final --num 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from trustfl.audits.origin import (
    ATTRIBUTION_SCORES,
    attribution_scores,
    client_records,
    load_run_model,
    roc_auc,
    sample_texts,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path, help="the --out folder of `trustfl origin --config ...`")
    ap.add_argument("--num", type=int, default=64, help="texts per source (default 64)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/origin_attribution_control.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    report = json.loads((args.out_dir / "report.json").read_text())
    sampling = report["run"]["sampling"]
    synthetic = [json.loads(line)["text"] for line in (args.out_dir / "synthetic.jsonl").read_text().splitlines()]
    model, tok, _ = load_run_model(args.out_dir / "run")
    _, _, test = client_records(args.out_dir / "run")
    first = None
    skip = 0
    if sampling.get("first_token") == "test":
        first, skip = [ids[0] for ids in tok(test, add_special_tokens=False)["input_ids"] if ids], 1
    with model.disable_adapter():
        base = sample_texts(model, tok, num_samples=args.num, max_new_tokens=sampling["max_new_tokens"],
                            temperature=sampling["temperature"], top_k=sampling["top_k"], top_p=sampling["top_p"],
                            seed=args.seed, first_tokens=first, progress=True)
    rng = np.random.default_rng(args.seed)
    human = [test[i] for i in rng.permutation(len(test))[:args.num]]
    g_texts = synthetic[:args.num]
    scores = attribution_scores(model, tok, g_texts + base + human, scores=ATTRIBUTION_SCORES, skip_first=skip,
                                progress=True)
    n = len(g_texts)
    out = {"run": str(args.out_dir), "num": n, "sampling": sampling, "scores": {}}
    for name, v in scores.items():
        g, b, h = v[:n], v[n:n + len(base)], v[n + len(base):]
        out["scores"][name] = {"auc_g_vs_base_samples": roc_auc(g, b), "auc_g_vs_human": roc_auc(g, h),
                               "auc_base_samples_vs_human": roc_auc(b, h),
                               "mean": {"g": float(g.mean()), "base": float(b.mean()), "human": float(h.mean())}}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["torch_threads"] = torch.get_num_threads()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
