"""Per-round time of one federation on three engines, side by side in one run (issue 14).

Engines: ``local`` (in-process), ``flower`` in Flower's simulation runtime (Ray, one virtual
SuperNode per client, 1 CPU each) and ``flower`` in a real deployment on loopback (a SuperLink and
8 SuperNodes as processes, ``flwr run examples/flower_app``; each SuperNode reads its own file).
The same config and seed on all three: 8 clients, all sampled every round.

Reported per engine: the start-up stated apart (Ray and its actors for the simulation; the
SuperLink and SuperNodes for the deployment), the first round (each node builds its model and
tokenizes its data) and the median of the later rounds (clients + server + evaluation, from the
run directory's ``metrics["time"]``), and the ratios to the local engine.

    python benchmarks/engines.py                 # tiny BERT (engine overhead dominates)
    python benchmarks/engines.py --model minilm  # MiniLM + LoRA (client compute dominates)
"""

from __future__ import annotations

import argparse
import json
import statistics
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
name = "bench_engines"
seed = 0
[model]
name = "{model}"
max_length = 32
[lora]
r = 4
top_layers = {top}
[data]
name = "sms_spam"
max_records = {records}
holdout_fraction = 0.1
[partition]
num_clients = {clients}
scheme = "iid"
[client]
batch_size = 8
max_steps = {steps}
lr = 5e-3
[federation]
rounds = {rounds}
engine = "{engine}"
save_client_updates = false
[federation.flower]
round_timeout = 900.0
connect_timeout = 300.0
"""


def tiny_bert(path: Path) -> str:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from trustfl.models import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def round_times(run_dir: Path) -> list[float]:
    from trustfl.rundir import RunDir

    return [sum(m["time"][k] for k in ("clients_s", "server_s", "eval_s")) for m in RunDir(run_dir).metrics()]


def summary(times: list[float]) -> dict[str, float]:
    return {"first_round_s": times[0], "later_round_median_s": statistics.median(times[1:]),
            "rounds_s": times}


def main(argv: list[str] | None = None) -> int:
    work = Path(tempfile.mkdtemp(prefix="trustfl-bench-engines-"))
    try:
        return _run(work, argv)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # runs, node files and the tiny model: nothing left behind


def _run(work: Path, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (a 4-block 32-wide BERT) or a model name")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--skip-deployment", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from trustfl.config import load_config
    from trustfl.federation import Federation
    from trustfl.federation.flower.engine import SimulationRuntime, shutdown_simulations

    model = tiny_bert(work / "tiny-bert") if args.model == "tiny" else args.model
    fill = dict(model=model, top=2 if args.model == "tiny" else 1, records=40 * args.clients, clients=args.clients,
                steps=args.steps, rounds=args.rounds)
    out: dict = {"model": args.model, "clients": args.clients, "rounds": args.rounds, "local_steps": args.steps,
                 "torch_threads": 1, "machine_cpus": __import__("os").cpu_count()}
    for engine in ("local", "flower"):
        path = work / f"{engine}.toml"
        path.write_text(CONFIG.format(engine=engine, **fill))
        t0 = time.perf_counter()
        Federation(load_config(path), out_dir=work / f"run_{engine}", progress=False).run()
        wall = time.perf_counter() - t0
        key = "local" if engine == "local" else "flower_simulation"
        out[key] = {**summary(round_times(work / f"run_{engine}")), "wall_s": wall}
        if engine == "flower":
            runtime = next(iter(SimulationRuntime._running.values()))
            out[key]["startup_ray_s"] = runtime.startup_s
        print(json.dumps({key: out[key]}), file=sys.stderr)
    shutdown_simulations()
    if not args.skip_deployment:
        from trustfl.federation.flower.loopback import LoopbackDeployment

        import importlib.util

        spec = importlib.util.spec_from_file_location("make_node_data", REPO / "examples/flower_app/make_node_data.py")
        node_data = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(node_data)
        path = work / "flower.toml"
        files = node_data.write_node_files(path, work / "nodes")
        nodes = [{"client-id": i, "data-file": str(f), "torch-threads": 1} for i, f in enumerate(files)]
        t0 = time.perf_counter()
        with LoopbackDeployment(work / "flwr", nodes, start_timeout=120) as deployment:
            startup = deployment.startup_s
            deployment.run(REPO / "examples" / "flower_app", {"config": str(path), "out-dir": str(work / "run_dep")},
                           timeout=3600)
        out["flower_deployment"] = {**summary(round_times(work / "run_dep")), "wall_s": time.perf_counter() - t0,
                                    "startup_superlink_and_supernodes_s": startup}
    base = out["local"]["later_round_median_s"]
    out["ratio_to_local"] = {k: out[k]["later_round_median_s"] / base
                             for k in ("flower_simulation", "flower_deployment") if k in out}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
