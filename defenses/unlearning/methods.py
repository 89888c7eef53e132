"""The four unlearning methods, each driving a :class:`~.linked.ForgetFederation` on the linked run.

* ``retrain``: the exact baseline: the federation replayed without the forgotten clients from the first
  round they took part in (earlier rounds reused), same seeds otherwise.
* ``federaser``: FedEraser (Liu, Ma, Yang, Wang, Liu 2021, "FedEraser: Enabling Efficient Client-Level
  Data Removal from Federated Learning Models", IWQoS): calibrated replay: in each retained round the
  remaining clients train briefly from the unlearned global; each calibrated update has the direction
  of that short training and the length of the client's stored update of the round.
* ``pga``: projected gradient ascent (Halimi et al. 2022, :mod:`.pga`), then recovery rounds.
* ``rollback``: subtract the forgotten clients' stored contributions from the final global, then
  recovery rounds (a cheap approximate baseline, exact only for FedAvg without later rounds; refused on any
  other pipeline unless ``allow_nonlinear``).

Round ``first_round`` of an approximate method's run directory is its unlearning step (metrics key
``"unlearning"``); client compute is counted as client samples processed (``samples_seen`` of every
client training in the run's new rounds, plus the ascent's samples).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from trustfl.defenses.unlearning.linked import ForgetFederation
from trustfl.defenses.unlearning.pga import projected_gradient_ascent
from trustfl.defenses.unlearning.plan import Plan
from trustfl.defenses.unlearning.vectors import calibrate, round_contribution
from trustfl.federation.evaluate import evaluate, predict
from trustfl.federation.recorder import commit_round
from trustfl.types import ClientResult, ServerView

__all__ = ["METHOD_RUNNERS", "planned_rounds"]


def planned_rounds(plan: Plan) -> int:
    """Number of rounds of the unlearning run (its ``federation.rounds``)."""
    s, r0 = plan.settings, plan.first_round
    if plan.method == "retrain":
        return plan.last_round
    if plan.method == "federaser":
        return r0 - 1 + len(range(r0, plan.last_round + 1, s.interval))
    return r0 + s.recovery_rounds


def evaluate_vector(fed: ForgetFederation, vector: torch.Tensor) -> dict[str, Any]:
    """Test metrics (and each evaluation set's success rate) of ``vector``, as the loop reports them."""
    fed.layout.load_into(fed.model, vector)
    out = evaluate(fed.trainer, fed.test_examples, task=fed.config.model.task)
    for name, (examples, target) in fed.eval_sets.items():
        out[name] = float((predict(fed.trainer, examples) == target).float().mean())
    return out


def _client(fed: ForgetFederation, client_id: int) -> Any:
    """The in-process client ``client_id`` (calibration and the ascent run where the run's data are loaded)."""
    from trustfl.defenses.unlearning.errors import UnlearningError
    from trustfl.federation.engine import LocalEngine

    if not isinstance(fed.engine, LocalEngine):
        raise UnlearningError(f"unlearning: runs on the {fed.config.federation.engine!r} engine are not supported by "
                              "federaser/pga (their client steps run in-process); use retrain or rollback")
    return fed.engine.clients[client_id]


@contextlib.contextmanager
def _max_steps(trainer: Any, steps: int) -> Iterator[None]:
    saved = trainer.max_steps
    trainer.max_steps = steps
    try:
        yield
    finally:
        trainer.max_steps = saved


def _retrain(plan: Plan, fed: ForgetFederation) -> None:
    fed.run()


def _federaser(plan: Plan, fed: ForgetFederation) -> None:
    fed.setup()
    r0, s, seed = plan.first_round, plan.settings, fed.config.seed
    retained = list(range(r0, plan.last_round + 1, s.interval))
    g = fed.global_vector
    bar = tqdm(range(fed.writer.completed_rounds - (r0 - 1), len(retained)), desc="federaser: calibrated rounds",
               unit="round", disable=not fed.progress)
    for k in bar:
        r_orig, r_new = retained[k], r0 + k
        t0 = time.perf_counter()
        remaining = [c for c in plan.participants[r_orig] if c not in plan.forget]
        results = []
        for c in remaining:
            client = _client(fed, c)
            steps = max(1, math.ceil(s.calibration_ratio * fed.trainer.num_steps(len(client.examples))))
            with _max_steps(fed.trainer, steps):
                res = client.fit(r_orig, g, seed=seed)
            old = plan.updates[r_orig][c][0]
            try:
                calibrated = calibrate(res.delta, old.norm())
            except ValueError as exc:
                from trustfl.defenses.unlearning.errors import UnlearningError

                raise UnlearningError(f"unlearning: federaser, round {r_orig}, client {c}: {exc}") from None
            results.append(ClientResult(client_id=c, delta=calibrated,
                                        num_samples=res.num_samples,
                                        metrics={**res.metrics, "calibration_steps": float(steps),
                                                 "stored_update_norm": float(old.norm())}))
        t1 = time.perf_counter()
        outcome = fed.server.run(r_new, ServerView(client_ids=remaining, results=results), g)
        t2 = time.perf_counter()
        metrics: dict[str, Any] = {"round": r_new, "clients": remaining, "attackers": [],
                                   "unlearning": {"method": "federaser", "replays_round": r_orig,
                                                  "calibration_ratio": s.calibration_ratio}}
        metrics["eval"] = evaluate_vector(fed, outcome.global_vector)
        metrics.update(outcome.metrics)
        metrics["time"] = {"clients_s": t1 - t0, "server_s": t2 - t1, "eval_s": time.perf_counter() - t2}
        commit_round(fed.writer, r_new, global_vector=outcome.global_vector, metrics=metrics,
                     client_updates=outcome.client_updates, pipeline=fed.pipeline, components=fed.components)
        g = fed.global_vector = outcome.global_vector
        fed.history.append(metrics)
        bar.set_postfix(accuracy=f"{metrics['eval'].get('accuracy', float('nan')):.4f}")
    bar.close()


def _rollback_step(plan: Plan, fed: ForgetFederation) -> tuple[torch.Tensor, dict[str, Any]]:
    g = plan.parent.global_vector(plan.last_round)
    total = torch.zeros_like(g)
    for r in plan.rounds_with:
        total += round_contribution(plan.updates[r], plan.forget, server_lr=plan.server_lr)  # recorded weights
    return g - total, {"rounds_subtracted": plan.rounds_with, "subtracted_norm": float(total.norm()),
                       "client_samples": 0}


def reference_model(plan: Plan) -> torch.Tensor:
    """Halimi et al.'s reference: the final global without each forgotten client's last-round contribution."""
    g = plan.parent.global_vector(plan.last_round).clone()
    for r in sorted(plan.updates):
        g -= round_contribution(plan.updates[r], [c for c in plan.forget if c in plan.updates[r]],
                                server_lr=plan.server_lr)
    return g


def _pga_step(plan: Plan, fed: ForgetFederation) -> tuple[torch.Tensor, dict[str, Any]]:
    s = plan.settings
    if fed.config.model.task != "classification":
        from trustfl.defenses.unlearning.errors import UnlearningError

        raise UnlearningError("unlearning: method 'pga' supports classification runs; use federaser, rollback "
                              "or retrain for a causal-LM run")
    reference = reference_model(plan)
    radius = s.radius_fraction * float((reference - plan.parent.global_vector(0)).norm())
    examples = [ex for c in plan.forget for ex in fed.trainer.attach_prefix(_client(fed, c).examples)]
    labels = fed.label_names or []
    stop = s.early_stop_accuracy if s.early_stop_accuracy is not None else 1.0 / max(2, len(labels))
    res = projected_gradient_ascent(fed.trainer, examples, reference=reference, radius=radius, lr=s.pga_lr,
                                    epochs=s.pga_epochs, batch_size=s.batch_size or fed.config.client.batch_size,
                                    stop_accuracy=stop, seed=fed.config.seed, progress=fed.progress)
    return res.vector, {"reference_rounds": sorted(plan.updates), "radius": radius, "ascent_steps": res.steps,
                        "client_samples": res.samples, "forgotten_accuracy_before": res.accuracy_before,
                        "forgotten_accuracy_after": res.accuracy_after, "stopped_early": res.stopped_early,
                        "distance_to_reference": float((res.vector - reference).norm())}


def _step_then_recover(step: Callable[[Plan, ForgetFederation], tuple[torch.Tensor, dict[str, Any]]]
                       ) -> Callable[[Plan, ForgetFederation], None]:
    def run(plan: Plan, fed: ForgetFederation) -> None:
        fed.setup()
        r0 = plan.first_round
        if fed.writer.completed_rounds < r0:  # the unlearning step is not committed yet
            t0 = time.perf_counter()
            vector, info = step(plan, fed)
            t1 = time.perf_counter()
            parent, T = plan.parent, plan.last_round
            # server state continues from the parent's last round (its accountants, stateful aggregators)
            if parent.manifest["rounds"][T].get("state"):
                fed.pipeline.load_state_dict(parent.state(T))
            states = parent.component_state(T)
            for component in fed.components:
                component.load_state_dict(states.get(component.name, {}))
            metrics: dict[str, Any] = {"round": r0, "clients": [], "attackers": [],
                                       "unlearning": {"method": plan.method, "step": True,
                                                      "linear_aggregator": plan.linear_aggregator, **info},
                                       "eval": evaluate_vector(fed, vector)}
            metrics["time"] = {"clients_s": t1 - t0, "server_s": 0.0, "eval_s": time.perf_counter() - t1}
            commit_round(fed.writer, r0, global_vector=vector, metrics=metrics, client_updates=None,
                         pipeline=fed.pipeline, components=fed.components)
            fed.global_vector, fed.start_round = vector, r0 + 1
            fed.history.append(metrics)
        fed.run()

    return run


METHOD_RUNNERS: dict[str, Callable[[Plan, ForgetFederation], None]] = {
    "retrain": _retrain, "federaser": _federaser, "pga": _step_then_recover(_pga_step),
    "rollback": _step_then_recover(_rollback_step)}
