"""Tokenize once (an in-memory `Dataset.map`), pad per batch (`DynamicPaddingCollator`).

Tokenization truncates but never pads, so each batch is padded only to its own longest
sequence (right padding): short-text corpora such as SMS or TREC then cost a fraction of
fixed-length padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from datasets import Dataset
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from torch.nn.utils.rnn import pad_sequence

__all__ = ["IGNORE_INDEX", "DynamicPaddingCollator", "Task", "tokenize_dataset"]

Task = Literal["classification", "causal_lm"]
IGNORE_INDEX = -100  # the label value torch's cross-entropy ignores
_TASKS = ("classification", "causal_lm")


def _check_task(task: str) -> None:
    if task not in _TASKS:
        raise ValueError(f"task={task!r} is unknown; valid tasks: {list(_TASKS)}")


def tokenize_dataset(
    ds: Dataset,
    tokenizer: Any,
    *,
    max_length: int,
    task: Task,
    text_column: str = "text",
    label_column: str = "label",
) -> Dataset:
    """Tokenize `ds[text_column]` into `input_ids` and `attention_mask`, truncated to `max_length`.

    No padding here (see `DynamicPaddingCollator`). The result is kept in memory: nothing is
    written to the `datasets` cache, whatever the source of `ds`. For "classification" the label column
    is kept and renamed `labels`; for "causal_lm" only `input_ids` and `attention_mask`
    remain (labels are made at collate time). Every other column is removed.

    Raises:
        ValueError: bad `max_length` or `task`, or a missing column (lists the available ones).
    """
    _check_task(task)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length={max_length!r} is invalid: it must be an integer >= 1")
    needed = [text_column] + ([label_column] if task == "classification" else [])
    for column in needed:
        if column not in ds.column_names:
            raise ValueError(f"column {column!r} is not in the dataset; available columns: {ds.column_names}")

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        enc = tokenizer(
            batch[text_column], truncation=True, max_length=max_length, padding=False, return_attention_mask=True
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    keep = [label_column] if task == "classification" else []
    # Token ids encode the private text verbatim: never write them to the `datasets` cache
    # (keep_in_memory, no cache file), and no "Map" progress bar of its own (callers show theirs).
    quiet = not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        out = ds.map(encode, batched=True, remove_columns=[c for c in ds.column_names if c not in keep],
                     keep_in_memory=True, load_from_cache_file=False)
    finally:
        if quiet:
            enable_progress_bars()
    if task == "classification":
        out = out.rename_column(label_column, "labels")
    return out


@dataclass(frozen=True)
class DynamicPaddingCollator:
    """Collate tokenized rows into right-padded LongTensors, padded to the batch's longest row.

    Returns `input_ids` [b, L], `attention_mask` [b, L] and `labels`: [b] class ids for
    "classification" (from each row's `labels`, or `label`); for "causal_lm" a copy of
    `input_ids` [b, L] with padded positions set to -100. Pad positions come from the
    attention mask, not from `pad_token_id`, so a real EOS token equal to the pad token
    stays a training target.

    >>> collate = DynamicPaddingCollator(pad_token_id=0, task="causal_lm")
    >>> collate([{"input_ids": [5, 6]}, {"input_ids": [7]}])["labels"].tolist()
    [[5, 6], [7, -100]]
    """

    pad_token_id: int
    task: Task

    def __post_init__(self) -> None:
        _check_task(self.task)
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int):
            raise ValueError(f"pad_token_id={self.pad_token_id!r} is invalid: it must be an int (tokenizer.pad_token_id)")

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(features) == 0:
            raise ValueError("cannot collate an empty batch (features=[])")
        ids = [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
        if any(t.ndim != 1 or t.numel() == 0 for t in ids):
            raise ValueError("every row needs a non-empty one-dimensional input_ids; got an empty or nested row")
        masks = [
            torch.as_tensor(f["attention_mask"], dtype=torch.long) if "attention_mask" in f else torch.ones_like(t)
            for f, t in zip(features, ids)
        ]
        if any(m.shape != t.shape for m, t in zip(masks, ids)):
            raise ValueError("attention_mask and input_ids differ in length in some row")
        input_ids = pad_sequence(ids, batch_first=True, padding_value=self.pad_token_id)
        attention_mask = pad_sequence(masks, batch_first=True, padding_value=0)
        if self.task == "causal_lm":
            labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        else:
            key = "labels" if "labels" in features[0] else "label"
            if any(key not in f for f in features):
                raise ValueError("classification rows need a 'labels' (or 'label') entry in every row")
            labels = torch.as_tensor([int(f[key]) for f in features], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
