"""The federated LoRA loop: ``Federation(config).run()``, an orchestrator with no feature branches.

Each round: the run components check their budgets, the engine runs the sampled clients
(:mod:`~trustfl.federation.clients`) and hands the :class:`~trustfl.federation.server.ServerRound`
what the server may see, the server round aggregates and moves the global adapter, the model is
evaluated, the components add their metrics (and may stop the run), and the round is committed
to the run directory in one commit. Features (DP, near-duplicate removal, attacks, ...) are run components built
from their config sections by their plug-ins (:mod:`trustfl.plugins`) or passed in code. All
randomness is derived from ``(seed, purpose, round, client)``, so ``--resume`` after a kill
reproduces the uninterrupted run exactly. FedAvg: McMahan et al. 2017.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from trustfl import plugins
from trustfl.config import RunConfig
from trustfl.errors import StopFederation
from trustfl.federation.clients import build_clients, prepare_clients, split_data, tokenize_examples
from trustfl.federation.engine import LocalEngine, SecureSumHook, build_engine, secure_for
from trustfl.federation.evaluate import evaluate, majority_baseline, predict
from trustfl.federation.assemble import assemble
from trustfl.federation.hooks import RoundCallback
from trustfl.federation.manifest import run_extra
from trustfl.federation.recorder import commit_round, open_run
from trustfl.federation.server import ServerRound, detection_counts
from trustfl.federation.setup import build_model_side
from trustfl.seeding import generator
from trustfl.types import PipelineLike, RoundReport, RunComponent, RunContext, ServerView

__all__ = ["Federation", "RunSummary", "detection_counts"]
log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a finished (or cleanly stopped) run reports."""

    run_dir: Path
    rounds_completed: int
    final_metrics: dict[str, Any]
    baseline_accuracy: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_reason: str | None = None


