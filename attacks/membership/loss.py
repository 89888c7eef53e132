"""The LOSS attack (Yeom et al. 2018, "Privacy Risk in Machine Learning", CSF): members have lower loss."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from trustfl.attacks.membership._records import TASKS, RecordOutputs, record_outputs
from trustfl.attacks.membership.base import MembershipAttack

__all__ = ["LossAttack", "per_record_loss"]


def per_record_loss(model: nn.Module, records: Any, *, tokenizer: Any, task: str, max_length: int = 128,
                    batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """Per-record loss, float64 ``[len(records)]``, in the records' order.

    Causal LM: the mean cross-entropy of the record's predicted tokens (positions 1..T-1,
    as training's shifted labels). Classification: the cross-entropy of the true label.
    The model runs in eval mode (restored afterwards), tokenized and collated as in training.

    Raises:
        MembershipError: empty records, missing columns, unknown task, too-short records,
            labels outside the model's classes, non-finite losses.

    Example:
        >>> loss = per_record_loss(model, [{"text": "hello world"}], tokenizer=tok, task="causal_lm")  # doctest: +SKIP
    """
    return record_outputs(model, records, tokenizer=tokenizer, task=task, max_length=max_length,
                          batch_size=batch_size, progress=progress, desc="record losses").loss


class LossAttack(MembershipAttack):
    """Score = -loss (Yeom et al. 2018): records the model fits unusually well are called members."""

    name: ClassVar[str] = "loss"
    tasks: ClassVar[tuple[str, ...]] = TASKS
    shares_forward: ClassVar[bool] = True

    def __init__(self) -> None:
        pass

    def _from_outputs(self, outputs: RecordOutputs, model: nn.Module, records: Any, **kw: Any) -> torch.Tensor:
        return -outputs.loss
