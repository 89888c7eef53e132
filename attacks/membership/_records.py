"""Records in, per-record model outputs out: the one forward pass every score is built from.

Tokenization and collation are exactly those of training (:func:`trustfl.data.tokenize_dataset`,
:class:`trustfl.data.DynamicPaddingCollator`), so a record's loss here is the loss the
federated loop optimised. Logits become log-probabilities in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from trustfl.attacks.membership.errors import MembershipError

__all__ = ["RecordOutputs", "TASKS", "as_dataset", "batch_losses", "check_task", "record_outputs"]

TASKS = ("classification", "causal_lm")


def check_task(task: str, supported: Sequence[str] = TASKS, *, who: str = "membership attack") -> None:
    if task not in supported:
        raise MembershipError(f"task={task!r} is not supported by {who}; valid tasks: {list(supported)}")


def as_dataset(records: Any, *, task: str) -> Any:
    """A ``datasets.Dataset`` with a string ``text`` column (and an int ``label`` for classification).

    Raises:
        MembershipError: empty records, a missing column, a non-string text or a non-integer label.
    """
    from datasets import Dataset

    if isinstance(records, Dataset):
        ds = records
    elif isinstance(records, Sequence) and not isinstance(records, (str, bytes)):
        if any(not isinstance(r, Mapping) for r in records):
            raise MembershipError("records: every record must be a dict with a 'text' key (and 'label' for "
                                  "classification)")
        if len(records) == 0:
            raise MembershipError("records: empty; give at least one record")
        keys = {"text"} | ({"label"} if task == "classification" else set())
        missing = [i for i, r in enumerate(records) if not keys <= set(r)]
        if missing:
            raise MembershipError(f"records: record {missing[0]} lacks {sorted(keys - set(records[missing[0]]))}; "
                                  f"every record needs {sorted(keys)}")
        try:
            ds = Dataset.from_list([dict(r) for r in records])
        except Exception as exc:  # pyarrow: mixed types in a column
            raise MembershipError(f"records: cannot build a table from them: {exc}") from exc
    else:
        raise MembershipError(f"records: expected a datasets.Dataset or a list of dicts, got {type(records).__name__}")
    if len(ds) == 0:
        raise MembershipError("records: empty; give at least one record")
    needed = ["text"] + (["label"] if task == "classification" else [])
    for column in needed:
        if column not in ds.column_names:
            raise MembershipError(f"records: column {column!r} is missing (task={task!r}); columns: {ds.column_names}")
    texts = ds["text"][:]
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise MembershipError(f"records: text of record {bad} is {type(texts[bad]).__name__}, not a string")
    if task == "classification":
        labels = ds["label"][:]
        bad = next((i for i, y in enumerate(labels) if isinstance(y, bool) or not isinstance(y, int) or y < 0), None)
        if bad is not None:
            raise MembershipError(f"records: label of record {bad} is {labels[bad]!r}; labels must be class "
                                  "indices >= 0")
    return ds


@dataclass
class RecordOutputs:
    """Per-record outputs, in the records' order (float64).

    ``loss[i]``: mean token cross-entropy (causal LM) or the true label's cross-entropy.
    Causal LM only: ``token_logp[i]`` [T_i], the log-probability of each predicted token, and
    (with ``vocab_stats``) ``token_mu[i]``/``token_sigma[i]`` [T_i], the mean and standard deviation
    of log p(z) for z drawn from the model's next-token distribution at that position.
    Classification only: ``logp[i]`` [C], log-probabilities of every class.
    """

    loss: torch.Tensor
    token_logp: list[torch.Tensor] | None = None
    token_mu: list[torch.Tensor] | None = None
    token_sigma: list[torch.Tensor] | None = None
    logp: torch.Tensor | None = None


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def tokenized_rows(records: Any, *, tokenizer: Any, task: str, max_length: int) -> tuple[list[dict[str, Any]], Any]:
    """``records`` tokenized as training tokenizes them, one dict per record, and the collator that pads them.

    Raises:
        MembershipError: bad records, or a record too short for the task's loss (a causal LM needs 2 tokens).
    """
    from trustfl.data import DynamicPaddingCollator, tokenize_dataset

    ds = as_dataset(records, task=task)
    tok = tokenize_dataset(ds.select_columns(["text"] + (["label"] if task == "classification" else [])),
                           tokenizer, max_length=max_length, task=task)  # type: ignore[arg-type]
    rows = [{k: tok[i][k] for k in tok.column_names} for i in range(len(tok))]
    need = 2 if task == "causal_lm" else 1
    short = [i for i, r in enumerate(rows) if len(r["input_ids"]) < need]
    if short:
        raise MembershipError(f"records: {len(short)} record(s) (first: {short[0]}) tokenize to fewer than {need} "
                              f"token(s); a {task} loss needs at least {need}. Drop empty/one-word texts")
    return rows, DynamicPaddingCollator(pad_token_id=_pad_id(tokenizer), task=task)  # type: ignore[arg-type]


def batch_losses(logits: torch.Tensor, batch: Mapping[str, torch.Tensor], *, task: str,
                 vocab_stats: bool = False) -> RecordOutputs:
    """Per-record outputs of one collated batch from its logits (rows in batch order), in float64.

    ``batch["labels"]``: class ids [b] (classification) or the collator's causal labels [b, L]
    (-100 at padding), shifted here as training shifts them.
    """
    logits = logits.detach().cpu()
    labels = batch["labels"].cpu()
    if task == "classification":
        lp = torch.log_softmax(logits.to(torch.float64), dim=-1)
        if int(labels.max()) >= lp.shape[-1]:
            raise MembershipError(f"records: label {int(labels.max())} is outside the model's {lp.shape[-1]} classes")
        return RecordOutputs(loss=-lp.gather(1, labels[:, None]).squeeze(1), logp=lp)
    targets = labels[:, 1:]
    losses, token_logp, token_mu, token_sigma = [], [], [], []
    for row in range(targets.shape[0]):
        valid = targets[row] != -100
        lp = torch.log_softmax(logits[row, :-1][valid].to(torch.float64), dim=-1)  # [T, V]
        t_lp = lp.gather(1, targets[row][valid][:, None]).squeeze(1)
        token_logp.append(t_lp)
        losses.append(-t_lp.mean())
        if vocab_stats:
            p = lp.exp()
            plp = torch.where(p > 0, p * lp, torch.zeros_like(lp))
            mu = plp.sum(-1)
            second = torch.where(p > 0, plp * lp, torch.zeros_like(lp)).sum(-1)
            token_mu.append(mu)
            token_sigma.append((second - mu * mu).clamp_min(0).sqrt())
    return RecordOutputs(loss=torch.stack(losses), token_logp=token_logp,
                         token_mu=token_mu if vocab_stats else None, token_sigma=token_sigma if vocab_stats else None)


@torch.no_grad()
def record_outputs(model: nn.Module, records: Any, *, tokenizer: Any, task: str, max_length: int = 128,
                   batch_size: int = 32, progress: bool = False, vocab_stats: bool = False,
                   desc: str = "scoring records") -> RecordOutputs:
    """Run ``model`` (eval mode, restored afterwards) over ``records``; see :class:`RecordOutputs`.

    Raises:
        MembershipError: bad records/task/sizes, a causal-LM record of fewer than 2 tokens
            (nothing to predict), a label outside the model's classes, non-finite outputs.
    """
    check_task(task)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise MembershipError(f"max_length={max_length!r}: must be an integer >= 2")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MembershipError(f"batch_size={batch_size!r}: must be an integer >= 1")
    if not isinstance(model, nn.Module):
        raise MembershipError(f"model: expected a torch.nn.Module (an HF model, optionally peft-wrapped), got "
                              f"{type(model).__name__}")
    rows, collate = tokenized_rows(records, tokenizer=tokenizer, task=task, max_length=max_length)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    n = len(rows)
    order = sorted(range(n), key=lambda i: len(rows[i]["input_ids"]))
    loss = torch.empty(n, dtype=torch.float64)
    token_logp: list[Any] = [None] * n
    token_mu: list[Any] = [None] * n
    token_sigma: list[Any] = [None] * n
    class_logp: torch.Tensor | None = None
    was_training = model.training
    model.eval()
    try:
        starts = range(0, n, batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress, leave=False, unit="batch"):
            idx = order[start:start + batch_size]
            batch = collate([rows[i] for i in idx])
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits.detach().cpu()
            part = batch_losses(logits, batch, task=task, vocab_stats=vocab_stats)
            where = torch.tensor(idx)
            loss[where] = part.loss
            if task == "classification":
                assert part.logp is not None
                if class_logp is None:
                    class_logp = torch.empty((n, part.logp.shape[-1]), dtype=torch.float64)
                class_logp[where] = part.logp
                continue
            for row, i in enumerate(idx):
                token_logp[i] = part.token_logp[row]  # type: ignore[index]
                if vocab_stats:
                    token_mu[i] = part.token_mu[row]  # type: ignore[index]
                    token_sigma[i] = part.token_sigma[row]  # type: ignore[index]
    finally:
        model.train(was_training)
    if not torch.isfinite(loss).all():
        bad = int((~torch.isfinite(loss)).sum())
        raise MembershipError(f"model: {bad} of {n} record losses are NaN/Inf; are the model's weights finite?")
    if task == "classification":
        return RecordOutputs(loss=loss, logp=class_logp)
    return RecordOutputs(loss=loss, token_logp=token_logp, token_mu=token_mu if vocab_stats else None,
                         token_sigma=token_sigma if vocab_stats else None)
