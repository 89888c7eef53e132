"""Check an unlearning request against the parent run before anything is written.

The plan says which rounds the forgotten clients took part in (the first one, ``first_round``, is
where every method starts: earlier rounds never saw them and are reused as they are), and loads
the stored updates that the chosen method reads, so that a missing or corrupt update is reported
(naming its round and client) before the new run directory is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trustfl.defenses.unlearning.errors import UnlearningError
from trustfl.defenses.unlearning.settings import METHODS, NEEDS_UPDATES, UnlearnSettings
from trustfl.rundir import CorruptRunError, RunDir, RunDirError, sha256_file

__all__ = ["Plan", "make_plan"]

SUBTRACTS = frozenset({"rollback", "pga"})  # methods that subtract FedAvg contributions (rollback; pga's reference)
RETRAIN_HINT = "use --method retrain, which replays the federation from the data and needs no stored update"


@dataclass
class Plan:
    """What an unlearning of ``forget`` from ``parent`` with ``method`` will read.

    Attributes:
        first_round: the first round any forgotten client took part in (rounds before it are reused).
        last_round: the parent's last completed round.
        participants: round -> client ids whose updates the round aggregated (module :func:`_participants`).
        weights: round -> client id -> the weight the run's FedAvg gave the client (``metrics["aggregation"]``),
            for the rounds that record it.
        updates: round -> client id -> (delta, aggregation weight), for the rounds the method reads; the
            weight is the recorded one, else the stored sample count (weighted FedAvg) or 1.
        linear_aggregator: the run's pipeline was a plain FedAvg (no pre-/post-stage), so a client's share of a
            round is exactly what :func:`~.vectors.round_contribution` subtracts.
    """

    parent: RunDir
    parent_sha256: str
    method: str
    forget: list[int]
    first_round: int
    last_round: int
    participants: dict[int, list[int]]
    settings: UnlearnSettings
    server_lr: float = 1.0
    weighted: bool = True
    linear_aggregator: bool = True
    pipeline: str = "FedAvg"
    weights: dict[int, dict[int, float]] = field(default_factory=dict)
    updates: dict[int, dict[int, tuple[torch.Tensor, float]]] = field(default_factory=dict)

    @property
    def rounds_with(self) -> list[int]:
        """Rounds in which at least one forgotten client trained."""
        return [r for r, ids in sorted(self.participants.items()) if set(ids) & set(self.forget)]

    def link(self) -> dict[str, Any]:
        """The manifest's ``extra["unlearning"]``: what this run forgot, from which run, how."""
        return {"parent": str(self.parent.path.resolve()), "parent_manifest_sha256": self.parent_sha256,
                "method": self.method, "forgotten": list(self.forget), "first_round": self.first_round,
                "parent_rounds": self.last_round, "kept_rounds": self.first_round - 1,
                "settings": self.settings.to_dict()}


def _participants(run: RunDir) -> tuple[dict[int, list[int]], dict[int, dict[int, float]]]:
    """Per round, the clients whose updates were aggregated, and the FedAvg weights the round recorded.

    The clients are those in ``metrics["aggregation"]["clients"]`` (what the server round aggregated),
    else ``metrics["engine"]["replied"]`` (a Flower round: a sampled client that timed out is not in it),
    else ``metrics["clients"]`` (sampled), else the stored updates (a run recorded by another loop).
    """
    history = run.metrics()
    out: dict[int, list[int]] = {}
    weights: dict[int, dict[int, float]] = {}
    for r in range(1, run.completed_rounds + 1):
        m = history[r - 1] if r - 1 < len(history) else {}
        aggregated = (m.get("aggregation") or {}).get("clients")
        replied = (m.get("engine") or {}).get("replied")
        if isinstance(aggregated, dict):
            out[r] = sorted(int(c) for c in aggregated)
            weights[r] = {int(c): float(info["weight"]) for c, info in aggregated.items()
                          if isinstance(info, dict) and isinstance(info.get("weight"), (int, float))}
            if len(weights[r]) != len(aggregated):
                del weights[r]
        elif isinstance(replied, list):
            out[r] = sorted(int(c) for c in replied)
        elif isinstance(m.get("clients"), list):
            out[r] = sorted(int(c) for c in m["clients"])
        else:
            out[r] = sorted(int(c) for c in run.client_ids(r) if str(c).isdigit())
    return out, weights


def _client_ids(clients: Sequence[Any], num_clients: int) -> list[int]:
    if len(clients) == 0:
        raise UnlearningError("unlearning: no client to forget; pass --client ID (repeatable)")
    out: list[int] = []
    for c in clients:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_clients:
            raise UnlearningError(f"unlearning: client {c!r} is not a client id of this run (integers 0.."
                                  f"{num_clients - 1})")
        if c not in out:
            out.append(c)
    if len(out) >= num_clients:
        raise UnlearningError(f"unlearning: cannot forget all {num_clients} clients; at least one must remain")
    return sorted(out)


def _needed_rounds(method: str, plan: Plan) -> list[int]:
    with_ = plan.rounds_with
    if method == "federaser":
        return list(range(plan.first_round, plan.last_round + 1, plan.settings.interval))
    if method == "rollback":
        return with_
    if method == "pga":  # the reference model uses each forgotten client's last round
        return sorted({max(r for r in with_ if c in plan.participants[r]) for c in plan.forget
                       if any(c in plan.participants[r] for r in with_)})
    return []


