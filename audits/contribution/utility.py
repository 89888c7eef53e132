"""The test-set utility of a run's model: rebuild it once from the recorded config, evaluate adapter vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ModelUtility", "build_utility"]


@dataclass
class ModelUtility:
    """``utility(vector)``: test accuracy (classification) or ``-loss`` (causal LM) of the model with
    the adapter ``vector`` loaded. One model, the test rows tokenized once with the frozen prefix cached."""

    trainer: Any
    layout: Any
    examples: list[dict[str, Any]]
    task: str
    metric: str
    initial_matches: bool
    calls: int = 0

    def __call__(self, vector: torch.Tensor) -> float:
        from trustfl.federation.evaluate import evaluate

        self.calls += 1
        self.layout.load_into(self.trainer.model, vector.float())
        out = evaluate(self.trainer, self.examples, task=self.task)
        return float(out["accuracy"]) if self.task == "classification" else -float(out["loss"])


def build_utility(run: Any, *, test_records: int = 200) -> ModelUtility:
    """Rebuild the run's model side (:func:`trustfl.federation.setup.build_model_side`) from its recorded
    config and tokenize the first ``test_records`` of its test rows (manifest extra ``test_rows``).

    Raises:
        ValueError: the run records no test rows, or the rebuilt model's adapter layout differs.
    """
    from trustfl.config import RunConfig
    from trustfl.data import load_dataset_source
    from trustfl.federation.clients import tokenize_examples
    from trustfl.federation.setup import build_model_side

    extra = run.manifest.get("extra") or {}
    rows = extra.get("test_rows")
    if not rows:
        raise ValueError("the run records no test rows (manifest extra 'test_rows'), so there is no test set")
    cfg = RunConfig.from_dict(run.config)
    labels = extra.get("label_names")
    num_labels = len(labels) if cfg.model.task == "classification" and labels else None
    try:
        side = build_model_side(cfg, num_labels=num_labels, privacy=None)
    except Exception:
        if not extra.get("model_path") or extra["model_path"] == cfg.model.name:
            raise
        cfg.model.name = extra["model_path"]
        side = build_model_side(cfg, num_labels=num_labels, privacy=None)
    recorded = run.layout
    if list(side.layout.names) != list(recorded.get("names", [])) or \
            [list(s) for s in side.layout.shapes] != [list(s) for s in recorded.get("shapes", [])]:
        raise ValueError("the rebuilt model's adapter layout differs from the run's recorded layout")
    initial_matches = bool(torch.equal(side.layout.flatten(side.model).float(), run.global_vector(0)))
    ds = load_dataset_source(cfg.data.name, text_column=cfg.data.text_column, label_column=cfg.data.label_column)
    chosen = [int(r) for r in rows[: max(1, int(test_records))]]
    test = ds.select(chosen)
    examples = tokenize_examples(test, side.fm.tokenizer, max_length=cfg.model.max_length, task=cfg.model.task)
    examples = side.trainer.attach_prefix(examples)
    metric = "test accuracy" if cfg.model.task == "classification" else "minus test loss"
    return ModelUtility(trainer=side.trainer, layout=side.layout, examples=examples, task=cfg.model.task,
                        metric=metric, initial_matches=initial_matches)
