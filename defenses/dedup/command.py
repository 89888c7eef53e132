"""``trustfl dedup``: deduplicate files (one per client, or one with a client column).

All roles run on this machine (the files are local), but through the same protocol as a
federation: codes are computed per client, the server step sees only codes, and the report
file holds ids and scores only. Example pairs with text are printed to the terminal (the
user owns every file here), never written to the report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from trustfl.defenses.dedup.errors import DedupError

__all__ = ["load_clients", "run_cli"]


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


def run_cli(args: argparse.Namespace) -> int:
    """Handler of ``trustfl dedup`` (see ``trustfl dedup --help``)."""
    from rich.console import Console

    from trustfl.defenses.dedup.keys import DedupKey
    from trustfl.defenses.dedup.protocol import deduplicate, validate_methods

    from trustfl.defenses.dedup.server import check_threshold

    console = Console(stderr=False)
    methods = validate_methods(args.methods)  # validate everything before touching files or keys
    check_threshold("--jaccard-threshold", args.jaccard_threshold, 0.0, 1.0)
    check_threshold("--semantic-threshold", args.semantic_threshold, -1.0, 1.0)
    if args.num_perm < 8 or args.ngram < 1:
        raise DedupError(f"--num-perm must be >= 8 and --ngram >= 1, got {args.num_perm}, {args.ngram}")
    if args.quiet:
        import datasets

        datasets.disable_progress_bars()
    key, created = DedupKey.load_or_create(args.key_file)
    if created:
        console.print(f"generated a new dedup key in {args.key_file} (mode 0600): share it with every client, "
                      "never with the server")
    clients, names = load_clients(args.files, text_column=args.text_column, client_column=args.client_column)
    texts = {cid: list(ds["text"][:]) for cid, ds in clients.items()}
    result = deduplicate(texts, key, methods=methods, jaccard_threshold=args.jaccard_threshold,
                         semantic_threshold=args.semantic_threshold, num_perm=args.num_perm, shingle=args.shingle,
                         ngram=args.ngram, shard_size=args.shard_size, confirm=not args.no_confirm,
                         keep_server_view=False, progress=not args.quiet)
    out = result.write_json(args.out, max_pairs=args.max_pairs, extra={"inputs": {str(c): names[c] for c in names}})
    console.print(result.summary())
    shown = 0
    for cid in result.client_ids:
        for ex in result.client_examples(cid, texts[cid], limit=args.examples):
            if shown >= args.examples:
                break
            if ex["a"]["client"] != cid:  # print a cross-client pair once, from its first client
                continue
            other = texts[ex["b"]["client"]][ex["b"]["index"]]
            console.print(f"[bold]{ex['method']}[/bold] score={ex['score']}: "
                          f"({ex['a']['client']}, {ex['a']['index']}) {ex['a']['text']!r:.100} ~ "
                          f"({ex['b']['client']}, {ex['b']['index']}) {other!r:.100}", highlight=False)
            shown += 1
    if args.write_dedup is not None:
        folder = Path(args.write_dedup)
        folder.mkdir(parents=True, exist_ok=True)
        for cid, ds in clients.items():
            kept = ds.select(np.flatnonzero(result.keep[cid]).tolist())
            stem = Path(args.files[0] if args.client_column else names[cid]).stem
            target = folder / (f"{stem}.{cid}.dedup.jsonl" if args.client_column else f"{stem}.dedup.jsonl")
            tmp = target.with_name(".tmp-" + target.name)
            kept.to_json(str(tmp), lines=True, force_ascii=False)
            tmp.replace(target)
            console.print(f"{names[cid]}: kept {len(kept)} of {len(ds)} -> {target}")
    console.print(f"report: {out}")
    return 0


def report_counts(path: str | Path) -> dict[str, Any]:
    """The ``counts`` section of a written report (for scripts)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["counts"]
