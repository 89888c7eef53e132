"""The outcome of a dedup run: pairs, clusters, keep/drop decisions and a report.

:meth:`DedupResult.to_json` is the *server-side* report: ids, methods, scores, counts and
thresholds only. Text appears only in :meth:`DedupResult.client_examples`, which a client
runs on its own texts and which shows text of that client's records only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trustfl.defenses.dedup.errors import DedupError

__all__ = ["DedupResult", "DuplicatePair", "PairTable"]


class DuplicatePair(NamedTuple):
    """One accepted duplicate pair. ``local_score`` is the client-confirmed true score (NaN if cross-client)."""

    client_a: int
    index_a: int
    client_b: int
    index_b: int
    method: str
    score: float
    local_score: float


@dataclass
class PairTable:
    """Accepted pairs as parallel arrays (``(client_a, index_a) < (client_b, index_b)``)."""

    client_a: np.ndarray
    index_a: np.ndarray
    client_b: np.ndarray
    index_b: np.ndarray
    method: np.ndarray  # str (object) per pair
    score: np.ndarray
    local_score: np.ndarray

    def __len__(self) -> int:
        return len(self.client_a)

    def __iter__(self) -> Iterator[DuplicatePair]:
        for k in range(len(self)):
            yield self[k]

    def __getitem__(self, k: int) -> DuplicatePair:
        return DuplicatePair(int(self.client_a[k]), int(self.index_a[k]), int(self.client_b[k]),
                             int(self.index_b[k]), str(self.method[k]), float(self.score[k]),
                             float(self.local_score[k]))

    def to_json(self, limit: int | None = None) -> list[dict[str, Any]]:
        rows = range(len(self)) if limit is None else range(min(limit, len(self)))
        out = []
        for k in rows:
            p = self[k]
            out.append({"a": [p.client_a, p.index_a], "b": [p.client_b, p.index_b], "method": p.method,
                        "score": round(p.score, 6),
                        "local_score": None if np.isnan(p.local_score) else round(p.local_score, 6)})
        return out


@dataclass
class DedupResult:
    """Duplicate pairs, clusters and which records to keep.

    Attributes:
        client_ids: the clients, sorted.
        sizes: records per client.
        pairs: accepted pairs (groups of identical codes appear as stars, see ``index.equal_code_pairs``).
        clusters: connected components of >= 2 records, each a sorted list of ``(client_id, index)``.
        keep: ``{client_id: bool[n]}``; False = drop (keep rule: smallest (client_id, index) per cluster).
        thresholds: the thresholds used.
        params: code and index parameters (public).
        candidates: per method, candidates found / confirmed / rejected by clients.
        timings: seconds per step.
        server_view: the :class:`~trustfl.defenses.dedup.server.ServerView` the server was handed.
    """

    client_ids: list[int]
    sizes: dict[int, int]
    pairs: PairTable
    clusters: list[list[tuple[int, int]]]
    keep: dict[int, np.ndarray]
    thresholds: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    candidates: dict[str, dict[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    server_view: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ derived numbers
    @property
    def num_records(self) -> int:
        return int(sum(self.sizes.values()))

    @property
    def num_dropped(self) -> int:
        return int(sum(int((~k).sum()) for k in self.keep.values()))

    def dropped(self) -> dict[int, np.ndarray]:
        """Indices to drop, per client."""
        return {c: np.flatnonzero(~k) for c, k in self.keep.items()}

    def pair_counts(self) -> dict[str, dict[str, int]]:
        """Accepted pairs per client pair ``"a-b"`` (a <= b) and method."""
        out: dict[str, dict[str, int]] = {}
        if not len(self.pairs):
            return out
        keys = np.char.add(np.char.add(self.pairs.client_a.astype(str), "-"), self.pairs.client_b.astype(str))
        combo = np.char.add(np.char.add(keys, "|"), self.pairs.method.astype(str))
        uniq, counts = np.unique(combo, return_counts=True)
        for u, c in zip(uniq, counts):
            pair, method = str(u).split("|")
            out.setdefault(pair, {})[method] = int(c)
        return dict(sorted(out.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("-"))))

    def counts(self) -> dict[str, Any]:
        """Headline numbers: records, pairs per method, clusters, cross-client clusters, dropped per client."""
        methods, per = np.unique(self.pairs.method.astype(str), return_counts=True) if len(self.pairs) else ([], [])
        cross = sum(1 for c in self.clusters if len({m[0] for m in c}) > 1)
        return {"records": self.num_records, "pairs": {str(m): int(c) for m, c in zip(methods, per)},
                "clusters": len(self.clusters), "cross_client_clusters": cross,
                "records_in_clusters": int(sum(len(c) for c in self.clusters)), "dropped": self.num_dropped,
                "dropped_per_client": {str(c): int((~k).sum()) for c, k in self.keep.items()}}

    # ------------------------------------------------------------------ reports
    def to_json(self, *, max_pairs: int | None = None, max_clusters: int | None = None) -> dict[str, Any]:
        """The server-side report (JSON-able; ids and scores only, no text)."""
        clusters = self.clusters if max_clusters is None else self.clusters[:max_clusters]
        return {
            "format": "trustfl-dedup-report/1",
            "clients": {str(c): self.sizes[c] for c in self.client_ids},
            "thresholds": self.thresholds,
            "params": self.params,
            "counts": self.counts(),
            "pair_counts": self.pair_counts(),
            "candidates": self.candidates,
            "keep_rule": "one record per cluster: the smallest (client_id, index); all others dropped",
            "clusters": [[[c, i] for c, i in cl] for cl in clusters],
            "pairs": self.pairs.to_json(max_pairs),
            "truncated": {"pairs": max_pairs is not None and len(self.pairs) > max_pairs,
                          "clusters": max_clusters is not None and len(self.clusters) > max_clusters},
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def write_json(self, path: str | Path, *, max_pairs: int | None = None, max_clusters: int | None = None,
                   extra: Mapping[str, Any] | None = None) -> Path:
        """Write :meth:`to_json` (plus ``extra``) atomically (temp file + rename)."""
        from trustfl.rundir.atomic import atomic_write_bytes

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = self.to_json(max_pairs=max_pairs, max_clusters=max_clusters) | dict(extra or {})
        atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
        return path

    def client_examples(self, client_id: int, texts: Sequence[str], *, limit: int = 10) -> list[dict[str, Any]]:
        """Example pairs for one client, shown *to that client only*.

        Text is included for this client's own records; the other side of a cross-client pair
        is shown as ``(client, index)`` only.

        Raises:
            DedupError: unknown client, or ``texts`` not matching the client's record count.
        """
        if client_id not in self.sizes:
            raise DedupError(f"client_id {client_id} is not in this result; clients: {self.client_ids}")
        if len(texts) != self.sizes[client_id]:
            raise DedupError(f"client {client_id} has {self.sizes[client_id]} records, got {len(texts)} texts")
        out = []
        for p in self.pairs:
            if client_id not in (p.client_a, p.client_b):
                continue
            side = []
            for c, i in ((p.client_a, p.index_a), (p.client_b, p.index_b)):
                side.append({"client": c, "index": i, **({"text": texts[i]} if c == client_id else {})})
            out.append({"method": p.method, "score": round(p.score, 4),
                        "local_score": None if np.isnan(p.local_score) else round(p.local_score, 4),
                        "a": side[0], "b": side[1]})
            if len(out) >= limit:
                break
        return out

    def summary(self) -> str:
        """A few human-readable lines."""
        c = self.counts()
        lines = [f"{c['records']} records on {len(self.client_ids)} client(s): {c['clusters']} duplicate clusters "
                 f"({c['cross_client_clusters']} across clients), {c['dropped']} records dropped",
                 "pairs: " + (", ".join(f"{m}={n}" for m, n in c["pairs"].items()) or "none"),
                 "thresholds: " + ", ".join(f"{k}={v:g}" for k, v in self.thresholds.items())]
        if self.candidates:
            lines.append("candidates: " + "; ".join(f"{m}: " + ", ".join(f"{k}={v}" for k, v in d.items())
                                                   for m, d in self.candidates.items()))
        return "\n".join(lines)
