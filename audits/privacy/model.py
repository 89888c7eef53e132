"""The model an attacker of a run sees: the FM with the run's final global adapter (and the initial one as the
natural reference), rebuilt from the recorded config or given by the user for a run of their own loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trustfl.audits.privacy.settings import PrivacyAuditError

__all__ = ["RunModel", "load_adapter", "load_run_model"]


@dataclass
class RunModel:
    """``model`` carries the adapter ``vector`` of round ``round``; ``initial`` is the round-0 global vector
    (the federation's starting point: the frozen FM with its untrained adapter and head)."""

    model: torch.nn.Module
    tokenizer: Any
    task: str
    max_length: int
    layout: Any
    vector: torch.Tensor
    initial: torch.Tensor
    round: int

    def use(self, vector: torch.Tensor) -> torch.nn.Module:
        """Load ``vector`` into the model and return it."""
        self.layout.load_into(self.model, vector.float())
        return self.model


def _final_round(run: Any, round: int | None) -> int:
    done = run.completed_rounds
    if done < 1:
        raise PrivacyAuditError(f"{run.path}: the run has no completed round; there is no trained model to audit")
    if round is None:
        return done
    if isinstance(round, bool) or not isinstance(round, int) or not 1 <= round <= done:
        raise PrivacyAuditError(f"round={round!r}: must be an integer in [1, {done}] (the run's completed rounds)")
    return round


def load_adapter(run: Any, model: torch.nn.Module, *, round: int | None = None) -> tuple[Any, torch.Tensor]:
    """Load the run's global adapter of ``round`` (default: the last) into your own ``model`` (a run of your own
    loop): the model's trainable parameters must match the recorded layout. Returns ``(layout, vector)``.

    Raises:
        PrivacyAuditError: no completed round, or the model's trainable parameters differ from the layout.
    """
    from trustfl.models import ParamLayout

    r = _final_round(run, round)
    layout = ParamLayout.from_model(model)
    rec = run.layout
    if list(layout.names) != list(rec.get("names", [])) or \
            [list(s) for s in layout.shapes] != [list(s) for s in rec.get("shapes", [])]:
        raise PrivacyAuditError(f"{run.path}: the model's trainable parameters ({len(layout.names)} tensors, "
                                f"d = {layout.size}) differ from the run's recorded layout (d = {run.d}); build the "
                                "model exactly as the run did")
    vector = run.global_vector(r)
    layout.load_into(model, vector)
    return layout, vector


def load_run_model(run: Any, *, config: Any = None, round: int | None = None) -> RunModel:
    """Rebuild the run's FM + adapters from its recorded config and load the global adapter of ``round``.

    Raises:
        PrivacyAuditError: not a trustfl config, no completed round, or a layout that differs from the run's.
    """
    from trustfl.audits.privacy.records import run_config
    from trustfl.federation.setup import build_model_side

    cfg = run_config(run, config)
    r = _final_round(run, round)
    extra = run.manifest.get("extra") or {}
    labels = extra.get("label_names")
    num_labels = len(labels) if cfg.model.task == "classification" and labels else None
    if cfg.model.task == "classification" and num_labels is None:
        raise PrivacyAuditError(f"{run.path}: the manifest records no label_names, so the classifier cannot be rebuilt")
    try:
        side = build_model_side(cfg, num_labels=num_labels, privacy=None)
    except Exception:
        if not extra.get("model_path") or extra["model_path"] == cfg.model.name:
            raise
        cfg.model.name = extra["model_path"]  # the run's resolved local folder
        side = build_model_side(cfg, num_labels=num_labels, privacy=None)
    rec = run.layout
    if list(side.layout.names) != list(rec.get("names", [])) or \
            [list(s) for s in side.layout.shapes] != [list(s) for s in rec.get("shapes", [])]:
        raise PrivacyAuditError(f"{run.path}: the model rebuilt from the recorded config has another adapter layout "
                                "than the run recorded")
    vector, initial = run.global_vector(r), run.global_vector(0)
    side.layout.load_into(side.model, vector)
    side.model.eval()
    return RunModel(model=side.model, tokenizer=side.fm.tokenizer, task=cfg.model.task,
                    max_length=cfg.model.max_length, layout=side.layout, vector=vector, initial=initial, round=r)
