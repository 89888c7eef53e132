"""Unlearning verification table: every method against retrain on one request (docs/unlearning.md).

Usage (after `trustfl run examples/unlearning.toml --out runs/unlearning` and `trustfl unlearn` with each
method):

    python benchmarks/unlearning.py runs/unlearning NAME=RUN_DIR [NAME=RUN_DIR ...] [--out results/unlearning.json]

Prints JSON (every row: clean accuracy, backdoor ASR, LOSS membership AUC on the forgotten client's records,
L2 / cosine distance to retrain, wall time, client samples processed, compute ratio, verdict) and the
markdown table. One process evaluates all runs on the same rebuilt model and data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parent", type=Path)
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR (one must be named retrain)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--mia-records", type=int, default=500)
    args = ap.parse_args(argv)
    from trustfl.audits.unlearning import verify_unlearning
    from trustfl.rundir import RunDir

    runs = {name: RunDir(path) for name, path in (r.split("=", 1) for r in args.runs)}
    v = verify_unlearning(RunDir(args.parent), runs, mia_records=args.mia_records, bootstrap=500, progress=True)
    out = {"machine": f"{os.cpu_count()} vCPU, torch {torch.__version__}, 1 intra-op thread", **v.to_dict(),
           "table": v.markdown()}
    text = json.dumps(out, indent=2, default=str)
    print(text)
    print(v.markdown(), file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