def _load_updates(plan: Plan, rounds: list[int]) -> None:
    run = plan.parent
    if not run.config.get("federation", {}).get("save_client_updates", True) or \
            not any(run.client_ids(r) for r in range(1, run.completed_rounds + 1)):
        raise UnlearningError(f"unlearning: run {run.path} was recorded without client updates "
                              f"(federation.save_client_updates = false, or secure aggregation); method "
                              f"{plan.method!r} needs them; {RETRAIN_HINT}")
    for r in rounds:
        stored = set(run.client_ids(r))
        plan.updates[r] = {}
        for c in plan.participants[r]:
            if str(c) not in stored:
                raise UnlearningError(f"unlearning: round {r}, client {c}: no stored update in {run.path} (the "
                                      f"round recorded clients {sorted(stored)}); method {plan.method!r} needs it; "
                                      f"{RETRAIN_HINT}")
            try:
                delta, n = run.client_update(r, c)
            except (CorruptRunError, RunDirError) as exc:
                why = "; ".join(f"{p}: {w}" for p, w in getattr(exc, "problems", [])) or str(exc)
                raise UnlearningError(f"unlearning: round {r}, client {c}: the stored update is missing or corrupt "
                                      f"({why}); method {plan.method!r} needs it; {RETRAIN_HINT}") from None
            if not bool(torch.isfinite(delta).all()):
                raise UnlearningError(f"unlearning: round {r}, client {c}: the stored update has non-finite values")
            recorded = plan.weights.get(r, {}).get(c)
            plan.updates[r][c] = (delta, recorded if recorded is not None else float(n) if plan.weighted else 1.0)


def make_plan(parent: str | Path | RunDir, clients: Sequence[int], method: str,
              settings: UnlearnSettings | None = None) -> Plan:
    """Validate the request and load what the method reads.

    Raises:
        UnlearningError: unknown method; a client id that is not one of the run's, or that never took
            part; the parent is itself an unlearning run; a method that needs stored updates on a run
            recorded without them, or with one missing or corrupt (names the round and client); an
            approximate method on a differentially private run; ``rollback``/``pga`` on a run whose pipeline
            is not a plain FedAvg (unless ``settings.allow_nonlinear``).
        RunDirError: ``parent`` is not a run directory.
    """
    if method not in METHODS:
        raise UnlearningError(f"unlearning: unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    run = parent if isinstance(parent, RunDir) else RunDir(parent)
    config = run.config
    extra = run.manifest.get("extra") or {}
    if extra.get("unlearning"):
        src = extra["unlearning"]
        raise UnlearningError(f"unlearning: {run.path} is itself an unlearning run ({src.get('method')} of clients "
                              f"{src.get('forgotten')}); unlearn from the original run {src.get('parent')} with all "
                              "the clients to forget")
    if run.completed_rounds < 1:
        raise UnlearningError(f"unlearning: run {run.path} has no completed round; nothing to unlearn")
    num_clients = int((config.get("partition") or {}).get("num_clients") or 0)
    if num_clients < 1:
        raise UnlearningError(f"unlearning: run {run.path} records no partition.num_clients (not a trustfl run?)")
    forget = _client_ids(list(clients), num_clients)
    privacy = config.get("privacy") or {}
    if method in NEEDS_UPDATES and any(privacy.get(k) for k in ("sample", "client")):
        raise UnlearningError(f"unlearning: run {run.path} is differentially private; the releases of method "
                              f"{method!r} are not covered by its privacy accountant; {RETRAIN_HINT}")
    participants, weights = _participants(run)
    took_part = {c: [r for r, ids in participants.items() if c in ids] for c in forget}
    never = [c for c, rounds in took_part.items() if not rounds]
    if never:
        raise UnlearningError(f"unlearning: client(s) {never} never took part in run {run.path} (rounds 1.."
                              f"{run.completed_rounds}); nothing to unlearn")
    server = config.get("server") or {}
    pipeline = extra.get("pipeline_config")
    aggregator = (pipeline or {}).get("aggregator") or {}
    linear = bool(pipeline) and aggregator.get("class") == "FedAvg" and not pipeline.get("pre") \
        and not pipeline.get("post")
    plan = Plan(parent=run, parent_sha256=sha256_file(run.path / "manifest.json"), method=method, forget=forget,
                first_round=min(r for rounds in took_part.values() for r in rounds), last_round=run.completed_rounds,
                participants=participants, settings=settings or UnlearnSettings(),
                server_lr=float(server.get("server_lr", 1.0) or 1.0), weighted=aggregator.get("weighted") is True,
                linear_aggregator=linear, pipeline=str(extra.get("pipeline") or "a pipeline it did not record"), weights=weights)
    if method in NEEDS_UPDATES:
        _load_updates(plan, _needed_rounds(method, plan))
    if method in SUBTRACTS and not linear and not plan.settings.allow_nonlinear:
        raise UnlearningError(f"unlearning: method {method!r} subtracts FedAvg contributions, but run {run.path} "
                              f"aggregated with {plan.pipeline} (not a plain FedAvg), so the subtraction is not what "
                              f"the clients contributed; use retrain or federaser, or accept the approximation with "
                              f"--set allow_nonlinear=true (recorded in the manifest)")
    return plan
