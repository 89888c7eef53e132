"""Text corpora for origin checks: synthetic records and the reference (training) records.

A :class:`TextCorpus` is a list of texts with, per record, a client id and a record id (the
row in its file or dataset), so every finding can point back to "client 3, record 41". It
is built from Python lists, a ``datasets.Dataset`` or files (``.csv``, ``.json``, ``.jsonl``,
``.txt`` with one record per non-empty line), one file per client or one file with a client
column. Files are read by :func:`trustfl.data.load_dataset_source` (empty texts dropped with a
logged count); texts passed directly must be non-empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustfl.audits.origin.errors import OriginError

__all__ = ["TextCorpus", "load_corpus"]

_SUFFIXES = (".csv", ".json", ".jsonl", ".txt")


@dataclass(frozen=True)
class TextCorpus:
    """Texts with their client and record ids (all three of length ``n``).

    Args:
        texts: the records' text.
        clients: per record, the client (file name, column value or int id) it belongs to.
        record_ids: per record, its row in its file (or its position in its client's list).
        name: a label for reports (e.g. ``"reference"``).

    Raises:
        OriginError: lengths differ, a text is not a ``str`` or is empty/blank.

    Example:
        >>> c = TextCorpus.from_texts(["a b", "c d"], name="ref")
        >>> len(c), c.clients, c.record_ids
        (2, ('0', '0'), (0, 1))
    """

    texts: tuple[str, ...]
    clients: tuple[str, ...]
    record_ids: tuple[int, ...]
    name: str = "corpus"

    def __post_init__(self) -> None:
        if not (len(self.texts) == len(self.clients) == len(self.record_ids)):
            raise OriginError(f"{self.name}: texts, clients and record_ids must have equal lengths, got "
                              f"{len(self.texts)}, {len(self.clients)}, {len(self.record_ids)}")
        for i, t in enumerate(self.texts):
            if not isinstance(t, str):
                raise OriginError(f"{self.name}: record {i} is {type(t).__name__} ({t!r:.60}), texts must be str")
            if not t.strip():
                raise OriginError(f"{self.name}: record {i} (client {self.clients[i]!r}) is empty; drop empty "
                                  "records before the check")

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_texts(cls, texts: Sequence[str], *, clients: Sequence[Any] | None = None, name: str = "corpus"
                   ) -> "TextCorpus":
        """A corpus from a list of texts, optionally with a client per text (default: one client ``"0"``).

        Record ids count within each client, in input order.
        """
        if isinstance(texts, str):
            raise OriginError(f"{name}: texts must be a sequence of str, got a single str; wrap it in a list")
        texts = list(texts)
        cl = ["0"] * len(texts) if clients is None else [str(c) for c in clients]
        if len(cl) != len(texts):
            raise OriginError(f"{name}: clients has {len(cl)} entries for {len(texts)} texts")
        seen: dict[str, int] = {}
        ids = []
        for c in cl:
            ids.append(seen.get(c, 0))
            seen[c] = ids[-1] + 1
        return cls(tuple(texts), tuple(cl), tuple(ids), name)

    @classmethod
    def from_clients(cls, parts: dict[Any, Sequence[str]], *, name: str = "corpus") -> "TextCorpus":
        """A corpus from ``{client: texts}`` (record ids are positions within each client's list)."""
        texts, clients, ids = [], [], []
        for c, part in parts.items():
            part = list(part)
            texts += part
            clients += [str(c)] * len(part)
            ids += list(range(len(part)))
        return cls(tuple(texts), tuple(clients), tuple(ids), name)

    def require_nonempty(self) -> "TextCorpus":
        """Return self, or raise :class:`OriginError` if the corpus has no record."""
        if len(self) == 0:
            raise OriginError(f"{self.name}: the corpus is empty (0 records); check the file and --text-column")
        return self

    def ref(self, i: int) -> dict[str, Any]:
        """JSON-ready pointer to record ``i`` (index in this corpus, client, record id); no text."""
        return {"index": int(i), "client": self.clients[i], "record": int(self.record_ids[i])}


def _read_file(path: Path, text_column: str, client_column: str | None) -> tuple[list[str], list[str] | None]:
    """Texts (and clients) of one file via :func:`trustfl.data.load_dataset_source` (empty texts are
    dropped there, with a logged count, so record ids count a file's non-empty records)."""
    from trustfl.data import load_dataset_source
    from trustfl.data.errors import DataSourceError

    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise OriginError(f"{str(path)!r}: unsupported file type {suffix!r}; use one of {list(_SUFFIXES)}")
    if suffix == ".txt" and client_column is not None:
        raise OriginError(f"{str(path)!r}: client_column={client_column!r} needs a .csv/.json/.jsonl file, "
                          "a .txt file has no columns")
    try:
        ds = load_dataset_source(str(path), text_column="text" if suffix == ".txt" else text_column,
                                 label_column=None)
    except DataSourceError as exc:
        raise OriginError(str(exc)) from exc
    clients = None
    if client_column is not None:
        if client_column not in ds.column_names:
            raise OriginError(f"{str(path)!r}: client_column={client_column!r} is not a column; available columns: "
                              f"{[c for c in ds.column_names if c != 'text'] + [text_column]}")
        values = ds[client_column][:]
        if any(v is None for v in values):
            raise OriginError(f"{str(path)!r}: client column {client_column!r} has missing values")
        clients = [str(v) for v in values]
    return list(ds["text"][:]), clients


def load_corpus(paths: str | Path | Sequence[str | Path], *, text_column: str = "text",
                client_column: str | None = None, name: str = "corpus") -> TextCorpus:
    """Read one or more files into a :class:`TextCorpus`.

    Each file is one client (named by its path) unless ``client_column`` names a column that
    holds each record's client. ``.txt``: one record per non-empty line.

    Raises:
        OriginError: no path, a missing or unreadable file, an unsupported suffix, a missing
            column (the message lists the available ones), empty texts, or no records at all.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise OriginError(f"{name}: no input file given")
    texts: list[str] = []
    clients: list[str] = []
    ids: list[int] = []
    for p in paths:
        t, c = _read_file(p, text_column, client_column)
        if not t:
            raise OriginError(f"{name}: {str(p)!r} holds no records (column {text_column!r})")
        cl = c if c is not None else [str(p)] * len(t)
        texts += t
        clients += cl
        ids += list(range(len(t)))  # the row in its file
    return TextCorpus(tuple(texts), tuple(clients), tuple(ids), name).require_nonempty()
