"""``trustfl dedup``: deduplicate files (one per client, or one with a client column).

All roles run on this machine (the files are local), but through the same protocol as a
federation: codes are computed per client, the server step sees only codes, and the report
file holds ids and scores only. Example pairs with text are printed to the terminal (the
user owns every file here), never written to the report.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from trustfl.defenses.dedup.errors import DedupError
from trustfl.defenses.dedup.settings import DedupSettings

__all__ = ["add_parser", "load_clients", "run_cli", "settings_from_args"]

# CLI flag -> DedupSettings field (the flags' defaults are read from DedupSettings())
_FLAGS: dict[str, str] = {"--methods": "methods", "--jaccard-threshold": "jaccard_threshold",
                          "--semantic-threshold": "semantic_threshold", "--num-perm": "num_perm",
                          "--shingle": "shingle", "--ngram": "ngram", "--simhash-bits": "simhash_bits",
                          "--confirm-margin": "confirm_margin", "--embed-model": "embed_model",
                          "--index": "index", "--shard-size": "shard_size", "--nprobe": "nprobe"}


def add_parser(sub: Any, handler: Any) -> None:
    """Register the ``dedup`` sub-command on an argparse sub-parser collection (defaults: ``DedupSettings()``)."""
    d = DedupSettings()
    dd = sub.add_parser("dedup", help="find exact/near-duplicate records within and across clients' files",
                        description="Distributed near-duplicate detection on files (docs/dedup.md): keyed codes per "
                                    "client, FAISS search, clusters, keep one record per cluster.")
    dd.add_argument("files", nargs="+", help="one .csv/.json/.jsonl/.txt file per client (or one file with "
                                             "--client-column)")
    dd.add_argument("--client-column", default=None, help="column holding each record's client (one input file)")
    dd.add_argument("--text-column", default="text", help="text column of .csv/.json/.jsonl files (default: text)")
    dd.add_argument("--key-file", required=True, help="the clients' shared key (hex, mode 0600); created if missing")
    dd.add_argument("--methods", default=",".join(d.methods),
                    help=f"comma list of exact,lexical,semantic (default: {','.join(d.methods)})")
    dd.add_argument("--jaccard-threshold", type=float, default=d.jaccard_threshold,
                    help=f"lexical: estimated Jaccard >= this (default: {d.jaccard_threshold})")
    dd.add_argument("--semantic-threshold", type=float, default=d.semantic_threshold,
                    help=f"semantic: embedding cosine >= this (default: {d.semantic_threshold})")
    dd.add_argument("--num-perm", type=int, default=d.num_perm,
                    help=f"MinHash signature length (default: {d.num_perm})")
    dd.add_argument("--shingle", choices=["char", "word"], default=d.shingle,
                    help=f"shingle unit (default: {d.shingle})")
    dd.add_argument("--ngram", type=int, default=d.ngram,
                    help=f"shingle length in characters/words (default: {d.ngram})")
    dd.add_argument("--simhash-bits", type=int, default=d.simhash_bits,
                    help=f"semantic: SimHash code length (default: {d.simhash_bits})")
    dd.add_argument("--confirm-margin", type=float, default=d.confirm_margin,
                    help=f"within-client candidates are searched down to threshold - margin "
                         f"(default: {d.confirm_margin})")
    dd.add_argument("--embed-model", default=d.embed_model,
                    help=f"semantic: encoder (default: {d.embed_model}, offline)")
    dd.add_argument("--index", choices=["auto", "flat", "ivf"], default=d.index,
                    help=f"semantic FAISS index (default: {d.index})")
    dd.add_argument("--shard-size", type=int, default=d.shard_size, help="records per FAISS index shard")
    dd.add_argument("--nprobe", type=int, default=d.nprobe, help=f"IVF lists probed (default: {d.nprobe})")
    dd.add_argument("--no-confirm", dest="confirm", action="store_false", default=d.confirm,
                    help="skip local confirmation of within-client pairs")
    dd.add_argument("--out", type=Path, default=Path("dedup-report.json"), help="report JSON (ids/scores only)")
    dd.add_argument("--max-pairs", type=int, default=None, help="list at most this many pairs in the report")
    dd.add_argument("--write-dedup", type=Path, default=None, metavar="DIR",
                    help="write the kept records of every client as JSONL into DIR (one file per input, "
                         "named after it, mode 0600)")
    dd.add_argument("--overwrite", action="store_true",
                    help="replace existing --out / --write-dedup files (never an input or the key file)")
    dd.add_argument("--examples", type=int, default=3, help="example pairs to print (with text; default 3)")
    dd.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    dd.set_defaults(func=handler)


def settings_from_args(args: argparse.Namespace) -> DedupSettings:
    """The :class:`DedupSettings` of parsed ``trustfl dedup`` arguments.

    Raises:
        DedupError: a value :class:`DedupSettings` rejects; the message names the flag
            (``--jaccard-threshold: must be in (0, 1], got 1.5``).
    """
    from trustfl.errors import ConfigError

    values = {field: getattr(args, flag[2:].replace("-", "_")) for flag, field in _FLAGS.items()}
    try:
        return DedupSettings(**values, confirm=args.confirm)
    except ConfigError as exc:
        path, _, msg = str(exc).partition(": ")
        field = path.removeprefix("dedup.")
        flag = next((f for f, name in _FLAGS.items() if name == field), "--" + field.replace("_", "-"))
        raise DedupError(f"{flag}: {msg}") from exc


def _load_file(path: str, text_column: str) -> Any:
    """A ``datasets.Dataset`` with a ``text`` column from a .csv/.json/.jsonl/.txt file
    (:func:`trustfl.data.load_dataset_source`; .txt: one record per non-empty line)."""
    from trustfl.data import load_dataset_source

    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".json", ".jsonl", ".txt"):
        raise DedupError(f"{path!r}: unsupported file type {Path(path).suffix!r}; use .csv, .json, .jsonl or .txt")
    return load_dataset_source(str(path), text_column="text" if suffix == ".txt" else text_column, label_column=None)


def load_clients(files: list[str], *, text_column: str = "text", client_column: str | None = None
                 ) -> tuple[dict[int, Any], dict[int, str]]:
    """``({client_id: dataset}, {client_id: name})`` from one file per client or a client column."""
    if client_column is not None:
        if len(files) != 1:
            raise DedupError(f"--client-column needs exactly one file, got {len(files)}: {files}")
        ds = _load_file(files[0], text_column)
        if client_column not in ds.column_names:
            raise DedupError(f"{files[0]}: --client-column {client_column!r} is not a column; available: "
                             f"{[c for c in ds.column_names if c != 'text']}")
        values = ds[client_column][:]
        if any(v is None for v in values):
            raise DedupError(f"{files[0]}: client column {client_column!r} has missing values")
        distinct = sorted(set(values), key=lambda v: (not isinstance(v, int), str(v)))
        ids = {v: (int(v) if isinstance(v, int) and not isinstance(v, bool) else k) for k, v in enumerate(distinct)}
        if len(set(ids.values())) != len(ids):
            ids = {v: k for k, v in enumerate(distinct)}
        col = np.array([ids[v] for v in values])
        out = {cid: ds.select(np.flatnonzero(col == cid).tolist()) for cid in sorted(set(ids.values()))}
        names = {ids[v]: f"{client_column}={v}" for v in distinct}
    else:
        out = {k: _load_file(f, text_column) for k, f in enumerate(files)}
        names = {k: f for k, f in enumerate(files)}
    empty = [names[c] for c, d in out.items() if len(d) == 0]
    if empty:
        raise DedupError(f"no non-empty texts in {empty} (column {text_column!r}); check --text-column")
    return out, names


def _same_path(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name the same file (resolved, or the same inode when both exist)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def output_names(inputs: list[str]) -> list[str]:
    """Unique ``--write-dedup`` file names for one input file per client, in input order.

    The file stem when the stems are unique (``a.csv`` -> ``a.dedup.jsonl``); otherwise the path
    relative to the inputs' common folder with ``/`` as ``__`` (``a.csv``, ``sub/a.csv`` -> ``a``,
    ``sub__a``), then with the suffix (``a.csv``, ``a.jsonl`` -> ``a.csv``, ``a.jsonl``), then
    with the client number.
    """
    paths = [Path(p).resolve() for p in inputs]
    root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path(".")
    rel = [p.relative_to(root) for p in paths]
    tiers = [[p.stem for p in paths],
             ["__".join(r.with_suffix("").parts) for r in rel],
             ["__".join(r.parts) for r in rel]]
    for names in tiers:
        if len(set(names)) == len(names):
            return [f"{n}.dedup.jsonl" for n in names]
    return [f"{n}.{k}.dedup.jsonl" for k, n in enumerate(tiers[2])]


def plan_outputs(args: argparse.Namespace, client_ids: list[int] | None = None) -> dict[int, Path]:
    """Check every output path before any work; return the ``--write-dedup`` targets per client.

    Refuses: ``--out`` or a written file that is an input or the key file, ``--out`` that is a
    directory, ``--write-dedup`` that is an existing file, and (without ``--overwrite``) any
    output file that exists already.

    Raises:
        DedupError: naming the flag and the path.
    """
    inputs = [Path(f) for f in args.files]
    key = Path(args.key_file)
    overwrite = getattr(args, "overwrite", False)
    if key.is_dir():
        raise DedupError(f"--key-file {str(key)!r} is a directory; give the path of a key file (created if missing)")
    clash = next((f for f in inputs if _same_path(f, key)), None)
    if clash is not None:
        raise DedupError(f"--key-file {str(key)!r} is also an input file; the key must be a separate file")

    def check(flag: str, path: Path) -> None:
        if any(_same_path(path, f) for f in inputs):
            raise DedupError(f"{flag} {str(path)!r} is an input file; writing it would destroy the input")
        if _same_path(path, key):
            raise DedupError(f"{flag} {str(path)!r} is the key file given to --key-file; writing it would destroy "
                             "the key")
        if path.is_dir():
            raise DedupError(f"{flag} {str(path)!r} is a directory; give a file path (e.g. "
                             f"{str(path / 'dedup-report.json')!r})")
        if path.exists() and not overwrite:
            raise DedupError(f"{flag} {str(path)!r} exists; pass --overwrite to replace it")

    out = Path(args.out)
    check("--out", out)
    targets: dict[int, Path] = {}
    if args.write_dedup is not None:
        folder = Path(args.write_dedup)
        if folder.exists() and not folder.is_dir():
            raise DedupError(f"--write-dedup {str(folder)!r} is an existing file, not a directory; give a folder "
                             "for the kept records (one .dedup.jsonl file per client)")
        if args.client_column is None:
            targets = {k: folder / n for k, n in enumerate(output_names(list(args.files)))}
        else:
            stem = Path(args.files[0]).stem
            targets = {k: folder / f"{stem}.{k}.dedup.jsonl" for k in (client_ids or [])}
        for target in targets.values():
            check("--write-dedup", target)
        if any(_same_path(t, out) for t in targets.values()):
            raise DedupError(f"--out {str(out)!r} is also one of the --write-dedup files; choose another path")
    return targets


def clip(text: str, width: int = 80) -> str:
    """One line of at most ``width`` characters: whitespace collapsed, cut with an ellipsis."""
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[:width - 1].rstrip() + "\u2026"


def _write_jsonl_private(path: Path, rows: Any) -> None:
    """Write rows as JSON Lines, atomically, with file mode 0600 (the records are a client's data)."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jsonl")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_cli(args: argparse.Namespace) -> int:
    """Handler of ``trustfl dedup`` (see ``trustfl dedup --help``)."""
    import datasets
    from rich.console import Console

    from trustfl.defenses.dedup.keys import DedupKey
    from trustfl.defenses.dedup.protocol import deduplicate

    console = Console(stderr=False, soft_wrap=True, highlight=False)
    datasets.disable_progress_bars()  # trustfl's own progress bars only
    settings = settings_from_args(args)  # validate everything before touching files or keys
    if args.client_column is not None and len(args.files) != 1:
        raise DedupError(f"--client-column needs exactly one file, got {len(args.files)}: {args.files}")
    plan_outputs(args)  # refuse bad output paths before any work (client-column targets: checked below)
    clients, names = load_clients(args.files, text_column=args.text_column, client_column=args.client_column)
    targets = plan_outputs(args, sorted(clients))
    key, created = DedupKey.load_or_create(args.key_file)
    if created:
        console.print(f"generated a new dedup key in {args.key_file} (mode 0600): share it with every client, "
                      "never with the server")
    texts = {cid: list(ds["text"][:]) for cid, ds in clients.items()}
    result = deduplicate(texts, key, settings, keep_server_view=False, progress=not args.quiet)
    extra: dict[str, Any] = {"inputs": {str(c): names[c] for c in names}}
    if targets:
        extra["outputs"] = {str(c): str(t) for c, t in targets.items()}
    out = result.write_json(args.out, max_pairs=args.max_pairs, extra=extra)
    console.print(result.summary())
    for cid in result.client_ids:
        dropped = int((~result.keep[cid]).sum())
        console.print(f"  {names[cid]}: {result.sizes[cid]} records, {dropped} dropped")
    shown = 0
    for cid in result.client_ids:
        for ex in result.client_examples(cid, texts[cid], limit=args.examples):
            if shown >= args.examples:
                break
            if ex["a"]["client"] != cid:  # print a cross-client pair once, from its first client
                continue
            a, b = ex["a"], ex["b"]
            other = texts[b["client"]][b["index"]]
            console.print(f"[bold]{ex['method']}[/bold] score={ex['score']}: "
                          f"{names[a['client']]} #{a['index']} \u201c{clip(a['text'])}\u201d ~ "
                          f"{names[b['client']]} #{b['index']} \u201c{clip(other)}\u201d")
            shown += 1
    for cid, target in targets.items():
        ds = clients[cid]
        rows = ds.select(np.flatnonzero(result.keep[cid]).tolist()).to_list()
        _write_jsonl_private(target, rows)
        console.print(f"{names[cid]}: kept {len(rows)} of {len(ds)} -> {target}")
    console.print(f"report: {out}")
    return 0


def report_counts(path: str | Path) -> dict[str, Any]:
    """The ``counts`` section of a written report (for scripts)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["counts"]
