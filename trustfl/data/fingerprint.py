"""Content fingerprints of datasets, recorded in run manifests and compared by audits.

A fingerprint is the sha256 of a canonical byte encoding of the records, in order:
texts go through :func:`trustfl.text.normalize_for_fingerprint` (NFC, whitespace runs
collapsed to one space, ends stripped), so re-saving a file with other line endings or Unicode composition does not
change it; every value is length-prefixed, so ("ab", "c") and ("a", "bc") differ.
"""

from __future__ import annotations

import hashlib
import numbers
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from datasets import Dataset

from trustfl.text.normalize import normalize_for_fingerprint

__all__ = ["fingerprint_dataset", "fingerprint_records"]

_VERSION = b"trustfl-fingerprint-v1"
_BATCH = 4096


def _encode(value: Any) -> bytes:
    """Type-tagged, length-prefixed bytes of one value (str, int, float, None, list)."""
    if value is None:
        return b"N"
    if isinstance(value, str):
        body, tag = normalize_for_fingerprint(value).encode("utf-8"), b"S"
    elif isinstance(value, (bool, numbers.Integral)):
        body, tag = str(int(value)).encode("ascii"), b"I"
    elif isinstance(value, numbers.Real):
        body, tag = repr(float(value)).encode("ascii"), b"F"
    elif isinstance(value, (list, tuple)):
        body, tag = b"".join(_encode(v) for v in value), b"L" + struct.pack(">Q", len(value))
    else:
        raise TypeError(f"cannot fingerprint a value of type {type(value).__name__}: {value!r}")
    return tag + struct.pack(">Q", len(body)) + body


def _digest(columns: Sequence[str], batches: Iterable[dict[str, list[Any]]]) -> str:
    h = hashlib.sha256(_VERSION)
    h.update(_encode(list(columns)))
    rows = 0
    for batch in batches:
        for record in zip(*(batch[c] for c in columns), strict=True):
            h.update(b"R" + b"".join(_encode(v) for v in record))
            rows += 1
    h.update(b"E" + struct.pack(">Q", rows))
    return h.hexdigest()


def fingerprint_dataset(ds: Dataset, columns: Sequence[str] = ("text", "label")) -> str:
    """Hex sha256 of `ds[columns]`, row order and column order included.

    Raises:
        ValueError: a requested column is missing (the message lists the available ones).
        TypeError: a column holds values that are not str/int/float/None/lists of them.

    >>> ds = Dataset.from_dict({"text": ["a"], "label": [0]})
    >>> fingerprint_dataset(ds) == fingerprint_records(["a"], [0])
    True
    """
    columns = list(columns)
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"columns {missing} are not in the dataset; available columns: {ds.column_names}")
    return _digest(columns, ds.select_columns(columns).iter(batch_size=_BATCH))


def fingerprint_records(texts: Sequence[str], labels: Sequence[int] | None = None) -> str:
    """Fingerprint plain lists; equals `fingerprint_dataset` of the same `text`(/`label`) columns.

    Raises:
        ValueError: `texts` and `labels` differ in length.
    """
    if labels is None:
        return _digest(["text"], [{"text": list(texts)}])
    if len(texts) != len(labels):
        raise ValueError(f"texts ({len(texts)}) and labels ({len(labels)}) must have the same length")
    return _digest(["text", "label"], [{"text": list(texts), "label": list(labels)}])
