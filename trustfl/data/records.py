"""Build the uniform record table every trustfl dataset uses: `text`, `label`, extras.

All loaders go through `make_dataset`, so text cleaning (strip, drop empty) and the
`ClassLabel` that carries the class names are applied in one place, the same way for the
offline corpora and for user files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from datasets import ClassLabel, Dataset, Features, Value

from trustfl.data.errors import DataSourceError

logger = logging.getLogger(__name__)

__all__ = ["label_names", "make_dataset"]


def make_dataset(
    texts: Sequence[Any],
    labels: Sequence[int] | None,
    *,
    names: Sequence[str] | None,
    source: str,
    extra: Mapping[str, Sequence[Any]] | None = None,
) -> Dataset:
    """Clean `texts`, drop empty ones (logged with a count) and build the Arrow table.

    Texts are stripped of surrounding whitespace; `None`/empty texts are dropped together
    with their labels and extra values, and the number dropped is logged at INFO level so
    nothing disappears silently. With `names`, `label` is a `ClassLabel(names=names)`;
    without, a plain int64 column; with `labels=None` there is no label column (causal LM).

    Raises:
        DataSourceError: columns of different lengths, or a label outside `names`.
    """
    extra = dict(extra or {})
    n = len(texts)
    lengths = {"labels": len(labels)} if labels is not None else {}
    lengths.update({k: len(v) for k, v in extra.items()})
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise DataSourceError(f"{source}: column lengths {bad} differ from the {n} texts")
    keep = [i for i, t in enumerate(texts) if t is not None and str(t).strip()]
    dropped = n - len(keep)
    if dropped:
        logger.info("%s: dropped %d of %d rows with an empty text", source, dropped, n)
    columns: dict[str, list[Any]] = {"text": [str(texts[i]).strip() for i in keep]}
    features: dict[str, Any] = {"text": Value("string")}
    if labels is not None:
        columns["label"] = [int(labels[i]) for i in keep]
        if names is not None:
            k = len(names)
            out = sorted({y for y in columns["label"] if not 0 <= y < k})
            if out:
                raise DataSourceError(
                    f"{source}: labels {out[:5]} lie outside 0..{k - 1} of the class names {list(names)}"
                )
            features["label"] = ClassLabel(names=list(names))
        else:
            features["label"] = Value("int64")
    for key, values in extra.items():
        columns[key] = [values[i] for i in keep]
    # Extras keep the types Arrow infers; text and label get ours (no cast pass needed).
    if extra:
        features.update(Dataset.from_dict({k: columns[k] for k in extra}).features)
    return Dataset.from_dict(columns, features=Features(features))


def label_names(ds: Dataset, *, label_column: str = "label") -> list[str]:
    """Class names of `ds[label_column]`, read from its `ClassLabel` feature.

    Raises:
        ValueError: the column is missing or is not a `ClassLabel` (e.g. raw int labels).
    """
    if label_column not in ds.column_names:
        raise ValueError(
            f"label_column={label_column!r} is not a column; available columns: {ds.column_names}"
        )
    feature = ds.features[label_column]
    if not isinstance(feature, ClassLabel):
        raise ValueError(
            f"column {label_column!r} has feature {feature!r}, not a ClassLabel, so it carries no "
            "class names; load it through trustfl.data.load_dataset_source to get one"
        )
    return list(feature.names)