class Federation:
    """A federated fine-tuning run of a LoRA adapter on an FM.

    Args:
        config: the typed :class:`~trustfl.config.RunConfig`.
        out_dir: run directory (default ``runs/<config.name>``).
        pipeline: server aggregation pipeline or a bare aggregator (default: from ``config.server``).
        components: run components passed in code (e.g. ``trustfl.attacks.AttackComponent``,
            ``trustfl.defenses.SampleLevelDP(hook)``), added after those the config's sections build.
        secure_aggregation: secure aggregation (MPC) or a trusted sum hook, else a component's; the server sees sums.
        callbacks: called after every round (may add metrics or raise ``StopFederation``).
        resume / overwrite / signing_key: continue / replace ``out_dir``; sign each commit (docs/security.md).
        progress: show progress bars.
    """

    def __init__(self, config: RunConfig, *, out_dir: str | Path | None = None, pipeline: Any = None,
                 components: Sequence[RunComponent] = (), secure_aggregation: SecureSumHook | None = None,
                 callbacks: Sequence[RoundCallback] = (), resume: bool = False, overwrite: bool = False,
                 progress: bool = True, signing_key: Any = None) -> None:
        self.config, self.resume, self.overwrite, self.progress = config, resume, overwrite, progress
        self.out_dir = Path(out_dir) if out_dir is not None else Path("runs") / config.name
        self.pipeline: PipelineLike = plugins.as_pipeline(pipeline) if pipeline is not None \
            else config.server.build_pipeline()
        self.context = RunContext(config=config, seed=config.seed, num_clients=config.partition.num_clients,
                                  clients_per_round=config.clients_per_round, rounds=config.federation.rounds,
                                  progress=progress)
        secure_aggregation = secure_for(secure_aggregation, built := [*plugins.build_components(config), *components])
        self.secure_aggregation, self.callbacks, self.signing_key = secure_aggregation, list(callbacks), signing_key
        assembled = assemble(config, self.pipeline, built, self.context, secure=secure_aggregation is not None)
        self.pipeline, self.components, self.privacy = assembled.pipeline, assembled.components, assembled.privacy
        self.malicious = self.attackers = assembled.malicious
        self._ready = False

    def setup(self) -> None:
        """Prepare every client's data, load the FM with adapters, open the run directory."""
        if self._ready:
            return
        cfg = self.config
        data = split_data(cfg)
        splits = prepare_clients(data.splits, self.components, seed=cfg.seed)
        self.client_train = {cid: tr for cid, (tr, _) in splits.items()}
        self.client_holdout = {cid: ho for cid, (_, ho) in splits.items()}
        self.test = data.test
        from trustfl.data import label_names

        self.label_names = label_names(data.dataset) if cfg.model.task == "classification" else None
        num_labels = len(self.label_names) if self.label_names else None
        side = build_model_side(cfg, num_labels=num_labels, privacy=self.privacy)
        self.fm, self.model, self.layout, self.trainer = side.fm, side.model, side.layout, side.trainer

        def tok(d: Any) -> list[dict[str, Any]]:
            return tokenize_examples(d, self.fm.tokenizer, max_length=cfg.model.max_length, task=cfg.model.task)

        clients = build_clients(self.client_train, self.trainer, self.fm.tokenizer, max_length=cfg.model.max_length,
                                task=cfg.model.task, progress=self.progress)
        local = LocalEngine(clients, seed=cfg.seed, progress=self.progress, secure_aggregation=self.secure_aggregation,
                            sum_weights=self.pipeline.sum_weights if self.secure_aggregation else None)
        self.engine = build_engine(cfg, local, privacy=self.privacy, num_labels=num_labels, progress=self.progress)
        self.test_examples = self.trainer.attach_prefix(tok(data.test))
        self.eval_sets = {name: (self.trainer.attach_prefix(tok(records)), target) for c in self.components
                          for name, (records, target) in c.eval_sets(data.test).items()}
        self.baseline_accuracy = (majority_baseline(list(data.train["label"]), list(data.test["label"]))
                                  if cfg.model.task == "classification" else None)
        extra, self.fingerprints = run_extra(self, data)
        self.server = ServerRound(pipeline=self.pipeline, components=self.components, layout=self.layout,
                                  seed=cfg.seed, server_lr=cfg.server.server_lr, malicious=self.malicious,
                                  save_client_updates=cfg.federation.save_client_updates)
        opened = open_run(self.out_dir, config=cfg, layout=self.layout, initial=self.layout.flatten(self.model),
                          fingerprints=self.fingerprints, extra=extra, pipeline=self.pipeline, resume=self.resume,
                          components=self.components, overwrite=self.overwrite, signing_key=self.signing_key)
        self.writer, self.global_vector = opened.writer, opened.global_vector
        self.start_round, self.history = opened.start_round, opened.history
        self.timings: list[dict[str, float]] = []
        self._ready = True

    def sample_clients(self, round: int) -> list[int]:
        """Sorted ids: k of N without replacement (``federation.sampling="fixed"``) or Poisson at k/N (maybe none)."""
        n, k = self.config.partition.num_clients, self.config.clients_per_round
        gen = generator(self.config.seed, "sample", round)
        if self.config.federation.sampling == "poisson":
            return (torch.rand(n, generator=gen, dtype=torch.float64) < k / n).nonzero().flatten().tolist()
        return sorted(torch.randperm(n, generator=gen)[:k].tolist())

    def _evaluate(self, round: int, vector: torch.Tensor) -> dict[str, Any] | None:
        fed = self.config.federation
        if round % fed.eval_every != 0 and round != fed.rounds:
            return None
        self.layout.load_into(self.model, vector)
        out = evaluate(self.trainer, self.test_examples, task=self.config.model.task)
        for name, (examples, target) in self.eval_sets.items():
            out[name] = float((predict(self.trainer, examples) == target).float().mean())
        return out

    def run(self) -> RunSummary:
        """Run (or resume) all rounds; return the summary. The run directory is committed per round."""
        self.setup()
        stopped: str | None = None
        bar = tqdm(range(self.start_round, self.config.federation.rounds + 1), desc="federated rounds",
                   unit="round", disable=not self.progress)
        for r in bar:
            try:
                for component in self.components:
                    component.check_budget(r)
            except StopFederation as stop:
                stopped = stop.reason
                break
            t0 = time.perf_counter()
            ids = self.sample_clients(r)
            view = self.engine.fit(r, ids, self.global_vector) if ids else ServerView(client_ids=[], results=[])
            t1 = time.perf_counter()
            outcome = self.server.run(r, view, self.global_vector)
            t2 = time.perf_counter()
            metrics: dict[str, Any] = {"round": r, "clients": ids, "attackers": [c for c in ids if c in self.malicious]}
            evaluation = self._evaluate(r, outcome.global_vector)
            if evaluation is not None:
                metrics["eval"] = evaluation
            t3 = time.perf_counter()
            metrics.update(outcome.metrics)
            metrics["time"] = {"clients_s": t1 - t0, "server_s": t2 - t1, "eval_s": t3 - t2}
            report = RoundReport(round=r, global_vector=outcome.global_vector, client_ids=ids,
                                 aggregate=outcome.aggregate, metrics=metrics)
            for hook in [*(c.after_round for c in self.components), self.engine.after_round, *self.callbacks]:
                try:
                    metrics.update(hook(report) or {})
                except StopFederation as stop:
                    stopped = stop.reason
                    metrics.update(stop.metrics)
            commit_round(self.writer, r, global_vector=outcome.global_vector, metrics=metrics,
                         client_updates=outcome.client_updates, pipeline=self.pipeline, components=self.components)
            t4 = time.perf_counter()
            self.global_vector = outcome.global_vector
            self.history.append(metrics)
            self.timings.append({"round": r, "clients_s": t1 - t0, "server_s": t2 - t1, "eval_s": t3 - t2,
                                 "write_s": t4 - t3, "total_s": t4 - t0})
            if evaluation is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in evaluation.items() if k != "tokens"})
            if stopped:
                break
        bar.close()
        if stopped:
            log.warning("run stopped after round %d: %s", self.writer.completed_rounds, stopped)
        self.layout.load_into(self.model, self.global_vector)
        last_eval = next((m["eval"] for m in reversed(self.history) if "eval" in m), {})
        return RunSummary(run_dir=self.out_dir, rounds_completed=self.writer.completed_rounds,
                          final_metrics=last_eval, baseline_accuracy=self.baseline_accuracy,
                          history=list(self.history), stopped_reason=stopped)
