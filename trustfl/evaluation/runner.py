"""Run the cells of an evaluation matrix: in worker processes on one machine, or on Ray.

Each cell is one federated run written to ``<out>/cells/<cell_id>/run`` plus a
``result.json`` written atomically when the cell ends; a cell whose ``result.json``
exists is skipped on re-run, so a killed evaluation resumes where it stopped. A cell that
fails on purpose (a :class:`~trustfl.errors.TrustFLError`, e.g. an aggregator's tolerance check
refuses n, f) records ``status = "error"``; any other exception is a bug, recorded as
``status = "crashed"`` with its full traceback and logged loudly. Either way ``trustfl eval``
exits non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from trustfl.errors import TrustFLError
from trustfl.evaluation.matrix import Cell, MatrixSpec
from trustfl.optional import require

__all__ = ["run_cell", "run_matrix"]
log = logging.getLogger(__name__)


def _summarize(fed: Any, summary: Any) -> dict[str, Any]:
    """The row of a finished cell: final clean metrics, final ASR, detection over all rounds."""
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for m in summary.history:
        for k in counts:
            counts[k] += int(m.get("detection", {}).get(k, 0))
    flagged = counts["tp"] + counts["fp"]
    actual = counts["tp"] + counts["fn"]
    final = summary.final_metrics
    accuracies = [m["eval"]["accuracy"] for m in summary.history
                  if m.get("eval", {}).get("accuracy") is not None]
    majority_label = attack_target = None
    test = getattr(fed, "test", None)
    if summary.baseline_accuracy is not None and test is not None and "label" in test.column_names:
        labels = list(test["label"])
        if labels:  # the most frequent test class (ties: the lowest id): what a majority predictor answers
            majority_label = max(sorted(set(labels)), key=labels.count)
    success = getattr(fed, "eval_sets", {}).get("attack_success_rate")
    if success is not None:
        attack_target = int(success[1])
    names = getattr(fed, "label_names", None) or []
    return {
        "accuracy": final.get("accuracy"), "macro_f1": final.get("macro_f1"), "loss": final.get("loss"),
        "asr": final.get("attack_success_rate"),
        "flag_precision": counts["tp"] / flagged if flagged else None,
        "flag_recall": counts["tp"] / actual if actual else None,
        "detection": counts, "rounds": summary.rounds_completed, "baseline_accuracy": summary.baseline_accuracy,
        "best_accuracy": max(accuracies) if accuracies else None,
        "majority_label": majority_label,
        "majority_class": names[majority_label] if majority_label is not None and majority_label < len(names)
        else None,
        "attack_target": attack_target,
        "attackers": fed.malicious,
    }


def run_cell(cell_config: dict[str, Any], params: dict[str, Any], cell_dir: str,
             threads: int | None = None) -> dict[str, Any]:
    """Run one cell in this process and write its ``result.json``; returns the row."""
    import torch

    from trustfl.config import RunConfig
    from trustfl.federation import Federation
    from trustfl.rundir import atomic_write_bytes

    if threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    row: dict[str, Any] = {"cell": Path(cell_dir).name, **params}
    try:
        config = RunConfig.from_dict(cell_config)
        fed = Federation(config, out_dir=Path(cell_dir) / "run", overwrite=True, progress=False)
        row.update(status="ok", **_summarize(fed, fed.run()))
    except TrustFLError as exc:  # a refused cell is a result (e.g. a tolerance error)
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug: keep the grid going, but never disguise it as a result
        log.error("cell %s crashed: %s", row["cell"], exc, exc_info=True)
        row.update(status="crashed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    row["wall_s"] = time.perf_counter() - start
    Path(cell_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(cell_dir) / "result.json", json.dumps(row, indent=2, default=str).encode())
    return row


def _done(cell_dir: Path, retry_failed: bool) -> dict[str, Any] | None:
    path = cell_dir / "result.json"
    if not path.is_file():
        return None
    try:
        row = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a torn result is rerun
    if retry_failed and row.get("status") != "ok":
        return None
    return row


def run_matrix(spec: MatrixSpec, out: str | Path, *, workers: int | None = None, ray_address: str | None = None,
               retry_failed: bool = False, progress: bool = True,
               on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every cell not yet finished; return all rows (finished earlier or now), in cell order."""
    out = Path(out)
    cells: list[Cell] = spec.cells()
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for cell in cells:
        cell_dir = out / "cells" / cell.cell_id
        row = _done(cell_dir, retry_failed)
        if row is not None:
            rows[cell.cell_id] = row
        else:
            todo.append((cell, cell_dir))
    workers = workers or spec.workers
    ray_address = ray_address if ray_address is not None else spec.ray_address
    threads = spec.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    bar = tqdm(total=len(cells), initial=len(rows), desc=f"{spec.name} cells", unit="cell", disable=not progress)

    def record(row: dict[str, Any]) -> None:
        rows[row["cell"]] = row
        bar.update(1)
        bar.set_postfix(last=row["cell"][:40], status=row["status"])
        if on_row is not None:
            on_row(row)

    jobs = [(c.config_dict(), c.params(), str(d)) for c, d in todo]
    if ray_address:
        ray = require("ray", extra="eval", feature="trustfl eval --ray-address")

        ray.init(address=None if ray_address == "local" else ray_address, ignore_reinit_error=True,
                 log_to_driver=False)
        remote = ray.remote(num_cpus=threads)(run_cell)
        pending = [remote.remote(cfg, params, d, threads) for cfg, params, d in jobs]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            record(ray.get(ready[0]))
    elif workers == 1:
        for cfg, params, d in jobs:
            record(run_cell(cfg, params, d, threads))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_cell, cfg, params, d, threads) for cfg, params, d in jobs]
            for future in as_completed(futures):
                record(future.result())
    bar.close()
    return [rows[c.cell_id] for c in cells if c.cell_id in rows]
