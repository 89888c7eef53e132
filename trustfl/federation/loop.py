"""The federated LoRA loop: ``Federation(config).run()``.

Each round the server samples clients (seeded), every sampled client fine-tunes the LoRA
adapter from the current global vector and returns ``delta`` plus its sample count, update
attacks (if any) rewrite the attackers' deltas, the server pipeline aggregates, the global
adapter moves by ``server_lr * aggregate``, the model is evaluated on the held-out test set,
and the round is committed to the run directory. All randomness is derived from
``(seed, purpose, round, client)``, so ``--resume`` after a kill reproduces the uninterrupted
run exactly. FedAvg: McMahan et al. 2017.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from trustfl.config import RunConfig
from trustfl.errors import ConfigError, StopFederation
from trustfl.federation.client import Batcher, LocalTrainer, to_examples
from trustfl.federation.engine import LocalEngine
from trustfl.federation.evaluate import evaluate, majority_baseline, predict
from trustfl.federation.hooks import (AttackContext, ClientPrivacy, ClientResult, DataAttack, RoundCallback,
                                      RoundReport, SecureAggregator, UpdateAttack)
from trustfl.seeding import derive_seed, generator

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


def detection_counts(info: Any, is_attacker: Sequence[bool]) -> dict[str, int]:
    """Confusion counts of "the defense caught this client" (flagged or not accepted) vs attacker truth."""
    caught = (info.flagged | ~info.accepted).tolist()
    pairs = list(zip(caught, is_attacker))
    return {"tp": sum(c and a for c, a in pairs), "fp": sum(c and not a for c, a in pairs),
            "fn": sum(a and not c for c, a in pairs), "tn": sum(not c and not a for c, a in pairs)}


class Federation:
    """A federated fine-tuning run of a LoRA adapter on an FM.

    Args:
        config: the typed :class:`~trustfl.config.RunConfig`.
        out_dir: run directory (default ``runs/<config.name>``).
        pipeline: server aggregation pipeline (default: ``config.server.aggregator``, FedAvg).
        data_attacks: ``{client_id: DataAttack}`` applied to those clients' training records.
        update_attack / attackers: an update attack and the client ids that run it.
        privacy: a client-side privacy hook (sample-level DP) used by every client.
        secure_aggregation: a secure-sum hook; the pipeline must then need only a weighted sum.
        callbacks: called after every round (may add metrics or raise ``StopFederation``).
        resume: continue the run in ``out_dir`` from its last complete round.
        overwrite: replace an existing run directory.
        progress: show progress bars.
    """

    def __init__(self, config: RunConfig, *, out_dir: str | Path | None = None, pipeline: Any = None,
                 data_attacks: dict[int, DataAttack] | None = None, update_attack: UpdateAttack | None = None,
                 attackers: Sequence[int] = (), privacy: ClientPrivacy | None = None,
                 secure_aggregation: SecureAggregator | None = None, callbacks: Sequence[RoundCallback] = (),
                 resume: bool = False, overwrite: bool = False, progress: bool = True) -> None:
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else Path("runs") / config.name
        from trustfl.defenses import Pipeline

        if pipeline is not None and not isinstance(pipeline, Pipeline):
            pipeline = Pipeline(aggregator=pipeline)  # a bare aggregator gets the pipeline's per-client checks
        self.pipeline = pipeline if pipeline is not None else config.server.build_pipeline()
        if config.attack.active and not (data_attacks or update_attack or attackers):
            data_attacks, update_attack, attackers = self._attacks_from_config()
        self.data_attacks = dict(data_attacks or {})
        self.update_attack = update_attack
        self.attackers = sorted(set(int(a) for a in attackers))  # run the update attack
        self.malicious = sorted(set(self.attackers) | set(self.data_attacks))  # ground truth for detection
        self.privacy = privacy
        self.secure_aggregation = secure_aggregation
        self.callbacks = list(callbacks)
        if config.privacy.enabled:  # DP hook, DP-FedAvg stages and accountants (trustfl.defenses.dp)
            from trustfl.defenses.dp.wiring import configure_privacy

            self.privacy, self.pipeline, dp_callbacks = configure_privacy(
                config, privacy=self.privacy, pipeline=self.pipeline, pipeline_given=pipeline is not None)
            self.callbacks.extend(dp_callbacks)
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress
        self.timings: list[dict[str, float]] = []
        n = config.partition.num_clients
        bad = [a for a in [*self.attackers, *self.data_attacks] if not 0 <= a < n]
        if bad:
            raise ConfigError(f"attackers: client ids {bad} out of range [0, {n - 1}]")
        if update_attack is not None and not self.attackers:
            raise ConfigError("update_attack is set but no attackers were named")
        if secure_aggregation is not None:
            if self.pipeline.requires_individual_updates:
                raise ConfigError(f"secure_aggregation: the pipeline {self.pipeline!r} needs individual updates, "
                                  "which secure aggregation hides; use a sum-only pipeline (FedAvg [+ noise])")
            if config.federation.save_client_updates:
                raise ConfigError("secure_aggregation: federation.save_client_updates must be false (the server "
                                  "never sees individual updates)")
        self._ready = False

    def _attacks_from_config(self) -> tuple[dict[int, DataAttack], UpdateAttack | None, list[int]]:
        """Build the configured attacks; attackers are listed or drawn with the run seed."""
        from trustfl.attacks import make_attack

        atk, n = self.config.attack, self.config.partition.num_clients
        if atk.attackers is not None:
            ids = sorted(set(atk.attackers))
        else:
            k = max(1, round(float(atk.fraction) * n))  # type: ignore[arg-type]
            ids = sorted(torch.randperm(n, generator=generator(self.config.seed, "attackers"))[:k].tolist())
        data_attack = make_attack("data", atk.data) if atk.data is not None else None
        if data_attack is not None and hasattr(data_attack, "attackers") and not data_attack.attackers:
            data_attack.attackers = list(ids)  # colluding data attacks (DBA) split work among attackers
        update_attack = make_attack("update", atk.update) if atk.update is not None else None
        return ({i: data_attack for i in ids} if data_attack is not None else {}), update_attack, ids

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Load and split the data, load the FM with adapters, open the run directory."""
        if self._ready:
            return
        from trustfl.data import (fingerprint_dataset, holdout_split, label_names, load_dataset_source,
                                  partition_dataset, tokenize_dataset, train_test_split_dataset)
        from trustfl.models import FrozenPrefix, ParamLayout, PrefixStore, apply_lora, find_layer_stack, load_fm

        cfg, seed = self.config, self.config.seed
        import datasets

        datasets.disable_progress_bars()  # one "tokenizing clients" bar instead of a bar per map
        ds = load_dataset_source(cfg.data.name, text_column=cfg.data.text_column,
                                 label_column=cfg.data.label_column)
        ds = ds.add_column("row_id", list(range(len(ds))))
        if cfg.data.max_records is not None and cfg.data.max_records < len(ds):
            ds = ds.shuffle(seed=derive_seed(seed, "subsample") % 2**32).select(range(cfg.data.max_records))
        train, test = train_test_split_dataset(ds, test_fraction=cfg.data.test_fraction,
                                               seed=derive_seed(seed, "test") % 2**32)
        parts = partition_dataset(train, scheme=cfg.partition.scheme, num_clients=cfg.partition.num_clients,
                                  seed=derive_seed(seed, "partition") % 2**32, alpha=cfg.partition.alpha,
                                  key_column=cfg.partition.key_column)
        if len(parts) != cfg.partition.num_clients:
            raise ConfigError(f"partition: produced {len(parts)} clients, config says num_clients = "
                              f"{cfg.partition.num_clients}")
        self.client_train, self.client_holdout = {}, {}
        splits = {cid: holdout_split(part, holdout_fraction=cfg.data.holdout_fraction,
                                     seed=derive_seed(seed, "holdout", cid) % 2**32) for cid, part in enumerate(parts)}
        self.dedup_summary: dict[str, Any] | None = None
        if cfg.dedup.enabled:  # near-duplicate removal over the clients' training records (docs/dedup.md)
            from trustfl.defenses.dedup.wiring import deduplicate_clients

            kept, self.dedup_summary = deduplicate_clients({cid: tr for cid, (tr, _) in splits.items()}, cfg,
                                                           progress=self.progress)
            splits = {cid: (kept[cid], ho) for cid, (_, ho) in splits.items()}
        for cid, (tr, ho) in splits.items():
            if cid in self.data_attacks:
                tr = self.data_attacks[cid](tr, client_id=cid, seed=derive_seed(seed, "data_attack", cid))
            self.client_train[cid], self.client_holdout[cid] = tr, ho
        self.test = test
        self.label_names = label_names(ds) if cfg.model.task == "classification" else None
        num_labels = len(self.label_names) if self.label_names else None

        self.fm = load_fm(cfg.model.name, task=cfg.model.task, num_labels=num_labels,
                          seed=derive_seed(seed, "head") % 2**32, pooling=cfg.model.pooling)
        torch.manual_seed(derive_seed(seed, "lora"))
        self.model = apply_lora(self.fm.model, cfg.lora, task=cfg.model.task)
        self.layout = ParamLayout.from_model(self.model)
        prefix = None
        if cfg.lora.top_layers is not None and cfg.lora.cache_prefix:
            _, stack = find_layer_stack(self.model)
            first = len(stack) - cfg.lora.top_layers
            if first > 0:
                prefix = FrozenPrefix(self.model, first_trainable=first)
        store = PrefixStore(cfg.lora.prefix_cache_dir, prefix) if prefix and cfg.lora.prefix_cache_dir else None
        batcher = Batcher(pad_token_id=self.fm.pad_token_id, task=cfg.model.task)
        c = cfg.client
        self.trainer = LocalTrainer(self.model, self.layout, batcher, epochs=c.epochs, max_steps=c.max_steps,
                                    batch_size=c.batch_size, lr=c.lr, weight_decay=c.weight_decay,
                                    max_grad_norm=c.max_grad_norm, optimizer=c.optimizer, momentum=c.momentum,
                                    head_lr=c.head_lr,
                                    prefix=prefix, privacy=self.privacy,
                                    prefix_store=store)

        def tok(d: Any) -> list[dict[str, Any]]:
            return to_examples(tokenize_dataset(d, self.fm.tokenizer, max_length=cfg.model.max_length,
                                                task=cfg.model.task))

        examples = {cid: tok(d) for cid, d in tqdm(self.client_train.items(), desc="tokenizing clients",
                                                   disable=not self.progress, leave=False)}
        empty = [cid for cid, ex in examples.items() if not ex]
        if empty:
            raise ConfigError(f"partition: clients {empty} have no training records after the holdout split; "
                              "use fewer clients or a smaller data.holdout_fraction")
        self.engine = LocalEngine(self.trainer, examples, seed=seed, progress=self.progress)
        self.test_examples = self.trainer.attach_prefix(tok(test))
        self.success_examples, self.success_target = None, None
        for attack in {id(a): a for a in self.data_attacks.values()}.values():
            success = attack.success_set(test) if hasattr(attack, "success_set") else None
            if success is not None and len(success[0]) > 0:
                self.success_examples = self.trainer.attach_prefix(tok(success[0]))
                self.success_target = int(success[1])
        self.baseline_accuracy = (majority_baseline(list(train["label"]), list(test["label"]))
                                  if cfg.model.task == "classification" else None)
        self.fingerprints = {"dataset": fingerprint_dataset(ds), "test": fingerprint_dataset(test),
                             **{f"client_{cid}_train": fingerprint_dataset(d) for cid, d in self.client_train.items()},
                             **{f"client_{cid}_holdout": fingerprint_dataset(d)
                                for cid, d in self.client_holdout.items()}}
        self._open_run_dir()
        self._ready = True

    def _open_run_dir(self) -> None:
        from trustfl.rundir import RunDir, RunWriter

        cfg = self.config
        if self.resume:
            self.writer = RunWriter.resume(self.out_dir, config=cfg.to_dict())
            done = self.writer.completed_rounds
            reader = RunDir(self.out_dir)
            stored = reader.manifest.get("fingerprints", {})
            if stored and stored != self.fingerprints:
                diff = sorted(k for k in set(stored) | set(self.fingerprints) if stored.get(k) != self.fingerprints.get(k))
                raise ConfigError(f"resume: the data differs from the original run ({diff[:4]}...)")
            self.global_vector = reader.global_vector(done).clone()
            if done > 0 and reader.manifest["rounds"][done].get("state"):
                self.pipeline.load_state_dict(reader.state(done))
            self.history = reader.metrics()
            if self.config.privacy.enabled:
                from trustfl.defenses.dp.wiring import restore_privacy

                restore_privacy(self.callbacks, self.history)
            self.start_round = done + 1
            log.info("resuming %s after round %d", self.out_dir, done)
            return
        extra = {
            "engine": "local",
            "pipeline": repr(self.pipeline),
            "attackers": self.malicious,
            "update_attackers": self.attackers,
            "data_attacks": {str(k): repr(v) for k, v in self.data_attacks.items()},
            "update_attack": repr(self.update_attack) if self.update_attack is not None else None,
            "label_names": self.label_names,
            "baseline_accuracy": self.baseline_accuracy,
            "model_path": self.fm.path,
            # float reductions depend on it: bit-exact reproduction needs the same thread count
            "torch_num_threads": torch.get_num_threads(),
            "clients": {str(cid): {"train_rows": list(map(int, self.client_train[cid]["row_id"])),
                                   "holdout_rows": list(map(int, self.client_holdout[cid]["row_id"]))}
                        for cid in self.client_train},
            "test_rows": list(map(int, self.test["row_id"])),
            "dedup": self.dedup_summary,
        }
        self.writer = RunWriter.create(self.out_dir, config=cfg.to_dict(), layout=self.layout.to_dict(),
                                       seeds={"seed": cfg.seed}, fingerprints=self.fingerprints, extra=extra,
                                       overwrite=self.overwrite)
        self.global_vector = self.layout.flatten(self.model).clone()
        self.writer.write_initial(self.global_vector)
        self.history = []
        self.start_round = 1

    # ------------------------------------------------------------------ rounds
    def sample_clients(self, round: int) -> list[int]:
        """The clients of ``round``: a seeded uniform sample without replacement, sorted."""
        n, k = self.config.partition.num_clients, self.config.clients_per_round
        perm = torch.randperm(n, generator=generator(self.config.seed, "sample", round))
        return sorted(perm[:k].tolist())

    def _server_step(self, round: int, results: list[ClientResult]) -> tuple[Any, torch.Tensor]:
        from trustfl.defenses import Aggregate, AggregateInfo

        ids = [r.client_id for r in results]
        updates = torch.stack([r.delta for r in results])
        attacker_rows = [i for i, cid in enumerate(ids) if cid in self.attackers]
        malicious_rows = sum(1 for cid in ids if cid in self.malicious)
        if self.update_attack is not None and attacker_rows:
            benign_rows = [i for i in range(len(ids)) if i not in attacker_rows]
            context = AttackContext(
                round=round, attacker_ids=[ids[i] for i in attacker_rows], global_vector=self.global_vector,
                benign_updates=updates[benign_rows] if getattr(self.update_attack, "omniscient", False) else None,
                generator=generator(self.config.seed, "update_attack", round))
            malicious = self.update_attack(updates[attacker_rows].clone(), context=context)
            if tuple(malicious.shape) != (len(attacker_rows), updates.shape[1]):
                raise ValueError(f"update attack returned shape {tuple(malicious.shape)}, expected "
                                 f"{(len(attacker_rows), updates.shape[1])}")
            updates[attacker_rows] = malicious.to(updates.dtype)
        weights = torch.tensor([float(r.num_samples) for r in results], dtype=torch.float64)
        self.pipeline.check_tolerance(len(ids), malicious_rows)
        if self.secure_aggregation is not None:
            total, wsum = self.secure_aggregation.weighted_sum(updates, weights)
            aggregate = Aggregate(total / wsum, AggregateInfo.all_accepted(len(ids)))
        else:
            aggregate = self.pipeline(updates, weights, generator=generator(self.config.seed, "server", round),
                                      client_ids=ids)
        return aggregate, updates

    def run(self) -> RunSummary:
        """Run (or resume) all rounds; return the summary. The run directory is committed per round."""
        self.setup()
        cfg = self.config
        stopped: str | None = None
        rounds = range(self.start_round, cfg.federation.rounds + 1)
        bar = tqdm(rounds, desc="federated rounds", unit="round", disable=not self.progress)
        for r in bar:
            t0 = time.perf_counter()
            ids = self.sample_clients(r)
            results = self.engine.fit(r, ids, self.global_vector)
            t1 = time.perf_counter()
            aggregate, updates = self._server_step(r, results)
            new_global = self.global_vector + cfg.server.server_lr * aggregate.vector.to(torch.float32)
            self.layout.check_vector(new_global, what=f"round {r} global adapter")
            t2 = time.perf_counter()
            metrics: dict[str, Any] = {"round": r, "clients": ids, "attackers": [c for c in ids if c in self.malicious]}
            if r % cfg.federation.eval_every == 0 or r == cfg.federation.rounds:
                self.layout.load_into(self.model, new_global)
                metrics["eval"] = evaluate(self.trainer, self.test_examples, task=cfg.model.task)
                if self.success_examples is not None:
                    hits = predict(self.trainer, self.success_examples) == self.success_target
                    metrics["eval"]["attack_success_rate"] = float(hits.float().mean())
            t3 = time.perf_counter()
            metrics["train_loss"] = sum(x.metrics["train_loss"] * x.num_samples for x in results) / max(
                1, sum(x.num_samples for x in results))
            metrics["client_metrics"] = {str(x.client_id): x.metrics for x in results}
            metrics["update_norms"] = {str(cid): float(v) for cid, v in zip(ids, updates.norm(dim=1))}
            metrics["aggregation"] = aggregate.info.to_json([str(c) for c in ids])
            metrics["detection"] = detection_counts(aggregate.info, [c in self.malicious for c in ids])
            metrics["time"] = {"clients_s": t1 - t0, "server_s": t2 - t1, "eval_s": t3 - t2}
            report = RoundReport(round=r, global_vector=new_global, client_ids=ids, aggregate=aggregate,
                                 metrics=metrics)
            for callback in self.callbacks:
                try:
                    extra = callback(report)
                except StopFederation as stop:
                    stopped = stop.reason
                    extra = getattr(stop, "metrics", None)  # e.g. the round's ε when a DP budget stops the run
                if extra:
                    metrics.update(extra)
            updates_out = ({cid: (updates[i], results[i].num_samples) for i, cid in enumerate(ids)}
                           if cfg.federation.save_client_updates else None)
            self.writer.write_round(r, global_vector=new_global, client_updates=updates_out, metrics=metrics,
                                    state=self.pipeline.state_dict() or None)
            if self.config.privacy.enabled or self.privacy is not None:
                from trustfl.defenses.dp.wiring import privacy_summary

                if privacy_summary(metrics):
                    self.writer.update_extra(privacy=privacy_summary(metrics))
            t4 = time.perf_counter()
            self.global_vector = new_global
            self.history.append(metrics)
            self.timings.append({"round": r, "clients_s": t1 - t0, "server_s": t2 - t1, "eval_s": t3 - t2,
                                 "write_s": t4 - t3, "total_s": t4 - t0})
            if "eval" in metrics:
                bar.set_postfix({k: f"{v:.4f}" for k, v in metrics["eval"].items() if k != "tokens"})
            if stopped:
                log.warning("run stopped after round %d: %s", r, stopped)
                break
        bar.close()
        self.layout.load_into(self.model, self.global_vector)
        last_eval = next((m["eval"] for m in reversed(self.history) if "eval" in m), {})
        return RunSummary(run_dir=self.out_dir, rounds_completed=self.writer.completed_rounds,
                          final_metrics=last_eval, baseline_accuracy=self.baseline_accuracy,
                          history=list(self.history), stopped_reason=stopped)
