"""Robust aggregation speed (issue 3): every registered aggregator and pre-aggregator on stacked
float32 updates ``[n, d]``, n in {20, 100}, d in {1e5, 1e6}, f = n // 10 attackers assumed.

* ``ratio_to_mean``: time / time of ``updates.mean(0)`` measured in the same cell (the one-pass
  memory floor, re-measured before every aggregator, median used); median of ``--reps`` runs
  after a warm-up (1 run for cells slower than 5 s).
* ``flower``: Flower's own functions (``flwr.server.strategy.aggregate``: ``aggregate_krum``,
  ``aggregate_median``, ``aggregate_trimmed_avg``, ``aggregate_bulyan``) on the same data as lists
  of ``([ndarray], num_examples)`` with equal counts: seconds, ``speedup`` = Flower / trustfl, and
  ``max_abs_diff`` of the outputs. Flower's Bulyan at n=100, d=1e6 would take tens of minutes
  (theta=80 Krum calls, each n^2 vector differences); it is estimated from one Flower Krum call
  there and marked ``"estimated": true``.

Usage: python benchmarks/aggregators.py [--reps 3] [--quick] [--out benchmarks/results/aggregators.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

SLOW_S = 5.0


def _time(fn, reps: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    fn()  # warm-up (also the only run when slow)
    first = time.perf_counter() - t0
    if first > SLOW_S or reps <= 1:
        return first, 1
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), reps


def _ours(n: int, d: int, f: int):
    from trustfl.defenses import make_aggregator, make_stage

    g0 = torch.full((d,), 0.001)
    aggs = {
        "fedavg": make_aggregator("fedavg", weighted=False),
        "median": make_aggregator("median"),
        "trimmed_mean": make_aggregator("trimmed_mean", f=f),
        "krum": make_aggregator("krum", f=f),
        "multi_krum": make_aggregator("multi_krum", f=f),
        "bulyan": make_aggregator("bulyan", f=f),
        "geometric_median": make_aggregator("geometric_median"),
        "centered_clipping": make_aggregator("centered_clipping", tau=1.0),
        "dnc": make_aggregator("dnc", f=f),
        "fltrust": make_aggregator("fltrust", root_update_fn=lambda: g0),
        "flame": make_aggregator("flame"),
        "foolsgold": make_aggregator("foolsgold"),
    }
    pre = {
        "pre:norm_clip(median)": make_stage("pre", "norm_clip", max_norm="median"),
        "pre:nnm": make_stage("pre", "nnm", f=f),
        "pre:bucketing(s=2)": make_stage("pre", "bucketing", s=2),
    }
    return aggs, pre


def _flower(u: torch.Tensor, f: int):
    from flwr.server.strategy import aggregate as fa

    arrays = [u[i].numpy() for i in range(u.shape[0])]  # views, no copy
    results = lambda: [([a], 1) for a in arrays]  # noqa: E731 (aggregate_bulyan pops from its list)
    n = u.shape[0]
    return {
        "krum": lambda: fa.aggregate_krum(results(), f, 0)[0],
        "multi_krum": lambda: fa.aggregate_krum(results(), f, n - f)[0],
        "median": lambda: fa.aggregate_median(results())[0],
        "trimmed_mean": lambda: fa.aggregate_trimmed_avg(results(), f / n)[0],
        "bulyan": lambda: fa.aggregate_bulyan(results(), f, fa.aggregate_krum, to_keep=0)[0],
    }


def run_cell(n: int, d: int, reps: int) -> dict:
    f = max(1, n // 10)
    u = torch.randn(n, d, generator=torch.Generator().manual_seed(n * 7 + d)) * 0.01
    # the baseline is re-measured before every aggregator (interleaved) and its median is used,
    # so a burst of load from other processes does not skew one side of a ratio
    base_runs = [_time(lambda: u.mean(dim=0), 5)[0]]
    cell: dict = {"n": n, "d": d, "f": f, "aggregators": {}}
    aggs, pre = _ours(n, d, f)
    outputs = {}
    for name, agg in {**aggs, **pre}.items():
        gen = torch.Generator().manual_seed(0)
        fn = (lambda a=agg: a(u, generator=gen))
        base_runs.append(_time(lambda: u.mean(dim=0), 5)[0])
        t, r = _time(fn, reps)
        out = fn()
        outputs[name] = out.vector if hasattr(out, "vector") else None
        cell["aggregators"][name] = {"seconds": t, "reps": r}
        print(f"  n={n} d={d:.0e} {name:24s} {t:8.4f} s", file=sys.stderr, flush=True)
    base_t = statistics.median(base_runs)
    cell["mean_s"] = base_t
    for entry in cell["aggregators"].values():
        entry["ratio_to_mean"] = entry["seconds"] / base_t
    krum_flower_s = None
    for name, fn in _flower(u, f).items():
        if name == "bulyan" and n >= 100 and d >= 1_000_000:
            # estimate: sum over the theta Krum calls of (m/n)^2 times one Flower Krum call at this size
            theta = n - 2 * f
            factor = sum((m / n) ** 2 for m in range(n, n - theta, -1))
            t, r, diff, est = krum_flower_s * factor, 0, None, True
        else:
            t, r = _time(fn, 1 if n >= 100 else reps)
            ref = np.asarray(fn()) if name != "bulyan" or n < 100 else None
            if ref is None:  # one run of Bulyan is enough; reuse the timed output
                ref = np.asarray(fn())
            diff = float(np.abs(ref - outputs[name].numpy()).max())
            est = False
        if name == "krum":
            krum_flower_s = t
        ours_t = cell["aggregators"][name]["seconds"]
        cell["aggregators"][name]["flower"] = {"seconds": t, "reps": r, "speedup": t / ours_t,
                                               "max_abs_diff": diff, "estimated": est}
        print(f"  n={n} d={d:.0e} flower {name:17s} {t:8.3f} s  speedup x{t / ours_t:6.1f} diff {diff}",
              file=sys.stderr, flush=True)
    return cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="d in {1e3, 1e4}: a smoke run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "aggregators.json"))
    args = parser.parse_args()
    dims = (1_000, 10_000) if args.quick else (100_000, 1_000_000)
    import flwr

    t0 = time.perf_counter()
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "numpy": np.__version__, "flwr": flwr.__version__},
        "cells": [run_cell(n, d, args.reps) for n in (20, 100) for d in dims],
    }
    result["total_seconds"] = time.perf_counter() - t0
    text = json.dumps(result, indent=1)
    print(text)
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
