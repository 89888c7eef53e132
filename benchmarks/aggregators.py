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

``--coordinate`` (issue 14) runs only the coordinate-wise median and trimmed mean (f = n // 10) against
Flower at n = 100, d in {3e5, 1e6}, interleaved in one process: every repetition times, back to back,
``updates.mean(0)``, Flower's public function (on a list of client arrays, so its time includes the
``np.asarray`` stacking a Flower strategy does), Flower's core on the already stacked array
(``np.median(x, axis=0)`` / ``_trim_mean(x, f / n)``), and trustfl with 1 and with 2 threads. Wall and
process CPU seconds are recorded; a speedup is the median over repetitions of the per-repetition
ratio (so a burst of load from other processes hits both sides of a ratio alike). Outputs are
compared: ``max_abs_diff`` to Flower (0 expected for the median) and the per-client counts to a
numpy reference.

Usage: python benchmarks/aggregators.py [--reps 3] [--quick] [--out benchmarks/results/aggregators.json]
       python benchmarks/aggregators.py --coordinate [--reps 7] [--out benchmarks/results/aggregators_coordinate.json]
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
        kwargs = {"client_ids": list(range(n))} if agg.tracks_clients else {}  # FoolsGold keys state by client
        fn = (lambda a=agg, kw=kwargs: a(u, generator=gen, **kw))
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


def _timed(fn) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds over all threads, result) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def _with_threads(k: int, fn):
    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(k)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)
    return run


def run_coordinate_cell(n: int, d: int, reps: int) -> dict:
    """Median and trimmed mean vs Flower at one size, all variants interleaved in every repetition."""
    from flwr.server.strategy import aggregate as fa

    from trustfl.defenses import CoordinateMedian, TrimmedMean

    f = max(1, n // 10)
    u = torch.randn(n, d, generator=torch.Generator().manual_seed(n * 7 + d)) * 0.01
    x = u.numpy()
    arrays = [x[i] for i in range(n)]  # views, no copy: what a Flower strategy receives per client
    rules = {
        "median": {
            "flower": lambda: fa.aggregate_median([([a], 1) for a in arrays])[0],
            "flower_stacked": lambda: np.median(x, axis=0),
            "trustfl": lambda: CoordinateMedian()(u),
        },
        "trimmed_mean": {
            "flower": lambda: fa.aggregate_trimmed_avg([([a], 1) for a in arrays], f / n)[0],
            "flower_stacked": lambda: fa._trim_mean(x, f / n),  # noqa: SLF001 (Flower's own core, for the fair ratio)
            "trustfl": lambda: TrimmedMean(f=f)(u),
        },
    }
    variants = ("flower", "flower_stacked", "trustfl_1thread", "trustfl_2threads")
    runs: dict = {rule: {v: {"wall": [], "cpu": []} for v in variants} for rule in rules}
    mean_wall: list[float] = []
    outputs: dict = {}
    for rep in range(reps + 1):  # repetition 0 is the warm-up, not recorded
        for rule, fns in rules.items():
            calls = {"flower": fns["flower"], "flower_stacked": fns["flower_stacked"],
                     "trustfl_1thread": _with_threads(1, fns["trustfl"]),
                     "trustfl_2threads": _with_threads(2, fns["trustfl"])}
            wall, _, _ = _timed(lambda: u.mean(dim=0))
            if rep:
                mean_wall.append(wall)
            for v, fn in calls.items():
                wall, cpu, out = _timed(fn)
                if rep:
                    runs[rule][v]["wall"].append(wall)
                    runs[rule][v]["cpu"].append(cpu)
                outputs[(rule, v)] = out
            print(f"  n={n} d={d:.0e} rep {rep} {rule}: " + ", ".join(
                f"{v} {runs[rule][v]['wall'][-1] if rep else 0:.3f} s" for v in variants), file=sys.stderr, flush=True)
    cell: dict = {"n": n, "d": d, "f": f, "reps": reps, "mean_s": statistics.median(mean_wall), "rules": {}}
    for rule in rules:
        ours = outputs[(rule, "trustfl_1thread")]
        ref = np.asarray(outputs[(rule, "flower")])
        entry: dict = {v: {"wall_s": statistics.median(r["wall"]), "cpu_s": statistics.median(r["cpu"])}
                       for v, r in runs[rule].items()}
        for v in ("trustfl_1thread", "trustfl_2threads"):
            for base in ("flower", "flower_stacked"):
                for kind in ("wall", "cpu"):
                    ratios = [b / o for b, o in zip(runs[rule][base][kind], runs[rule][v][kind])]
                    entry[v][f"speedup_vs_{base}_{kind}"] = statistics.median(ratios)
            entry[v]["ratio_to_mean"] = entry[v]["wall_s"] / cell["mean_s"]
        entry["flower"]["ratio_to_mean"] = entry["flower"]["wall_s"] / cell["mean_s"]
        entry["max_abs_diff_vs_flower"] = float(np.abs(ref - ours.vector.numpy()).max())
        entry["same_output_1_vs_2_threads"] = bool(torch.equal(ours.vector, outputs[(rule, "trustfl_2threads")].vector))
        # per-client counts against a plain numpy reference (the semantics of info.scores)
        srt = np.sort(x, axis=0)
        lo, hi = ((n - 1) // 2, n // 2) if rule == "median" else (f, n - f - 1)
        inside = ((x >= srt[lo]) & (x <= srt[hi])).sum(axis=1)
        del srt
        key, want = ("median_frac", inside / d) if rule == "median" else ("trimmed_frac", (d - inside) / d)
        entry["counts_match_reference"] = bool(np.array_equal(ours.info.scores[key].numpy(), want))
        cell["rules"][rule] = entry
    return cell


def main_coordinate(args: argparse.Namespace) -> None:
    import os

    import flwr

    t0 = time.perf_counter()
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "numpy": np.__version__, "flwr": flwr.__version__,
                    "load_average_before": os.getloadavg()},
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cells": [run_coordinate_cell(100, d, args.reps) for d in ((3_000, 10_000) if args.quick
                                                                   else (300_000, 1_000_000))],
    }
    result["machine"]["load_average_after"] = os.getloadavg()
    result["total_seconds"] = time.perf_counter() - t0
    text = json.dumps(result, indent=1)
    print(text)
    if not args.quick:
        from trustfl.rundir.atomic import atomic_write_bytes

        out = Path(args.out or Path(__file__).parent / "results" / "aggregators_coordinate.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, (text + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 7 with --coordinate)")
    parser.add_argument("--quick", action="store_true", help="d in {1e3, 1e4}: a smoke run")
    parser.add_argument("--coordinate", action="store_true",
                        help="only median / trimmed mean vs Flower at n=100, d in {3e5, 1e6} (issue 14)")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/aggregators*.json)")
    args = parser.parse_args()
    if args.coordinate:
        args.reps = args.reps or 7
        main_coordinate(args)
        return
    args.reps = args.reps or 3
    args.out = args.out or str(Path(__file__).parent / "results" / "aggregators.json")
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
