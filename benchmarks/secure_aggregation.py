"""Secure aggregation cost: trustfl's MPC (CrypTen parties) vs the plaintext sum vs Flower's SecAgg+.

For n clients in {10, 50} and d in {1e5, 1e6} parameters, in one run, prints (and writes to --out)
JSON with, per point:

* ``plain_s``: the server's plaintext sum of the n updates (``torch.stack(updates).sum(0)``);
* ``mpc_sum_s`` / ``mpc_clip_s`` / ``mpc_clip_dp_s``: one round of trustfl's secure aggregation
  (every client's encoding, secret sharing and sending included, then the parties' computation and
  the reveal): a plain secure sum, with in-MPC norm bounding (B = 1), and with norm bounding plus
  distributed DP noise (z = 1); the parties are started once before (``startup_s``) and reused;
  median of ``--reps`` after one warm-up round; ``*_added_s`` = that minus ``plain_s``; split into
  ``*_clients_s`` (the n clients' encoding, sharing and sending, run one after another in this
  process; in a deployment each client does its own, in parallel) and ``*_parties_s`` (the
  parties' MPC and the reveal, after the last share arrived);
* ``flower_plain_s`` / ``flower_secaggplus_s``: one ``fit`` round of Flower's legacy FedAvg in its
  simulation runtime (Ray) without and with ``SecAggPlusWorkflow`` (num_shares=3,
  reconstruction_threshold=2, Flower's example values; clients return a random vector of d float32
  at once), after a warm-up round, last of ``--flower-rounds``;
* ratios, and bytes sent per client (trustfl: share data counted at the coordinator, the 32-byte
  keys apart; Flower: the serialized reply contents of every SecAgg+ stage, summed per client);
* ``load_before`` / ``load_after``: ``os.getloadavg()`` around each point (the machine may be shared).

A point that cannot run is reported with the reason (``error``), never dropped silently.

Examples::

    python benchmarks/secure_aggregation.py                       # the full grid (idle machine: ~15-30 min)
    python benchmarks/secure_aggregation.py --n 10 --d 1000000 --skip-flower   # the < 2 s goal alone
    python benchmarks/secure_aggregation.py --skip-trustfl --flower-n 50       # Flower's SecAgg+ at n = 50

Run it from the repository root with the project's interpreter (``.venv/bin/python``); it uses one
torch thread per process, 3 compute parties + CrypTen's dealer (4 processes) and, for Flower, a
Ray simulation with one CPU per virtual client (``--ray-cpus`` caps Ray's CPUs).
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


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def bench_trustfl(ns: list[int], ds: list[int], reps: int) -> dict:
    from trustfl.defenses.secure_aggregation import MPCSecureAggregator, PartyPool

    out: dict = {}
    t0 = time.perf_counter()
    with PartyPool(parties=3, timeout=1800) as pool:
        out["startup_s"] = time.perf_counter() - t0
        aggs = {"mpc_sum_s": MPCSecureAggregator(pool=pool),
                "mpc_clip_s": MPCSecureAggregator(pool=pool, norm_bound=1.0),
                "mpc_clip_dp_s": MPCSecureAggregator(pool=pool, norm_bound=1.0, noise_multiplier=1.0)}
        for n in ns:
            for d in ds:
                key = f"n={n},d={d}"
                load_before = _load()
                try:
                    x = _updates(n, d)
                    rows: dict = {}
                    sent: dict = {}
                    for rep in range(reps + 1):  # the first repetition warms up
                        t = time.perf_counter()
                        torch.stack([x[i] for i in range(n)]).sum(0)
                        times = {"plain_s": time.perf_counter() - t}
                        for name, agg in aggs.items():
                            sent0 = pool.bytes_sent
                            t = time.perf_counter()
                            secure = agg.open_round(rep, list(range(n)), dim=d)
                            for i in range(n):  # the clients' side: encode, share, send (sequential here)
                                secure.submit(i, x[i])
                            t_clients = time.perf_counter()
                            result = secure.finish()  # the parties' side: MPC and reveal
                            times[name] = time.perf_counter() - t
                            times[name[:-2] + "_clients_s"] = t_clients - t
                            times[name[:-2] + "_parties_s"] = time.perf_counter() - t_clients
                            sent[name[:-2] + "_bytes_per_client"] = (pool.bytes_sent - sent0) / n
                            if name == "mpc_sum_s":
                                assert (result.total - x.double().sum(0)).abs().max() < n * 2 ** -16
                            del result
                        if rep:
                            for name, v in times.items():
                                rows.setdefault(name, []).append(v)
                        print(f"trustfl {key} rep={rep}: " + ", ".join(f"{k} {v:.3f}" for k, v in times.items()),
                              file=sys.stderr, flush=True)
                    med = {k: statistics.median(v) for k, v in rows.items()}
                    out[key] = {**med, **sent, "bytes_per_client": sent["mpc_sum_bytes_per_client"], "reps": reps,
                                **{k[:-2] + "_added_s": med[k] - med["plain_s"] for k in aggs},
                                "load_before": load_before, "load_after": _load()}
                    del x
                except Exception as exc:  # reported, not hidden (e.g. out of memory on a small machine)
                    out[key] = {"error": repr(exc), "load_before": load_before, "load_after": _load()}
    return out


# ---------------------------------------------------------------------------------------------- Flower
def bench_flower(n: int, ds: list[int], rounds: int, log_dir: Path, ray_cpus: int | None) -> dict:
    """One simulation with n virtual SuperNodes; its ServerApp runs a warm-up round (d = 16), then, for each d,
    FedAvg without then with SecAgg+ (``rounds`` rounds each, the last one timed)."""
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
    loads: dict = {}
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
            before = _load()
            t, wall = time.perf_counter(), time.time()
            self.inner(grid, context)
            timings.setdefault(self.key, []).append(time.perf_counter() - t)
            windows.setdefault(self.key, []).append((wall, time.time()))
            loads[self.key] = (before, _load())
            print(f"flower n={n} {self.key}: {timings[self.key][-1]:.2f}s", file=sys.stderr, flush=True)

    @server_app.main()
    def main(grid, context):  # type: ignore[no-untyped-def]
        for d, mode, r in [(16, "warmup", 1)] + [(d, m, rounds) for d in ds for m in ("plain", "secaggplus")]:
            strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                              initial_parameters=ndarrays_to_parameters([np.zeros(d, dtype=np.float32)]))
            legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=r), strategy=strategy)
            fit = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2) if mode == "secaggplus" else None
            inner = DefaultWorkflow(fit_workflow=fit) if fit is not None else DefaultWorkflow()
            inner.fit_workflow = Timed(inner.fit_workflow, f"d={d},{mode}")
            inner(grid, legacy)

    init_args: dict = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    if ray_cpus:
        init_args["num_cpus"] = ray_cpus
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init_args}
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n, backend_config=backend)
    sizes = [json.loads(line) for line in size_log.read_text().splitlines()] if size_log.exists() else []
    result: dict = {}
    for d in ds:
        plain = timings.get(f"d={d},plain", [])
        sec = timings.get(f"d={d},secaggplus", [])
        entry: dict = {"flower_plain_s": plain[-1] if plain else None,
                       "flower_secaggplus_s": sec[-1] if sec else None, "flower_rounds": rounds}
        for mode in ("plain", "secaggplus"):
            if f"d={d},{mode}" in loads:
                entry[f"flower_{mode}_load_before"], entry[f"flower_{mode}_load_after"] = loads[f"d={d},{mode}"]
        if not sec:
            entry["flower_error"] = "the simulation ended before this point ran (see the log on stderr)"
        if windows.get(f"d={d},secaggplus"):  # every SecAgg+ stage's reply, summed per client
            lo, hi = windows[f"d={d},secaggplus"][-1]
            entry["flower_secaggplus_bytes_per_client"] = sum(r["bytes"] for r in sizes if lo <= r["t"] <= hi) / n
        result[f"n={n},d={d}"] = entry
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[10, 50], help="numbers of clients")
    ap.add_argument("--d", type=int, nargs="+", default=[100_000, 1_000_000], help="update sizes")
    ap.add_argument("--reps", type=int, default=2, help="timed trustfl rounds per point (after a warm-up)")
    ap.add_argument("--flower-rounds", type=int, default=1, help="Flower rounds per point (after a warm-up round)")
    ap.add_argument("--ray-cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    ap.add_argument("--skip-flower", action="store_true")
    ap.add_argument("--skip-trustfl", action="store_true")
    ap.add_argument("--flower-n", type=int, nargs="*", default=None, help="n values Flower runs (default: --n)")
    ap.add_argument("--out", default=None, help="also write the JSON here (the recorded results are never "
                                                 "overwritten by default)")
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
                flower.update(bench_flower(n, args.d, args.flower_rounds, log_dir, args.ray_cpus))
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
            for name in ("mpc_sum_s", "mpc_clip_s", "mpc_clip_dp_s"):
                if t.get(name):
                    row[f"secaggplus_over_{name[:-2]}"] = f["flower_secaggplus_s"] / t[name]
            if f.get("flower_plain_s"):
                row["secaggplus_added_s"] = f["flower_secaggplus_s"] - f["flower_plain_s"]
        rows.append(row)
    report["rows"] = rows
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
