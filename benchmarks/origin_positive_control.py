"""Positive control for the origin checks on a real run: plant known copies among the sampled records.

After `trustfl origin --config examples/synthetic_origin.toml --out runs/synthetic_origin`, this takes
the run's synthetic records and the clients' training tweets, and adds `--plant` records of each kind:

* `exact`: a training tweet, upper-cased with extra spaces and punctuation (normalises to the tweet);
* `substring`: a 60-character slice of a training tweet between two halves of a synthetic record.

It reruns copy detection (all four methods, MiniLM) and the embedding DCR test on the mixed set and
reports recall on the planted records, flags on the original synthetic records and how the DCR
statistics move. Writes benchmarks/results/origin_positive_control.json.

    python benchmarks/origin_positive_control.py runs/synthetic_origin --plant 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from trustfl.audits.origin import TextCorpus, client_records, dcr_test, detect_copies
from trustfl.text import TextKey, embed_texts, normalize_for_matching


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path, help="the --out folder of `trustfl origin --config ...`")
    ap.add_argument("--plant", type=int, default=16, help="planted records per kind (default 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/origin_positive_control.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    synthetic = [json.loads(line)["text"] for line in (args.out_dir / "synthetic.jsonl").read_text().splitlines()]
    train, holdout, _ = client_records(args.out_dir / "run")
    rng = np.random.default_rng(args.seed)
    long_ = [i for i, t in enumerate(train.texts) if len(normalize_for_matching(t)) >= 80]
    pick = rng.choice(long_, size=2 * args.plant, replace=False)
    planted, truth = [], []
    for i in pick[:args.plant]:
        planted.append("  " + train.texts[i].upper() + " !!")
        truth.append(("exact", int(i)))
    for k, i in enumerate(pick[args.plant:]):
        norm = normalize_for_matching(train.texts[i])
        s = int(rng.integers(0, len(norm) - 60 + 1))
        host = synthetic[k % len(synthetic)]
        planted.append(host[:len(host) // 2] + " " + norm[s:s + 60] + " " + host[len(host) // 2:])
        truth.append(("substring", int(i)))
    texts = synthetic + planted
    syn = TextCorpus.from_texts(texts, name="synthetic+planted")
    emb_syn, emb_train, emb_hold = (embed_texts(list(x), progress=False) for x in (texts, train.texts, holdout.texts))
    res = detect_copies(syn, train, key=TextKey.generate(), synthetic_embeddings=emb_syn,
                        reference_embeddings=emb_train)
    n0 = len(synthetic)
    found = {kind: 0 for kind in ("exact", "substring")}
    right_ref = {kind: 0 for kind in ("exact", "substring")}
    by_method = {kind: {m: 0 for m in res.methods} for kind in found}
    for j, (kind, i) in enumerate(truth):
        f = res.findings[n0 + j]
        found[kind] += f.flagged
        right_ref[kind] += bool(f.reference) and f.reference["index"] == i
        for m in f.criteria:
            by_method[kind][m] += 1
    false_flags = sum(f.flagged for f in res.findings[:n0])
    d_orig = dcr_test(emb_syn[:n0], emb_train, emb_hold)
    d_mixed = dcr_test(emb_syn, emb_train, emb_hold)
    out = {"synthetic": n0, "planted_per_kind": args.plant, "recall": {k: v / args.plant for k, v in found.items()},
           "nearest_is_source": {k: v / args.plant for k, v in right_ref.items()}, "flags_by_method": by_method,
           "flagged_original_synthetic": int(false_flags),
           "dcr_embedding": {name: {"fraction_closer_to_train": d.fraction_closer_to_train,
                                    "binomial_p": d.binomial_p, "mannwhitney_p": d.mannwhitney_p}
                             for name, d in (("synthetic_only", d_orig), ("with_planted", d_mixed))},
           "seconds": round(time.perf_counter() - t0, 1)}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
