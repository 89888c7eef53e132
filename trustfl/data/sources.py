"""One entry point for every data source: offline corpora, local CSV/JSON(L) files, HF hub.

`load_dataset_source(name)` returns a `datasets.Dataset` with `text` (str), `label` (int,
a `ClassLabel` carrying class names where known) and any extra columns, whatever the
source, so partitioning, fingerprinting and tokenization never care where data came from.

Example:
    >>> ds = load_dataset_source("trec")                      # doctest: +SKIP
    >>> ds = load_dataset_source("reviews.csv", text_column="body", label_column="stars")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
from datasets import ClassLabel, Dataset

from trustfl.data.corpora import health_tweets, sms_spam, trec
from trustfl.data.errors import DataSourceError
from trustfl.data.records import make_dataset

__all__ = ["SOURCES", "load_dataset_source", "register_source"]

SOURCES: dict[str, Callable[..., Dataset]] = {
    "health_tweets": health_tweets,
    "sms_spam": sms_spam,
    "trec": trec,
}
_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json"}


def register_source(name: str, loader: Callable[..., Dataset]) -> None:
    """Add a named source; `load_dataset_source(name, **kw)` will call `loader(**kw)`.

    Raises:
        ValueError: `name` is already registered (the registry never overwrites silently).
    """
    if name in SOURCES:
        raise ValueError(f"source name {name!r} is already registered; registered names: {sorted(SOURCES)}")
    SOURCES[name] = loader


def load_dataset_source(
    name: str,
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    split: str = "train",
    **kw: Any,
) -> Dataset:
    """Load `name` as a Dataset with columns `text`, `label` (unless `label_column=None`), extras.

    Dispatch: a registered name (`SOURCES`: health_tweets, sms_spam, trec; `kw` go to its
    loader); a path ending in .csv/.json/.jsonl (read with `datasets.load_dataset`, `kw`
    passed on, e.g. `cache_dir`); a .txt path (one unlabelled text per non-empty line); anything else is tried as a Hugging Face hub dataset
    with `split`. For files and hub datasets `text_column`/`label_column` are renamed to
    `text`/`label`; string labels become ints indexing the sorted distinct names, stored
    as a `ClassLabel` (see `label_names`). Texts are stripped; empty ones are dropped and
    the count logged. Use `label_column=None` for unlabelled text (causal LM).

    Raises:
        DataSourceError: missing file or package, a column that is not in the data (the
            message lists the available ones), missing labels, or a hub dataset that could
            not be loaded (no network here: pass a local path instead).
    """
    if name in SOURCES:
        if (text_column, label_column, split) != ("text", "label", "train"):
            raise DataSourceError(
                f"source {name!r} is a built-in corpus with fixed columns; text_column, label_column "
                "and split apply only to files and hub datasets"
            )
        return SOURCES[name](**kw)
    suffix = Path(name).suffix.lower()
    if suffix == ".txt":  # one record per non-empty line, no columns
        if not Path(name).is_file():
            raise DataSourceError(f"data file {name!r} does not exist (resolved to {Path(name).resolve()})")
        if (text_column, label_column) != ("text", None):
            raise DataSourceError(f"{name!r}: a .txt file holds one unlabelled text per line and has no columns; "
                                  "use text_column='text', label_column=None (or a .csv/.json/.jsonl file)")
        return make_dataset(Path(name).read_text(encoding="utf-8").splitlines(), None, names=None, source=name)
    if suffix in _FILE_BUILDERS:
        if not Path(name).is_file():
            raise DataSourceError(f"data file {name!r} does not exist (resolved to {Path(name).resolve()})")
        try:
            raw = datasets.load_dataset(_FILE_BUILDERS[suffix], data_files=str(name), split="train", **kw)
        except Exception as exc:  # the builders raise many types; keep the cause chained
            raise DataSourceError(f"could not read {name!r} as {_FILE_BUILDERS[suffix]}: {exc}") from exc
        return _standardize(raw, text_column=text_column, label_column=label_column, source=name)
    try:
        raw = datasets.load_dataset(name, split=split, **kw)
    except Exception as exc:
        raise DataSourceError(
            f"{name!r} is neither a built-in source {sorted(SOURCES)} nor a .csv/.json/.jsonl path, and "
            f"loading it from the Hugging Face hub (split={split!r}) failed: {type(exc).__name__}: {exc}. "
            "The hub needs network access; without it, pass a local file path instead"
        ) from exc
    return _standardize(raw, text_column=text_column, label_column=label_column, source=name)


def _standardize(raw: Dataset, *, text_column: str, label_column: str | None, source: str) -> Dataset:
    """Rename the chosen columns to `text`/`label`, type the labels and clean the texts."""
    available = raw.column_names
    wanted = {"text_column": text_column} | ({"label_column": label_column} if label_column else {})
    for param, column in wanted.items():
        if column not in available:
            raise DataSourceError(f"{source}: {param}={column!r} is not a column; available columns: {available}")
    targets = {text_column: "text"} | ({label_column: "label"} if label_column else {})
    clashes = [c for c in ("text", "label") if c in available and c not in targets and c in targets.values()]
    if clashes:
        raise DataSourceError(
            f"{source}: columns {clashes} exist and would be overwritten by the renamed columns; "
            f"pass them as text_column/label_column or rename them in the file"
        )
    extra = {c: raw[c][:] for c in available if c not in targets}  # [:] -> list, fast
    labels: list[int] | None = None
    names: list[str] | None = None
    if label_column:
        labels, names = _encode_labels(raw, label_column, source)
    return make_dataset(raw[text_column][:], labels, names=names, source=source, extra=extra)


def _encode_labels(raw: Dataset, column: str, source: str) -> tuple[list[int], list[str] | None]:
    """Ints as they are (names kept from a ClassLabel); strings to sorted-name indices."""
    feature = raw.features[column]
    values = raw[column][:]
    missing = sum(v is None for v in values)
    if missing:
        raise DataSourceError(f"{source}: label column {column!r} has {missing} missing values; fill or drop them")
    if isinstance(feature, ClassLabel):
        return [int(v) for v in values], list(feature.names)
    if all(isinstance(v, str) for v in values):
        names = sorted(set(values))
        index = {n: i for i, n in enumerate(names)}
        return [index[v] for v in values], names
    if all(isinstance(v, (bool, int)) or (isinstance(v, float) and v.is_integer()) for v in values):
        return [int(v) for v in values], None
    bad = next(v for v in values if not isinstance(v, (bool, int, float, str)) or isinstance(v, float))
    raise DataSourceError(
        f"{source}: label column {column!r} holds {bad!r} ({type(bad).__name__}); labels must be ints or strings"
    )
