"""Copy detection against a whole corpus: all 63,326 health_tweets as references.

Queries: the synthetic records of a `trustfl origin --config` run plus `--plant` training tweets embedded
as 60-character slices. Methods exact, LCS (>= 50 chars, keyed N-gram index) and MinHash; reports the
time of each, the recall on the planted slices, and the time an all-pairs LCS scan would take (the
dynamic programme's measured cost per pair times the number of pairs). Writes
benchmarks/results/origin_scale.json.

    python benchmarks/origin_scale.py runs/synthetic_origin --plant 32
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from trustfl.audits.origin import detect_copies, longest_common_substring
from trustfl.data import health_tweets
from trustfl.text import TextKey, normalize_for_matching


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path, help="the --out folder of `trustfl origin --config ...`")
    ap.add_argument("--plant", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/origin_scale.json"))
    args = ap.parse_args()
    refs = health_tweets()["text"][:]
    synthetic = [json.loads(line)["text"] for line in (args.out_dir / "synthetic.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(args.seed)
    long_ = [i for i, t in enumerate(refs) if len(normalize_for_matching(t)) >= 80]
    planted_src = rng.choice(long_, size=args.plant, replace=False)
    queries = list(synthetic)
    for k, i in enumerate(planted_src):
        norm = normalize_for_matching(refs[i])
        s = int(rng.integers(0, len(norm) - 60 + 1))
        host = synthetic[k % len(synthetic)]
        queries.append(host[:len(host) // 2] + " " + norm[s:s + 60] + " " + host[len(host) // 2:])
    t0 = time.perf_counter()
    res = detect_copies(queries, refs, methods="exact,lcs,minhash", key=TextKey.generate())
    total = time.perf_counter() - t0
    n0 = len(synthetic)
    recall = float(np.mean(["lcs" in f.criteria for f in res.findings[n0:]]))
    flagged_synthetic = {m: sum(m in f.criteria for f in res.findings[:n0]) for m in res.methods}
    # cost of the exact DP per pair, measured on random query/reference pairs
    pairs = [(queries[int(rng.integers(len(queries)))], refs[int(rng.integers(len(refs)))]) for _ in range(300)]
    t1 = time.perf_counter()
    for a, b in pairs:
        longest_common_substring(normalize_for_matching(a), normalize_for_matching(b))
    per_pair = (time.perf_counter() - t1) / len(pairs)
    out = {"references": len(refs), "reference_chars": int(sum(len(normalize_for_matching(t)) for t in refs)),
           "queries": len(queries), "planted": args.plant, "recall_planted_lcs": recall,
           "flagged_synthetic": flagged_synthetic, "seconds": {k: round(v, 2) for k, v in res.seconds.items()},
           "total_s": round(total, 2), "dp_ms_per_pair": round(per_pair * 1e3, 3),
           "all_pairs_scan_estimate_s": round(per_pair * len(queries) * len(refs), 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
