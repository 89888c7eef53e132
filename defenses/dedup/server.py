"""Server side of the dedup protocol: index the clients' codes and return candidate pairs.

The server receives one :class:`~trustfl.defenses.dedup.client.ClientCodes` per client (the
:class:`ServerView`) and nothing else: no text, no embedding, no key. It

* numbers records globally (clients in increasing id order, then record index);
* finds exact pairs (equal HMAC codes), lexical pairs (FAISS-banded b-bit MinHash, verified
  with the full signatures) and semantic pairs (FAISS Hamming range search on SimHash codes,
  radius from the cosine threshold: ``angle = pi * hamming / bits``);
* decides cross-client pairs itself (score estimate >= threshold) and hands within-client
  pairs whose estimate is >= ``threshold - confirm_margin`` to their client for confirmation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trustfl.defenses.dedup.client import METHODS, ClientCodes
from trustfl.defenses.dedup.errors import DedupError
from trustfl.text import equal_code_pairs, hamming_range_pairs, hamming_to_cosine, lsh_bands, minhash_pairs

__all__ = ["Candidates", "DedupServer", "ServerView", "check_same_parameters"]


@dataclass(frozen=True)
class ServerView:
    """Exactly what the server is handed: the clients' codes and the public thresholds."""

    codes: tuple[ClientCodes, ...]
    thresholds: dict[str, float]


@dataclass
class Candidates:
    """Candidate pairs of one method, in global ids (``a < b``), with the server's score estimate.

    ``needs_confirmation[k]`` is True for within-client pairs (their client confirms them);
    cross-client pairs are final.
    """

    method: str
    a: np.ndarray
    b: np.ndarray
    score: np.ndarray
    needs_confirmation: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.a)


class DedupServer:
    """Finds candidate duplicate pairs in a :class:`ServerView`.

    Args:
        jaccard_threshold: lexical threshold on the estimated Jaccard, in (0, 1].
        semantic_threshold: semantic threshold on the cosine, in (-1, 1].
        confirm_margin: within-client candidates are returned down to ``threshold - margin``
            (their client confirms with the true score); 0 disables the margin.
        bands, rows: lexical LSH banding (default from the threshold, :func:`lsh_bands`).
        index: semantic FAISS index: ``"auto"`` | ``"flat"`` | ``"ivf"``.
        shard_size: records per index shard (None: one index).
        nprobe: IVF lists probed per query.
    """

    def __init__(self, *, jaccard_threshold: float = 0.7, semantic_threshold: float = 0.9,
                 confirm_margin: float = 0.1, bands: int | None = None, rows: int | None = None,
                 index: str = "auto", shard_size: int | None = None, nprobe: int = 16,
                 progress: bool = False) -> None:
        check_threshold("jaccard_threshold", jaccard_threshold, 0.0, 1.0)
        check_threshold("semantic_threshold", semantic_threshold, -1.0, 1.0)
        if not 0 <= confirm_margin < 1:
            raise DedupError(f"confirm_margin must be in [0, 1), got {confirm_margin}")
        self.jaccard_threshold, self.semantic_threshold = float(jaccard_threshold), float(semantic_threshold)
        self.confirm_margin, self.bands, self.rows = float(confirm_margin), bands, rows
        self.index, self.shard_size, self.nprobe, self.progress = index, shard_size, nprobe, progress
        self.timings: dict[str, float] = {}

    def find(self, view: ServerView, methods: Sequence[str] = METHODS) -> dict[str, Candidates]:
        """Candidate pairs per method (``{"exact": Candidates, ...}``)."""
        codes = sorted(view.codes, key=lambda c: c.client_id)
        if not codes:
            raise DedupError("no client codes: the server needs at least one client")
        ids = [c.client_id for c in codes]
        if len(set(ids)) != len(ids):
            raise DedupError(f"duplicate client ids in the server view: {ids}")
        keys = {c.key_id for c in codes}
        if len(keys) != 1:
            raise DedupError(f"clients used different dedup keys (key ids {sorted(keys)}); codes under different "
                             "keys never match: give every client the same key")
        check_same_parameters(codes)
        sizes = np.array([c.n for c in codes], dtype=np.int64)
        owner = np.repeat(np.arange(len(codes)), sizes)  # position in `codes` of each global record
        out: dict[str, Candidates] = {}
        for method in methods:
            t0 = time.perf_counter()
            if method == "exact":
                x = _stack(codes, "exact", method)
                a, b = equal_code_pairs(x)
                score = np.ones(len(a))
                final, search_t, info = 1.0, 1.0, {}
            elif method == "lexical":
                x = _stack(codes, "minhash", method)
                final = self.jaccard_threshold
                search_t = max(1e-6, final - self.confirm_margin)
                bands, rows = (self.bands, self.rows)
                if bands is None or rows is None:
                    bands, rows = lsh_bands(min(final, 0.99), x.shape[1])
                a, b, score = minhash_pairs(x, search_t, bands=bands, rows=rows, shard_size=self.shard_size,
                                            progress=self.progress)
                info = {"bands": bands, "rows": rows, "num_perm": int(x.shape[1]), "bbit": 8}
            elif method == "semantic":
                x = _stack(codes, "simhash", method)
                bits = x.shape[1] * 8
                final = self.semantic_threshold
                search_t = max(-1.0, final - self.confirm_margin)
                radius = int(math.floor(bits * math.acos(search_t) / math.pi + 1e-9))
                a, b, dist = hamming_range_pairs(x, radius, index=self.index, shard_size=self.shard_size,
                                                 nprobe=self.nprobe, progress=self.progress)
                score = hamming_to_cosine(dist, bits)
                info = {"bits": bits, "radius": radius, "index": self.index}
            else:
                raise DedupError(f"method must be one of {list(METHODS)}, got {method!r}")
            within = owner[a] == owner[b]
            keep = within | (score >= final - 1e-12)  # cross-client pairs are decided here
            out[method] = Candidates(method=method, a=a[keep], b=b[keep], score=score[keep],
                                     needs_confirmation=within[keep], info={**info, "search_threshold": search_t})
            self.timings[f"{method}_search_s"] = time.perf_counter() - t0
        return out


