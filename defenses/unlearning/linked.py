"""The new run directory of an unlearning, linked to its parent, and the federation that never samples
the forgotten clients.

An unlearning never modifies its parent. It creates a new run directory whose manifest records the
parent (path and manifest sha256), the method and the forgotten clients (``extra["unlearning"]``),
copies the parent's rounds before the first one the forgotten clients took part in (they never saw
them), and commits every further round through the same :class:`~trustfl.rundir.RunWriter`, so an
interrupted unlearning resumes from its last complete round like any run.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from pathlib import Path
from typing import Any

from trustfl.defenses.unlearning.errors import UnlearningError
from trustfl.defenses.unlearning.plan import Plan
from trustfl.federation import Federation
from trustfl.federation.recorder import THREADS_KEY
from trustfl.rundir import RunDir, RunWriter

__all__ = ["ForgetFederation", "copy_rounds", "default_out", "linked_config", "open_linked"]


class ForgetFederation(Federation):
    """A :class:`~trustfl.federation.Federation` whose rounds never train the ``forget`` clients.

    Each round samples exactly as the original run (same seed, same draw) and drops the forgotten
    clients from the draw, so every other client trains on the same data, with the same seeds, as it
    would in a run where the forgotten clients never answered: a fresh run of this class from round 1
    and a retrain from a parent run are equal bit for bit.
    """

    def __init__(self, config: Any, *, forget: Collection[int], **kwargs: Any) -> None:
        self.forget = frozenset(int(c) for c in forget)
        super().__init__(config, **kwargs)

    def sample_clients(self, round: int) -> list[int]:
        return [c for c in super().sample_clients(round) if c not in self.forget]


def default_out(parent: Path, method: str, forget: Collection[int]) -> Path:
    """``<parent>-unlearn-<method>-c<ids>`` next to the parent."""
    return parent.parent / f"{parent.name}-unlearn-{method}-c{'-'.join(str(c) for c in sorted(forget))}"


def linked_config(plan: Plan, rounds: int) -> dict[str, Any]:
    """The parent's recorded config with ``federation.rounds = rounds`` (the unlearning run's length)."""
    from trustfl.config import RunConfig

    config = copy.deepcopy(plan.parent.config)
    config.setdefault("federation", {})["rounds"] = int(rounds)
    return RunConfig.from_dict(config).to_dict()  # normalised: what the federation records and resumes with


def open_linked(plan: Plan, out: Path, *, config: dict[str, Any], resume: bool, overwrite: bool) -> RunWriter:
    """Create (or resume) the linked run directory and copy the parent's rounds before ``first_round``.

    Raises:
        UnlearningError: ``out`` is the parent itself or inside it; resuming a directory that is not this
            unlearning (another parent, method or client set).
    """
    parent = plan.parent.path.resolve()
    target = Path(out).resolve()
    if target == parent or parent in target.parents:
        raise UnlearningError(f"unlearning: --out {out} would write into the parent run {plan.parent.path}, which "
                              "is never modified; choose another directory")
    link = plan.link()
    if resume and (Path(out) / "manifest.json").is_file():
        recorded = (RunDir(out).manifest.get("extra") or {}).get("unlearning") or {}
        keys = ("parent_manifest_sha256", "method", "forgotten", "settings")
        diff = [k for k in keys if recorded.get(k) != link.get(k)]
        if diff:
            raise UnlearningError(f"unlearning: cannot resume {out}: it is not this unlearning (differs in "
                                  f"{', '.join(diff)}: recorded {[recorded.get(k) for k in diff]}); use another --out")
        writer = RunWriter.resume(out, config=config)
    else:
        m = plan.parent.manifest
        extra = {**(m.get("extra") or {}), "unlearning": link}
        kept = plan.first_round - 1  # thread-count segments of the copied rounds only (see federation.recorder)
        extra[THREADS_KEY] = [{**seg, "last_round": min(int(seg["last_round"]), kept)}
                              for seg in extra.get(THREADS_KEY) or [] if int(seg["first_round"]) <= kept]
        writer = RunWriter.create(out, config=config, layout=m["layout"], seeds=m["seeds"],
                                  fingerprints=m.get("fingerprints") or {}, extra=extra, overwrite=overwrite)
        writer.write_initial(plan.parent.global_vector(0))
    copy_rounds(plan.parent, writer, upto=plan.first_round - 1)
    return writer


def copy_rounds(parent: RunDir, writer: RunWriter, *, upto: int) -> None:
    """Copy rounds ``writer.completed_rounds + 1 .. upto`` of ``parent`` verbatim (hash-checked reads)."""
    history = parent.metrics()
    records = parent.manifest["rounds"]
    for r in range(writer.completed_rounds + 1, upto + 1):
        rec = records[r]
        updates = None
        if rec.get("updates") is not None:
            updates = {int(c) if c.isdigit() else c: parent.client_update(r, c) for c in parent.client_ids(r)}
        metrics = {k: v for k, v in history[r - 1].items() if k != "round"}
        writer.write_round(r, global_vector=parent.global_vector(r), client_updates=updates, metrics=metrics,
                           state=parent.state(r) if rec.get("state") else None,
                           component_state=parent.component_state(r) or None)
