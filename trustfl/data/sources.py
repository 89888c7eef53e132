"""One entry point for every data source: offline corpora, local CSV/JSON(L) files, HF hub.

`load_dataset_source(name)` returns a `datasets.Dataset` with `text` (str), `label` (int,
a `ClassLabel` carrying class names where known) and any extra columns, whatever the
source, so partitioning, fingerprinting and tokenization never care where data came from.

Example:
    >>> ds = load_dataset_source("trec")                      # doctest: +SKIP
    >>> ds = load_dataset_source("reviews.csv", text_column="body", label_column="stars")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
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
    loader); a path ending in .csv/.json/.jsonl/.txt (.txt: one unlabelled text per non-empty
    line); anything else is tried as a Hugging Face hub dataset with `split`.

    Local files are private client data: they are read **in memory** (UTF-8; CSV with pandas'
    type inference, JSON Lines or a JSON list of objects) and never copied to the `datasets`
    cache (`~/.cache/huggingface/datasets`) or any other file; the returned Dataset has no
    cache files, so later `.map`/`select` calls stay in memory too. File options in `kw`:
    `sep`/`delimiter` (CSV), `field` (a .json document's list of records); `cache_dir` is
    accepted and ignored. For files and hub datasets `text_column`/`label_column` are renamed to
    `text`/`label`; string labels become ints indexing the sorted distinct names, stored
    as a `ClassLabel` (see `label_names`). Texts are stripped; empty ones are dropped and
    the count logged. Use `label_column=None` for unlabelled text (causal LM).

    Raises:
        DataSourceError: missing file or package, a file that is not UTF-8 text, is empty,
            has a header but no rows or only blank texts, a column that is not in the data (the
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
        if (text_column, label_column) != ("text", None):
            _check_file(name)
            raise DataSourceError(f"{name!r}: a .txt file holds one unlabelled text per line and has no columns; "
                                  "use text_column='text', label_column=None (or a .csv/.json/.jsonl file)")
        lines = _read_text(name, kw).splitlines()
        ds = make_dataset(lines, None, names=None, source=name)
        if not len(ds):
            raise DataSourceError(f"data file {name!r}: no non-empty texts: all {len(lines)} lines are blank")
        return ds
    if suffix in _FILE_BUILDERS:
        raw = _read_table(name, _FILE_BUILDERS[suffix], kw)
        ds = _standardize(raw, text_column=text_column, label_column=label_column, source=name)
        if not len(ds):
            raise DataSourceError(f"data file {name!r}: no non-empty texts: all {len(raw)} values of column "
                                  f"{text_column!r} are empty or blank")
        return ds
    try:
        raw = datasets.load_dataset(name, split=split, **kw)
    except Exception as exc:
        raise DataSourceError(
            f"{name!r} is neither a built-in source {sorted(SOURCES)} nor a .csv/.json/.jsonl path, and "
            f"loading it from the Hugging Face hub (split={split!r}) failed: {type(exc).__name__}: {exc}. "
            "The hub needs network access; without it, pass a local file path instead"
        ) from exc
    return _standardize(raw, text_column=text_column, label_column=label_column, source=name)


_FILE_OPTIONS = {"csv": {"sep", "delimiter"}, "json": {"field"}, "text": set()}


def _check_file(name: str) -> Path:
    path = Path(name)
    if path.is_dir():
        raise DataSourceError(f"data file {name!r} is a directory, not a .csv/.json/.jsonl/.txt file")
    if not path.is_file():
        raise DataSourceError(f"data file {name!r} does not exist (resolved to {path.resolve()})")
    return path


def _file_options(name: str, fmt: str, kw: dict[str, Any]) -> dict[str, Any]:
    """The reader options of `kw` (``cache_dir`` is ignored: local files are never cached)."""
    options = {k: v for k, v in kw.items() if k != "cache_dir"}
    unknown = sorted(set(options) - _FILE_OPTIONS[fmt])
    if unknown:
        raise DataSourceError(f"{name!r}: unknown option(s) {unknown} for a {fmt} file; accepted: "
                              f"{sorted(_FILE_OPTIONS[fmt] | {'cache_dir'})}")
    return options


def _read_text(name: str, kw: dict[str, Any], fmt: str = "text") -> str:
    """The whole file as text; clear errors for a directory, a missing, binary, non-UTF-8 or empty file."""
    path = _check_file(name)
    _file_options(name, fmt, kw)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataSourceError(f"data file {name!r} cannot be read: {exc.strerror or exc}") from exc
    if b"\x00" in data[:65536]:
        raise DataSourceError(f"data file {name!r} is not a text file (it holds NUL bytes: binary data?); "
                              "give a UTF-8 .csv/.json/.jsonl/.txt file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataSourceError(f"data file {name!r} is not UTF-8 text (invalid byte at offset {exc.start}); "
                              "save it as UTF-8") from exc
    if not data or (fmt != "text" and not text.strip()):
        what = "0 bytes" if not data else "only whitespace"
        raise DataSourceError(f"data file {name!r} is empty ({what}, no records)")
    return text


def _read_table(name: str, fmt: str, kw: dict[str, Any]) -> Dataset:
    """Read a local CSV/JSON(L) file into an in-memory Dataset (no cache file, no progress bar)."""
    options = _file_options(name, fmt, kw)
    text = _read_text(name, kw, fmt)
    if fmt == "csv":
        import pandas as pd

        try:
            frame = pd.read_csv(io.StringIO(text), **options)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            raise DataSourceError(f"could not read {name!r} as CSV: {str(exc).strip()}") from exc
        if frame.empty:
            raise DataSourceError(f"data file {name!r} has a header (columns {list(frame.columns)}) but no data rows")
        frame.columns = [str(c) for c in frame.columns]
        try:
            return Dataset.from_pandas(frame, preserve_index=False)
        except Exception as exc:  # pyarrow type errors (mixed types in a column)
            raise DataSourceError(f"could not read {name!r} as CSV: {exc}") from exc
    rows = _json_records(name, text, options.get("field"))
    if not rows:
        raise DataSourceError(f"data file {name!r} holds no records (an empty JSON list)")
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key in row:
            columns.setdefault(str(key), [])
    try:
        return Dataset.from_dict({k: [row.get(k) for row in rows] for k in columns})
    except Exception as exc:  # pyarrow: a column mixing types (e.g. ints and strings)
        raise DataSourceError(f"could not read {name!r} as JSON: {type(exc).__name__}: {exc}") from exc


def _json_records(name: str, text: str, field: str | None) -> list[dict[str, Any]]:
    """JSON Lines (one object per line), a JSON list of objects, or ``doc[field]``."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = None
        if field is not None:
            raise DataSourceError(f"{name!r}: field={field!r} needs one JSON document, but the file is not valid JSON")
    if field is not None:
        if not isinstance(doc, dict) or field not in doc:
            keys = sorted(doc) if isinstance(doc, dict) else []
            raise DataSourceError(f"{name!r}: field={field!r} is not a key of the JSON document; keys: {keys}")
        doc = doc[field]
    if isinstance(doc, list):
        bad = next((i for i, r in enumerate(doc) if not isinstance(r, dict)), None)
        if bad is not None:
            raise DataSourceError(f"{name!r}: record {bad} is {type(doc[bad]).__name__}, not a JSON object")
        return doc
    if isinstance(doc, dict):  # one object on one line = JSON Lines with one record
        if text.strip().count("\n") == 0:
            return [doc]
        raise DataSourceError(f"{name!r}: a JSON object is not a list of records; give JSON Lines (one object "
                              "per line) or a list of objects")
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataSourceError(f"{name}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(row, dict):
            raise DataSourceError(f"{name}:{lineno}: a record must be a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


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
