"""The new run directory of an unlearning, linked to its parent, and the federation that never samples
the forgotten clients nor lets their records decide anything about the other clients' data.

An unlearning never modifies its parent. :class:`ForgetFederation` creates a new run directory whose
manifest records the parent (path and manifest sha256), the method and the forgotten clients
(``extra["unlearning"]``) and the data this run trains on (its own fingerprints), copies the parent's
rounds before the first one the forgotten clients took part in (they never saw them), and commits
every further round through the same :class:`~trustfl.rundir.RunWriter`, so an interrupted
unlearning resumes from its last complete round like any run.

The clients' data steps (e.g. ``[dedup]``, whose keep rule looks across clients) run with the
forgotten clients' training records hidden, so that they cannot decide which of the other clients'
records are dropped; the forgotten clients then get back their records as the parent prepared
them (what ``pga`` ascends on). A retrain restarts from the first round in which a forgotten
client, or a client whose prepared records changed that way, took part.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustfl.defenses.unlearning.errors import UnlearningError
from trustfl.defenses.unlearning.plan import Plan
from trustfl.federation import Federation
from trustfl.federation.clients import prepare_clients
from trustfl.federation.recorder import THREADS_KEY
from trustfl.rundir import RunDir, RunWriter
from trustfl.types import ClientDataContext, RunComponent

__all__ = ["ForgetFederation", "check_target", "copy_rounds", "default_out", "linked_config"]


@dataclass
class ForgetData:
    """Shared by the two data components of a :class:`ForgetFederation` (set while the data are prepared).

    Attributes:
        original: every client's ``(train, holdout)`` as the parent prepared them (all clients present).
        changed: remaining clients whose prepared training records differ from ``original`` (a data step
            that looked across clients decided otherwise without the forgotten clients).
    """

    forget: frozenset[int]
    original: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    changed: list[int] = field(default_factory=list)


class HideForgotten(RunComponent):
    """First data step: record the parent's view of the data, then hide the forgotten clients' training records
    (an empty dataset with the same columns) from every later data step."""

    name = "unlearning_hide_forgotten"

    def __init__(self, data: ForgetData, *, rest: Sequence[RunComponent], link: dict[str, Any] | None) -> None:
        self.data, self.rest, self.link = data, list(rest), link

    def prepare_clients(self, data: ClientDataContext) -> dict[int, tuple[Any, Any]]:
        self.data.original = prepare_clients(data.splits, self.rest, seed=data.seed)
        return {c: (train.select([]) if c in self.data.forget else train, holdout)
                for c, (train, holdout) in data.splits.items()}

    def manifest(self) -> dict[str, Any]:
        return {"unlearning": self.link} if self.link is not None else {}


class RestoreForgotten(RunComponent):
    """Last data step: give the forgotten clients back their records as the parent prepared them, and note which
    remaining clients' records changed because the forgotten ones were hidden."""

    name = "unlearning_restore_forgotten"

    def __init__(self, data: ForgetData) -> None:
        self.data = data

    def prepare_clients(self, data: ClientDataContext) -> dict[int, tuple[Any, Any]]:
        from trustfl.data import fingerprint_dataset

        original, forget = self.data.original, self.data.forget
        self.data.changed = sorted(c for c, (train, _) in data.splits.items() if c not in forget and
                                   fingerprint_dataset(train) != fingerprint_dataset(original[c][0]))
        return {c: (original[c] if c in forget else split) for c, split in data.splits.items()}


class ForgetFederation(Federation):
    """A :class:`~trustfl.federation.Federation` in which the ``forget`` clients never train nor shape the data.

    Each round samples exactly as the original run (same seed, same draw) and drops the forgotten
    clients from the draw; the data steps run with the forgotten clients' records hidden (module
    docstring). So every other client trains on the same data, with the same seeds, as it would in a
    run where the forgotten clients never had any record: a fresh run of this class from round 1 and
    a retrain from a parent run are equal bit for bit.

    With ``plan`` (an unlearning of a parent run), :meth:`setup` creates the linked run directory (or
    resumes it), copies the parent's rounds the unlearning keeps and restores the parent's server
    and component state after them.
    """

    def __init__(self, config: Any, *, forget: Collection[int], plan: Plan | None = None, **kwargs: Any) -> None:
        self.forget = frozenset(int(c) for c in forget)
        self.plan = plan
        super().__init__(config, **kwargs)
        self.forget_data = ForgetData(self.forget)
        self.components = [HideForgotten(self.forget_data, rest=self.components,
                                         link=plan.link() if plan is not None else None),
                           *self.components, RestoreForgotten(self.forget_data)]

    def sample_clients(self, round: int) -> list[int]:
        return [c for c in super().sample_clients(round) if c not in self.forget]

    def setup(self) -> None:
        if self._ready:
            return
        super().setup()
        if self.plan is not None:
            _continue_parent(self, self.plan)


