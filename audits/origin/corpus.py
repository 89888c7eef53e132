"""Text corpora for origin checks: synthetic records and the reference (training) records.

A :class:`TextCorpus` is a list of texts with, per record, a client id and a record id (the
row in its file or dataset), so every finding can point back to "client 3, record 41". It
is built from Python lists, a ``datasets.Dataset`` or files (``.csv``, ``.json``, ``.jsonl``,
``.txt`` with one record per non-empty line), one file per client or one file with a client
column. Files are read by :func:`trustfl.data.load_dataset_source` (empty texts dropped with a
logged count); texts passed directly must be non-empty.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustfl.audits.origin.errors import OriginError

__all__ = ["CorpusInfo", "TextCorpus", "client_like_columns", "load_corpus", "load_corpus_info"]

_SUFFIXES = (".csv", ".json", ".jsonl", ".txt")
log = logging.getLogger(__name__)
_CLIENT_NAMES = {"user", "user_id", "userid", "account", "author", "silo", "party", "site", "owner"}


def client_like_columns(columns: Sequence[str]) -> list[str]:
    """Columns whose name suggests they hold each record's client (``client``, ``client_id``, ``account`` ...)."""
    return [c for c in columns if "client" in c.lower() or c.lower() in _CLIENT_NAMES]


def _check_text_file(path: Path) -> None:
    """Refuse a file that is not UTF-8 text (binary garbage) with one clear line, before any parser sees it."""
    if not path.is_file():
        return  # the reader names a missing file
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            bad = [chunk.find(b"\x00")] if b"\x00" in chunk else []
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad.append(max(0, exc.start))
            if bad:
                at = min(bad)
                raise OriginError(f"{str(path)!r} is not a UTF-8 text file (binary byte 0x{chunk[at]:02x} at offset "
                                  f"{offset + at}); origin reads UTF-8 {'/'.join(_SUFFIXES)} files")
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise OriginError(f"{str(path)!r} is not a UTF-8 text file (truncated character at the end); origin reads "
                          f"UTF-8 {'/'.join(_SUFFIXES)} files") from None


@dataclass
class CorpusInfo:
    """Where a corpus's records came from: per client its files and record count, and per file the columns
    that look like a client column but were not used (no ``client_column`` given)."""

    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    unused_client_columns: dict[str, list[str]] = field(default_factory=dict)

    def notes(self, name: str = "reference") -> list[str]:
        """Plain-language warnings for the report (empty when nothing is suspicious)."""
        return [f"{name} file {f!r} has a client-like column {cols} but no --client-column was given, so all "
                f"its records count as ONE client (named by the file); pass --client-column {cols[0]} to split them"
                for f, cols in self.unused_client_columns.items()]


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


def _read_file(path: Path, text_column: str, client_column: str | None
               ) -> tuple[list[str], list[str] | None, list[str]]:
    """Texts (and clients, and the file's columns) of one file via :func:`trustfl.data.load_dataset_source`
    (empty texts are dropped there, with a logged count, so record ids count a file's non-empty records)."""
    from trustfl.data import load_dataset_source
    from trustfl.data.errors import DataSourceError

    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise OriginError(f"{str(path)!r}: unsupported file type {suffix!r}; use one of {list(_SUFFIXES)}")
    if suffix == ".txt" and client_column is not None:
        raise OriginError(f"{str(path)!r}: client_column={client_column!r} needs a .csv/.json/.jsonl file, "
                          "a .txt file has no columns")
    _check_text_file(path)
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
    columns = [] if suffix == ".txt" else [c for c in ds.column_names if c != "text"]
    return list(ds["text"][:]), clients, columns


def load_corpus(paths: str | Path | Sequence[str | Path], *, text_column: str = "text",
                client_column: str | None = None, name: str = "corpus") -> TextCorpus:
    """Read one or more files into a :class:`TextCorpus`.

    Each file is one client (named by its path) unless ``client_column`` names a column that
    holds each record's client. ``.txt``: one record per non-empty line. A file with a client-like
    column read without ``client_column`` is logged as a warning (see :func:`load_corpus_info`).

    Raises:
        OriginError: no path, a missing, unreadable or non-UTF-8 (binary) file, an unsupported suffix,
            a missing column (the message lists the available ones), empty texts, or no records at all.
    """
    return load_corpus_info(paths, text_column=text_column, client_column=client_column, name=name)[0]


def load_corpus_info(paths: str | Path | Sequence[str | Path], *, text_column: str = "text",
                     client_column: str | None = None, name: str = "corpus") -> tuple[TextCorpus, CorpusInfo]:
    """:func:`load_corpus` plus a :class:`CorpusInfo`: each client's files and record count, and the files
    whose client-like column went unused (each also logged as a warning)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise OriginError(f"{name}: no input file given")
    texts: list[str] = []
    clients: list[str] = []
    ids: list[int] = []
    info = CorpusInfo()
    for p in paths:
        t, c, columns = _read_file(p, text_column, client_column)
        if not t:
            raise OriginError(f"{name}: {str(p)!r} holds no records (column {text_column!r})")
        cl = c if c is not None else [str(p)] * len(t)
        if client_column is None and client_like_columns(columns):
            info.unused_client_columns[str(p)] = client_like_columns(columns)
        for client in cl:
            entry = info.clients.setdefault(client, {"files": [], "records": 0})
            entry["records"] += 1
            if str(p) not in entry["files"]:
                entry["files"].append(str(p))
        texts += t
        clients += cl
        ids += list(range(len(t)))  # the row in its file
    for note in info.notes(name):
        log.warning(note)
    return TextCorpus(tuple(texts), tuple(clients), tuple(ids), name).require_nonempty(), info