def check_same_parameters(codes: Sequence[ClientCodes]) -> None:
    """Refuse clients whose public code parameters differ (num_perm, shingle, ngram, SimHash bits, ...).

    Codes made with different parameters are incomparable: different n-grams or shingle units
    give unrelated MinHash slots, so the server would silently find no lexical pair at all.

    Raises:
        DedupError: naming each differing parameter and which clients used which value.
    """
    names = sorted({k for c in codes for k in c.params})
    diffs = []
    for name in names:
        by_value: dict[str, list[int]] = {}
        for c in codes:
            by_value.setdefault(repr(c.params.get(name, "<not sent>")), []).append(c.client_id)
        if len(by_value) > 1:
            diffs.append(f"{name}: " + ", ".join(f"{v} (client{'s' if len(ids) > 1 else ''} "
                                                  f"{', '.join(map(str, ids))})" for v, ids in by_value.items()))
    if diffs:
        raise DedupError("clients computed their codes with different parameters, so their codes cannot match: "
                         + "; ".join(diffs) + ". Give every client the same dedup settings")


def _stack(codes: Sequence[ClientCodes], attr: str, method: str) -> np.ndarray:
    parts = [getattr(c, attr) for c in codes]
    missing = [c.client_id for c, p in zip(codes, parts) if p is None]
    if missing:
        raise DedupError(f"method {method!r}: clients {missing} sent no {attr} codes")
    widths = {p.shape[1] for p in parts}
    if len(widths) != 1:
        raise DedupError(f"method {method!r}: clients sent {attr} codes of different widths {sorted(widths)}; "
                         "all clients must use the same parameters")
    return np.ascontiguousarray(np.concatenate(parts, axis=0))


def check_threshold(name: str, value: float, lo: float, hi: float) -> None:
    """Raise :class:`DedupError` unless ``lo < value <= hi``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < float(value) <= hi:
        raise DedupError(f"{name} must be a number in ({lo:g}, {hi:g}], got {value!r}")
