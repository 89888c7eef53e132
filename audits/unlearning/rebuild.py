"""Rebuild what the verification evaluates from a run's recorded config: model, test set, backdoor set,
and each client's training (as trained, i.e. after the data attacks) and holdout records.

Every run linked by an unlearning shares its parent's config (only ``federation.rounds`` differs), so
one rebuild evaluates all of their adapter vectors. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Rebuilt", "rebuild"]


@dataclass
class Rebuilt:
    """A run's model side and data, ready to evaluate adapter vectors."""

    config: Any
    fm: Any
    model: torch.nn.Module
    layout: Any
    trainer: Any
    test_examples: list[dict[str, Any]]
    eval_sets: dict[str, tuple[list[dict[str, Any]], int]]
    client_train: dict[int, Any]
    client_holdout: dict[int, Any]
    test: Any
    fingerprints_match: bool
    warnings: list[str] = field(default_factory=list)

    def evaluate(self, vector: torch.Tensor) -> dict[str, float]:
        """Test metrics of ``vector`` plus each evaluation set's success rate (e.g. ``attack_success_rate``)."""
        from trustfl.federation.evaluate import evaluate, predict

        self.layout.load_into(self.model, vector.float())
        out = evaluate(self.trainer, self.test_examples, task=self.config.model.task)
        for name, (examples, target) in self.eval_sets.items():
            out[name] = float((predict(self.trainer, examples) == target).float().mean())
        return out


_CACHE: dict[tuple[str, str], Rebuilt] = {}  # the last rebuild, keyed by (run path, manifest sha256)


def rebuild(run: Any, *, progress: bool = False) -> Rebuilt:
    """Rebuild ``run`` (a :class:`~trustfl.rundir.RunDir`) as its federation set itself up, without a run directory.

    The last rebuild is kept (keyed by the run's path and manifest hash): auditing several unlearning
    runs of one parent in a process loads the model and data once.

    Raises:
        ValueError: the rebuilt adapter layout differs from the recorded one (names or shapes); a client's
            rebuilt training or holdout records differ from the manifest's ``client_<id>_train`` /
            ``client_<id>_holdout`` fingerprint (the membership sets would not be the records the run trained on).
    """
    from trustfl.rundir import sha256_file

    key = (str(run.path.resolve()), sha256_file(run.path / "manifest.json"))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _rebuild(run, progress=progress)
    return _CACHE[key]


def _rebuild(run: Any, *, progress: bool) -> Rebuilt:
    from trustfl import plugins
    from trustfl.config import RunConfig
    from trustfl.data import fingerprint_dataset, label_names
    from trustfl.federation.assemble import assemble
    from trustfl.federation.clients import prepare_clients, split_data, tokenize_examples
    from trustfl.federation.setup import build_model_side
    from trustfl.types import RunContext

    cfg = RunConfig.from_dict(run.config)
    context = RunContext(config=cfg, seed=cfg.seed, num_clients=cfg.partition.num_clients,
                         clients_per_round=cfg.clients_per_round, rounds=cfg.federation.rounds, progress=progress)
    assembled = assemble(cfg, cfg.server.build_pipeline(), plugins.build_components(cfg), context, secure=False)
    data = split_data(cfg)
    splits = prepare_clients(data.splits, assembled.components, seed=cfg.seed)
    names = label_names(data.dataset) if cfg.model.task == "classification" else None
    side = build_model_side(cfg, num_labels=len(names) if names else None, privacy=None)
    recorded = run.layout
    ours = side.layout.to_dict()  # JSON lists, as the manifest records them
    for key in ("names", "shapes"):
        if ours[key] != list(recorded.get(key) or []):
            raise ValueError(f"the rebuilt model's adapter layout differs from the run's recorded layout (parameter "
                             f"{key}); rebuild with the model the run used")

    def tok(d: Any) -> list[dict[str, Any]]:
        return side.trainer.attach_prefix(tokenize_examples(d, side.fm.tokenizer, max_length=cfg.model.max_length,
                                                            task=cfg.model.task))

    eval_sets = {name: (tok(records), target) for c in assembled.components
                 for name, (records, target) in c.eval_sets(data.test).items()}
    stored = (run.manifest.get("fingerprints") or {})
    match = not stored.get("test") or stored.get("test") == fingerprint_dataset(data.test)
    warnings = [] if match else ["the rebuilt test set differs from the one the run recorded (fingerprint)"]
    if not run.check_client_records(splits):  # raises RecordsMismatchError (a ValueError) on a mismatch
        warnings.append("the run records no client dataset fingerprints: the rebuilt clients' records are not checked")
    return Rebuilt(config=cfg, fm=side.fm, model=side.model, layout=side.layout, trainer=side.trainer,
                   test_examples=tok(data.test), eval_sets=eval_sets,
                   client_train={c: tr for c, (tr, _) in splits.items()},
                   client_holdout={c: ho for c, (_, ho) in splits.items()}, test=data.test,
                   fingerprints_match=match, warnings=warnings)