def kept_rounds(plan: Plan, changed: Collection[int]) -> int:
    """Parent rounds an unlearning reuses: those before ``plan.first_round``; for ``retrain`` also only those
    before the first round a client in ``changed`` (its prepared records differ without the forgotten
    clients) took part in, so that the retrain stays exact."""
    first = plan.first_round
    if plan.method == "retrain":
        first = min([first, *(r for r, ids in plan.participants.items() if set(ids) & set(changed))])
    return first - 1


def _continue_parent(fed: ForgetFederation, plan: Plan) -> None:
    """After the federation opened its directory: link, copy the kept parent rounds, restore the state after them."""
    writer, parent = fed.writer, plan.parent
    if writer.completed_rounds == 0 and not bool((fed.global_vector == parent.global_vector(0)).all()):
        raise UnlearningError(f"unlearning: the rebuilt initial adapter differs from round 0 of {parent.path} (another "
                              "model or library version?); an unlearning must start from the parent's adapter")
    kept = kept_rounds(plan, fed.forget_data.changed)
    plan.first_round = kept + 1 if plan.method == "retrain" else plan.first_round
    link = plan.link()
    if writer.manifest["extra"].get("unlearning") != link:
        writer.update_extra(unlearning=link)
    if fed.start_round > kept:
        return
    segments = parent.manifest.get("extra", {}).get(THREADS_KEY) or []  # thread counts of the copied rounds
    writer.update_extra(**{THREADS_KEY: [{**seg, "last_round": min(int(seg["last_round"]), kept)}
                                         for seg in segments if int(seg["first_round"]) <= kept]})
    copy_rounds(parent, writer, upto=kept)
    if kept > 0:  # server state continues from the parent's round `kept` (accountants, stateful aggregators)
        if parent.manifest["rounds"][kept].get("state"):
            fed.pipeline.load_state_dict(parent.state(kept))
        states = parent.component_state(kept)
        for component in fed.components:
            component.load_state_dict(states.get(component.name, {}))
    fed.global_vector, fed.start_round = parent.global_vector(kept).clone(), kept + 1
    fed.history = RunDir(fed.out_dir).metrics()


def default_out(parent: Path, method: str, forget: Collection[int]) -> Path:
    """``<parent>-unlearn-<method>-c<ids>`` next to the parent."""
    return parent.parent / f"{parent.name}-unlearn-{method}-c{'-'.join(str(c) for c in sorted(forget))}"


def linked_config(plan: Plan, rounds: int) -> dict[str, Any]:
    """The parent's recorded config with ``federation.rounds = rounds`` (the unlearning run's length)."""
    from trustfl.config import RunConfig

    config = copy.deepcopy(plan.parent.config)
    config.setdefault("federation", {})["rounds"] = int(rounds)
    return RunConfig.from_dict(config).to_dict()  # normalised: what the federation records and resumes with


def check_target(plan: Plan, out: Path, *, resume: bool) -> bool:
    """Check the linked run directory ``out`` before anything is prepared; True if it is to be resumed.

    Raises:
        UnlearningError: ``out`` is the parent itself or inside it; resuming a directory that is not this
            unlearning (another parent, method or client set).
    """
    parent = plan.parent.path.resolve()
    target = Path(out).resolve()
    if target == parent or parent in target.parents:
        raise UnlearningError(f"unlearning: --out {out} would write into the parent run {plan.parent.path}, which "
                              "is never modified; choose another directory")
    if not (resume and (Path(out) / "manifest.json").is_file()):
        return False
    recorded = (RunDir(out).manifest.get("extra") or {}).get("unlearning") or {}
    link = plan.link()
    keys = ("parent_manifest_sha256", "method", "forgotten", "settings")
    diff = [k for k in keys if recorded.get(k) != link.get(k)]
    if diff:
        raise UnlearningError(f"unlearning: cannot resume {out}: it is not this unlearning (differs in "
                              f"{', '.join(diff)}: recorded {[recorded.get(k) for k in diff]}); use another --out")
    return True


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
