"""``unlearn(run_dir, clients, method)``: forget clients of a finished run into a new, linked run directory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustfl.defenses.unlearning.linked import ForgetFederation, check_target, default_out, linked_config
from trustfl.defenses.unlearning.methods import METHOD_RUNNERS, planned_rounds
from trustfl.defenses.unlearning.plan import make_plan
from trustfl.defenses.unlearning.settings import UnlearnSettings
from trustfl.rundir import RunDir

__all__ = ["UnlearnResult", "client_samples", "unlearn"]


@dataclass
class UnlearnResult:
    """What an unlearning produced (all of it is also in the new run directory)."""

    run_dir: Path
    method: str
    forgotten: list[int]
    first_round: int
    rounds_completed: int
    final_metrics: dict[str, Any]
    client_samples: int
    wall_seconds: float
    link: dict[str, Any] = field(default_factory=dict)


def client_samples(run: RunDir, *, first_round: int) -> int:
    """Client compute of a run from ``first_round`` on: records processed by clients (training, calibration,
    gradient ascent), from the rounds' metrics (``samples_seen`` that clients report, and the unlearning step's)."""
    total = 0.0
    for m in run.metrics()[first_round - 1:]:
        total += sum(float((cm or {}).get("samples_seen") or 0.0) for cm in (m.get("client_metrics") or {}).values())
        total += float((m.get("unlearning") or {}).get("client_samples") or 0.0)
    return int(total)


def unlearn(run_dir: str | Path, clients: Sequence[int], method: str, *, out_dir: str | Path | None = None,
            settings: UnlearnSettings | None = None, resume: bool = False, overwrite: bool = False,
            progress: bool = True) -> UnlearnResult:
    """Remove the influence of ``clients`` from the run at ``run_dir`` with ``method``.

    Writes a new run directory (default ``<run_dir>-unlearn-<method>-c<ids>``) whose manifest links the
    parent (path, manifest sha256), the method and the forgotten clients; the parent is only read.
    ``resume=True`` continues an interrupted unlearning from its last complete round.

    Raises:
        UnlearningError: see :func:`~trustfl.defenses.unlearning.plan.make_plan`.
        RunDirError: ``out_dir`` exists (pass ``resume`` or ``overwrite``) or the parent is not a run.

    Example:
        >>> r = unlearn("runs/unlearning", [3], "pga")     # doctest: +SKIP
        >>> r.final_metrics["attack_success_rate"]          # doctest: +SKIP
    """
    from trustfl.config import RunConfig

    start = time.perf_counter()
    plan = make_plan(run_dir, clients, method, settings)
    out = Path(out_dir) if out_dir is not None else default_out(plan.parent.path, method, plan.forget)
    config = linked_config(plan, planned_rounds(plan))
    resuming = check_target(plan, out, resume=resume)
    before = float(((RunDir(out).manifest.get("extra") or {}).get("unlearning") or {}).get("wall_seconds") or 0.0) \
        if resuming else 0.0
    fed = ForgetFederation(RunConfig.from_dict(config), forget=plan.forget, plan=plan, out_dir=out, resume=resuming,
                           overwrite=overwrite, progress=progress)
    METHOD_RUNNERS[method](plan, fed)  # each starts with fed.setup(): creates/resumes the linked directory
    wall = before + time.perf_counter() - start
    link = {**plan.link(), "wall_seconds": wall}
    fed.writer.update_extra(unlearning=link)
    run = RunDir(out)
    final = next((m["eval"] for m in reversed(run.metrics()) if "eval" in m), {})
    return UnlearnResult(run_dir=out, method=method, forgotten=plan.forget, first_round=plan.first_round,
                         rounds_completed=run.completed_rounds, final_metrics=final,
                         client_samples=client_samples(run, first_round=plan.first_round), wall_seconds=wall,
                         link=link)
