"""Secure aggregation cost: trustfl's MPC (CrypTen parties) vs the plaintext sum vs Flower's SecAgg+.

For n clients in {10, 50} and d in {1e5, 1e6} parameters, in one run, prints JSON with:

* ``plain_s``: the server's plaintext sum of the n updates (``torch.stack(updates).sum(0)``);
* ``mpc_sum_s`` / ``mpc_clip_s``: one round of trustfl's secure aggregation (every client's encoding,
  sharing and sending included, then the parties' computation and the reveal), without and with
  in-MPC norm bounding; the parties are started once before (``startup_s``) and reused;
* ``flower_plain_s`` / ``flower_secaggplus_s``: one ``fit`` round of Flower's legacy FedAvg in its
  simulation runtime without and with ``SecAggPlusWorkflow`` (num_shares=3, reconstruction_threshold=2,
  Flower's example values; clients return a random vector of d float32 at once), last of 2 rounds;
* ratios, and bytes sent per client (trustfl: share data counted at the coordinator; Flower: the
  serialized reply contents of every SecAgg+ stage, summed per client).

Run: ``python benchmarks/secure_aggregation.py [--n 10 50] [--d 100000 1000000] [--skip-flower]``.
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
from pathlib import Path

import torch


def _updates(n: int, d: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(n * 7 + d)) * (1.0 / d ** 0.5)


def bench_trustfl(ns: list[int], ds: list[int], reps: int) -> dict:
    from trustfl.defenses.secure_aggregation import MPCSecureAggregator, PartyPool

    out: dict = {}
    t0 = time.perf_counter()
    with PartyPool(parties=3, timeout=1800) as pool:
        out["startup_s"] = time.perf_counter() - t0
        plain_agg = MPCSecureAggregator(pool=pool)
        clip_agg = MPCSecureAggregator(pool=pool, norm_bound=1.0)
        for n in ns:
            for d in ds:
                x = _updates(n, d)
                rows = {"plain_s": [], "mpc_sum_s": [], "mpc_clip_s": []}
                bytes_per_client = None
                for rep in range(reps + 1):  # the first repetition warms up
                    t = time.perf_counter()
                    torch.stack([x[i] for i in range(n)]).sum(0)
                    plain = time.perf_counter() - t
                    sent0 = pool.bytes_sent
                    t = time.perf_counter()
                    s = plain_agg.secure_sum(x)
                    mpc_sum = time.perf_counter() - t
                    bytes_per_client = (pool.bytes_sent - sent0) / n
                    t = time.perf_counter()
                    c = clip_agg.secure_sum(x)
                    mpc_clip = time.perf_counter() - t
                    assert (s.total - x.double().sum(0)).abs().max() < n * 2 ** -16
                    if rep:
                        rows["plain_s"].append(plain)
                        rows["mpc_sum_s"].append(mpc_sum)
                        rows["mpc_clip_s"].append(mpc_clip)
                    print(f"trustfl n={n} d={d} rep={rep}: plain {plain:.4f}s, mpc sum {mpc_sum:.3f}s, "
                          f"mpc clip {mpc_clip:.3f}s", file=sys.stderr, flush=True)
                    del c
                med = {k: statistics.median(v) for k, v in rows.items()}
                out[f"n={n},d={d}"] = {**med, "bytes_per_client": bytes_per_client, "reps": reps,
                                       "mpc_sum_added_s": med["mpc_sum_s"] - med["plain_s"],
                                       "mpc_clip_added_s": med["mpc_clip_s"] - med["plain_s"]}
    return out


# ---------------------------------------------------------------------------------------------- Flower
def bench_flower(n: int, ds: list[int], rounds: int, log_dir: Path) -> dict:
    """One simulation with n virtual SuperNodes; its ServerApp runs, for each d, FedAvg without then with SecAgg+."""
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.common.serde import recorddict_to_proto
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    timings: dict = {}
    windows: dict = {}
    size_log = log_dir / f"sizes_n{n}.jsonl"

    class Client(NumPyClient):
        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            d = parameters[0].shape[0]
            rng = np.random.default_rng(d)
            return [(rng.standard_normal(d) / d ** 0.5).astype(np.float32)], 1, {}

    def size_mod(msg, context, call_next):  # type: ignore[no-untyped-def]
        reply = call_next(msg, context)
        if reply.has_content():
            size = recorddict_to_proto(reply.content).ByteSize()
            with open(size_log, "a") as fh:
                fh.write(json.dumps({"node": int(context.node_id), "bytes": size, "t": time.time()}) + "\n")
        return reply

    client_app = ClientApp(client_fn=lambda context: Client().to_client(), mods=[size_mod, secaggplus_mod])
    server_app = ServerApp()

    class Timed:
        def __init__(self, inner, key):  # type: ignore[no-untyped-def]
            self.inner, self.key = inner, key

        def __call__(self, grid, context):  # type: ignore[no-untyped-def]
            t, wall = time.perf_counter(), time.time()
            self.inner(grid, context)
            timings.setdefault(self.key, []).append(time.perf_counter() - t)
            windows.setdefault(self.key, []).append((wall, time.time()))
            print(f"flower n={n} {self.key}: {timings[self.key][-1]:.2f}s", file=sys.stderr, flush=True)

    @server_app.main()
    def main(grid, context):  # type: ignore[no-untyped-def]
        for d in ds:
            for mode in ("plain", "secaggplus"):
                strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                                  initial_parameters=ndarrays_to_parameters([np.zeros(d, dtype=np.float32)]))
                legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
                fit = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2) if mode == "secaggplus" else None
                inner = DefaultWorkflow(fit_workflow=fit) if fit is not None else DefaultWorkflow()
                inner.fit_workflow = Timed(inner.fit_workflow, f"d={d},{mode}")
                inner(grid, legacy)

    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}}
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n, backend_config=backend)
    sizes = [json.loads(line) for line in size_log.read_text().splitlines()] if size_log.exists() else []
    result: dict = {}
    for d in ds:
        plain = timings.get(f"d={d},plain", [])
        sec = timings.get(f"d={d},secaggplus", [])
        entry: dict = {"flower_plain_s": plain[-1] if plain else None,
                       "flower_secaggplus_s": sec[-1] if sec else None, "rounds": rounds}
        for mode in ("plain", "secaggplus"):
            if windows.get(f"d={d},{mode}"):
                lo, hi = windows[f"d={d},{mode}"][-1]
                entry[f"flower_{mode}_bytes_per_client"] = sum(r["bytes"] for r in sizes if lo <= r["t"] <= hi) / n
        result[f"n={n},d={d}"] = entry
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--d", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--flower-rounds", type=int, default=2)
    ap.add_argument("--skip-flower", action="store_true")
    ap.add_argument("--skip-trustfl", action="store_true")
    ap.add_argument("--flower-n", type=int, nargs="*", default=None, help="n values Flower runs (default: --n)")
    ap.add_argument("--out", default="benchmarks/results/secure_aggregation.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
              "date_utc": started, "trustfl": {} if args.skip_trustfl else bench_trustfl(args.n, args.d, args.reps)}
    if not args.skip_flower:
        log_dir = Path(tempfile.mkdtemp(prefix="secagg_bench_"))
        flower: dict = {}
        for n in (args.flower_n if args.flower_n is not None else args.n):
            try:
                flower.update(bench_flower(n, args.d, args.flower_rounds, log_dir))
            except Exception as exc:  # a configuration this machine cannot run is reported, not hidden
                flower[f"n={n}"] = {"error": repr(exc)}
        report["flower"] = flower
    rows = []
    keys = [k for k in [*report["trustfl"], *report.get("flower", {})] if k.startswith("n=") and "," in k]
    for key in dict.fromkeys(keys):
        t = report["trustfl"].get(key, {})
        f = report.get("flower", {}).get(key, {})
        row = {"case": key, **t, **f}
        if f.get("flower_secaggplus_s") and t:
            row["secaggplus_over_mpc_clip"] = f["flower_secaggplus_s"] / t["mpc_clip_s"]
            row["secaggplus_over_mpc_sum"] = f["flower_secaggplus_s"] / t["mpc_sum_s"]
            if f.get("flower_plain_s"):
                row["secaggplus_added_s"] = f["flower_secaggplus_s"] - f["flower_plain_s"]
        rows.append(row)
    report["rows"] = rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
