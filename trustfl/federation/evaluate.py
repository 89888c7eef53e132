"""Evaluation of the global model on a held-out test set.

Classification: accuracy, macro-F1 (scikit-learn) and mean cross-entropy. Causal LM: mean
token cross-entropy and perplexity = exp(loss), weighted by the number of predicted tokens.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["evaluate", "majority_baseline", "predict"]


@torch.no_grad()
def evaluate(trainer: Any, examples: list[dict[str, Any]], *, task: str, batch_size: int = 64) -> dict[str, float]:
    """Evaluate ``trainer.model`` (eval mode, batches sorted by length) on ``examples``.

    ``trainer`` is a :class:`~trustfl.federation.client.LocalTrainer`; its batcher and, when
    present, its frozen-prefix replay are reused, so evaluation costs what training costs.
    """
    if not examples:
        raise ValueError("evaluate: the test set is empty")
    model = trainer.model
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: int(examples[i]["input_ids"].shape[0]))
    preds, golds = [], []
    loss_sum, weight = 0.0, 0
    try:
        for start in range(0, len(order), batch_size):
            batch = trainer.batcher([examples[i] for i in order[start:start + batch_size]])
            out = trainer.forward(batch)
            if task == "causal_lm":
                tokens = int((batch["labels"][:, 1:] != -100).sum())
                loss_sum += float(out.loss) * tokens
                weight += tokens
            else:
                n = int(batch["labels"].shape[0])
                loss_sum += float(out.loss) * n
                weight += n
                preds.append(out.logits.argmax(-1))
                golds.append(batch["labels"])
    finally:
        model.train(was_training)
    loss = loss_sum / max(weight, 1)
    if task == "causal_lm":
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": float(weight)}
    from sklearn.metrics import accuracy_score, f1_score

    y_pred = torch.cat(preds).numpy()
    y_true = torch.cat(golds).numpy()
    return {"loss": loss, "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


@torch.no_grad()
def predict(trainer: Any, examples: list[dict[str, Any]], *, batch_size: int = 64) -> torch.Tensor:
    """Predicted classes of ``trainer.model`` for ``examples`` (in their order), eval mode."""
    model = trainer.model
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: int(examples[i]["input_ids"].shape[0]))
    out = torch.empty(len(examples), dtype=torch.long)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            logits = trainer.forward(trainer.batcher([examples[i] for i in idx])).logits
            out[torch.tensor(idx)] = logits.argmax(-1)
    finally:
        model.train(was_training)
    return out


def majority_baseline(train_labels: list[int], test_labels: list[int]) -> float:
    """Test accuracy of always predicting the most frequent training label."""
    if not train_labels or not test_labels:
        raise ValueError("majority_baseline: empty labels")
    counts = torch.bincount(torch.as_tensor(train_labels))
    majority = int(counts.argmax())
    return float(sum(1 for y in test_labels if y == majority) / len(test_labels))
