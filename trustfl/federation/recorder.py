"""Open (or resume) a run's directory and commit each round, with all resume state in one commit.

Resume state has one home: the round's commit holds the pipeline's tensors (``state/``) and every
run component's JSON state (the manifest's round record); resuming loads both from the last
complete round. Nothing is read back from metrics.jsonl to restore state.

Float reductions depend on torch's intra-op thread count, so a run resumed under another count is
not bit-identical to the uninterrupted run: resuming warns (naming both counts), and every round's
commit records the count it ran with in the manifest's ``extra["torch_num_threads_segments"]``
(``[{"first_round", "last_round", "torch_num_threads"}]``, one entry per stretch of equal counts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from trustfl.errors import ConfigError
from trustfl.rundir import RunDir, RunWriter
from trustfl.types import PipelineLike, RunComponent

__all__ = ["OpenedRun", "commit_round", "open_run"]
log = logging.getLogger(__name__)
THREADS_KEY = "torch_num_threads_segments"


@dataclass
class OpenedRun:
    writer: RunWriter
    global_vector: torch.Tensor
    start_round: int
    history: list[dict[str, Any]] = field(default_factory=list)


def open_run(out_dir: Path, *, config: Any, layout: Any, initial: torch.Tensor, fingerprints: dict[str, str],
             extra: dict[str, Any], pipeline: PipelineLike, components: Sequence[RunComponent], resume: bool,
             overwrite: bool, signing_key: Any = None) -> OpenedRun:
    """Create the run directory (round 0 = ``initial``) or resume it after its last complete round."""
    if not resume:
        writer = RunWriter.create(out_dir, config=config.to_dict(), layout=layout.to_dict(),
                                  seeds={"seed": config.seed}, fingerprints=fingerprints, extra=extra,
                                  overwrite=overwrite, signing_key=signing_key)
        writer.write_initial(initial)
        return OpenedRun(writer=writer, global_vector=initial.clone(), start_round=1)
    writer = RunWriter.resume(out_dir, config=config.to_dict(), signing_key=signing_key,
                              complete_recorded=lambda recorded: type(config).from_dict(recorded).to_dict())
    done = writer.completed_rounds
    reader = RunDir(out_dir)
    stored = reader.manifest.get("fingerprints", {})
    if stored and stored != fingerprints:
        diff = sorted(k for k in set(stored) | set(fingerprints) if stored.get(k) != fingerprints.get(k))
        raise ConfigError(f"resume: the data differs from the original run ({diff[:4]}...)")
    _check_threads(reader.manifest.get("extra", {}), out_dir)
    if done > 0:
        if reader.manifest["rounds"][done].get("state"):
            pipeline.load_state_dict(reader.state(done))
        states = reader.component_state(done)
        orphans = sorted(set(states) - {c.name for c in components})
        if orphans:
            raise ConfigError(f"resume: the run recorded state for run component(s) {orphans} that this run does not "
                              "have (e.g. a privacy hook passed in code); resume with the same components, or its "
                              "accounting would silently restart")
        for component in components:
            component.load_state_dict(states.get(component.name, {}))
    log.info("resuming %s after round %d", out_dir, done)
    return OpenedRun(writer=writer, global_vector=reader.global_vector(done).clone(), start_round=done + 1,
                     history=reader.metrics())


def _check_threads(extra: dict[str, Any], out_dir: Path) -> None:
    """Warn when the thread count differs from the one the run was created (or last ran) with."""
    now = torch.get_num_threads()
    segments = extra.get(THREADS_KEY) or []
    before = {"created with": extra.get("torch_num_threads"),
              "last ran with": segments[-1]["torch_num_threads"] if segments else None}
    differ = {k: v for k, v in before.items() if v is not None and int(v) != now}
    if differ:
        said = ", ".join(f"{k} {v}" for k, v in differ.items())
        log.warning("resume: %s: the run was %s torch threads, this process uses %d; float reductions differ, so "
                    "the resumed rounds are not bit-identical to an uninterrupted run (torch.set_num_threads(%s) "
                    "to match); the manifest records the count of every round (%s)", out_dir, said, now,
                    next(iter(differ.values())), THREADS_KEY)


def _thread_segments(writer: RunWriter, round: int) -> list[dict[str, int]]:
    """The manifest's thread-count segments with ``round`` (run at the current count) appended."""
    now = torch.get_num_threads()
    segments = [dict(s) for s in writer.manifest["extra"].get(THREADS_KEY) or []]
    if segments and segments[-1]["torch_num_threads"] == now and segments[-1]["last_round"] == round - 1:
        segments[-1]["last_round"] = round
    else:
        segments.append({"first_round": round, "last_round": round, "torch_num_threads": now})
    return segments


def commit_round(writer: RunWriter, round: int, *, global_vector: torch.Tensor, metrics: dict[str, Any],
                 client_updates: dict[int, tuple[torch.Tensor, int]] | None, pipeline: PipelineLike,
                 components: Sequence[RunComponent]) -> None:
    """One atomic commit: global, updates, metrics, pipeline tensors, component state, manifest facts."""
    extra: dict[str, Any] = {}
    for component in components:
        for key, value in component.manifest_update().items():
            if isinstance(value, dict) and isinstance(extra.get(key), dict):
                extra[key] = {**extra[key], **value}
            else:
                extra[key] = value
    extra[THREADS_KEY] = _thread_segments(writer, round)
    writer.write_round(round, global_vector=global_vector, client_updates=client_updates, metrics=metrics,
                       state=pipeline.state_dict() or None,
                       component_state={c.name: c.state_dict() for c in components if c.state_dict()},
                       extra=extra)
