"""Reference-calibrated loss: how much better the target fits a record than a reference model does.

Score = loss_reference(x) - loss_target(x), i.e. the per-token log-likelihood ratio
log p_target(x) - log p_reference(x). A record that is merely easy (short, common words) is
easy for the reference too; only what the target learnt from the record moves the score.
Carlini et al. 2021 ("Extracting Training Data from Large Language Models", USENIX Security,
Section 6.2, comparison with a second model); Mireshghallah et al. 2022 ("Quantifying Privacy
Risks of Masked Language Models Using Membership Inference Attacks", likelihood-ratio test);
Watson et al. 2022 ("On the Importance of Difficulty Calibration in Membership Inference Attacks").
For an adapted FM the natural reference is the frozen base FM without the adapter
(``reference="base"``: the peft model with its adapter disabled).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from trustfl.attacks.membership._records import TASKS, RecordOutputs
from trustfl.attacks.membership.base import MembershipAttack
from trustfl.attacks.membership.errors import MembershipError
from trustfl.attacks.membership.loss import per_record_loss

__all__ = ["ReferenceAttack"]


class ReferenceAttack(MembershipAttack):
    """``loss_reference - loss_target`` per record (higher = member).

    Fit with one of:
        ``reference="base"`` (default): the target's own base FM, its peft adapter disabled
            (causal LM only: a classification head trained with the adapter has no base counterpart);
        ``reference=<model>``: any model scoring the same records with the same tokenizer
            (e.g. a shadow adapter trained on population data);
        ``reference_losses=<[n] tensor>``: precomputed reference losses of the records to be scored.

    Example:
        >>> s = ReferenceAttack().fit(reference="base").score(peft_lm, recs, tokenizer=tok,
        ...                                                   task="causal_lm")  # doctest: +SKIP
    """

    name: ClassVar[str] = "reference"
    tasks: ClassVar[tuple[str, ...]] = TASKS
    needs_reference: ClassVar[bool] = True
    calibration: ClassVar = "reference_model"
    shares_forward: ClassVar[bool] = True

    def __init__(self) -> None:
        self._reference: Any = None
        self._reference_losses: torch.Tensor | None = None

    def fit(self, *, reference: nn.Module | str | None = None,  # type: ignore[override]
            reference_losses: Any = None) -> "ReferenceAttack":
        if reference is not None and reference_losses is not None:
            raise MembershipError("ReferenceAttack.fit: give either reference or reference_losses, not both")
        if reference is None and reference_losses is None:
            reference = "base"
        if reference_losses is not None:
            losses = torch.as_tensor(reference_losses, dtype=torch.float64)
            if losses.ndim != 1 or losses.numel() == 0:
                raise MembershipError(f"ReferenceAttack.fit: reference_losses must be a non-empty 1-D array, got "
                                      f"shape {tuple(losses.shape)}")
            if not torch.isfinite(losses).all():
                raise MembershipError("ReferenceAttack.fit: reference_losses hold NaN/Inf values")
            self._reference_losses, self._reference = losses, None
        elif isinstance(reference, str):
            if reference != "base":
                raise MembershipError(f"ReferenceAttack.fit: reference={reference!r}; valid: 'base' or a model")
            self._reference, self._reference_losses = "base", None
        elif isinstance(reference, nn.Module):
            self._reference, self._reference_losses = reference, None
        else:
            raise MembershipError(f"ReferenceAttack.fit: reference must be 'base' or a torch model, got "
                                  f"{type(reference).__name__}")
        return self._fitted()  # type: ignore[return-value]

    def _from_outputs(self, outputs: RecordOutputs, model: nn.Module, records: Any, *, tokenizer: Any, task: str,
                      max_length: int, batch_size: int, progress: bool) -> torch.Tensor:
        kw = dict(tokenizer=tokenizer, task=task, max_length=max_length, batch_size=batch_size, progress=progress)
        target = outputs.loss
        if self._reference_losses is not None:
            if self._reference_losses.numel() != target.numel():
                raise MembershipError(f"ReferenceAttack: fitted with {self._reference_losses.numel()} reference "
                                      f"losses but scoring {target.numel()} records; they must be the same records")
            return self._reference_losses - target
        if self._reference == "base":
            return base_model_loss(model, records, **kw) - target
        return per_record_loss(self._reference, records, **kw) - target


def base_model_loss(model: nn.Module, records: Any, *, tokenizer: Any, task: str, max_length: int = 128,
                    batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """Per-record loss of a peft model's frozen base FM (its adapters disabled for the call)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise MembershipError(f"reference='base' needs a peft-adapted model (PeftModel) to disable its adapter; "
                              f"got {type(model).__name__}. Pass reference=<base model> instead")
    if task != "causal_lm":
        raise MembershipError(f"reference='base' is for task='causal_lm': the {task} head was trained with the "
                              "adapter and has no base counterpart; pass a reference model (e.g. a shadow adapter)")
    with model.disable_adapter():
        return per_record_loss(model, records, tokenizer=tokenizer, task=task, max_length=max_length,
                               batch_size=batch_size, progress=progress)
