"""FAISS index helpers: candidate search over codes (binary indexes) and nearest-cosine search.

FAISS is an optional dependency: it is imported inside the functions that use it, so importing
:mod:`trustfl.text` never needs it.

Three searches, each returning candidate pairs ``(a, b)`` of global record ids with ``a < b``:

* :func:`equal_code_pairs` — records with identical codes (exact HMAC codes, identical MinHash
  signatures): one sort, and each group is returned as a star (every member paired with the
  group's smallest id), which has the same connected components as the full clique.
* :func:`minhash_pairs` — LSH banding (Indyk & Motwani 1998; Broder 1997) run by
  ``faiss.IndexBinaryMultiHash``: a signature becomes its **b-bit minwise** code (the low 8 bits
  of every slot; Li & König 2010), the code is cut into ``bands`` substrings of ``rows`` slots
  and two records are candidates when one substring matches exactly; FAISS then drops
  candidates whose Hamming distance cannot pass the threshold, and the survivors are verified
  with the full 32-bit signatures (fraction of equal slots >= threshold).
* :func:`hamming_range_pairs` — all pairs within a Hamming radius (SimHash codes):
  ``IndexBinaryFlat`` (exact, brute force) up to ``flat_limit`` records, ``IndexBinaryIVF``
  (approximate: ``nprobe`` of ``nlist`` lists) beyond.
* :func:`nearest_cosine` — each query's most similar reference embedding, FAISS ``IndexFlatIP``
  (exact inner-product search; Johnson, Douze & Jégou 2019) over L2-normalised vectors, so the
  inner product is the cosine similarity.

Sharding: with ``shard_size`` the records are split into contiguous shards; one index is built
per shard and queried with that shard and every later one, so memory holds one shard's index
at a time and every unordered pair is searched exactly once. Each (index shard, query shard)
task is independent: on a cluster, ship shards to workers (e.g. ``faiss.contrib.client_server``)
and concatenate the pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from tqdm.auto import tqdm

from trustfl.optional import require
from trustfl.text.errors import TextError

__all__ = ["IndexKind", "bbit_codes", "equal_code_pairs", "hamming_range_pairs", "lsh_bands", "minhash_pairs",
           "nearest_cosine", "shards"]

IndexKind = str  # "auto" | "flat" | "ivf"
_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def _faiss():  # noqa: ANN202
    """The ``faiss`` module (optional dependency, extra ``dedup``), imported on first use."""
    return require("faiss", extra="dedup", feature="FAISS search (near-duplicate detection, origin checks)")


def shards(n: int, shard_size: int | None) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges of at most ``shard_size`` records (one range when None)."""
    if shard_size is not None and shard_size < 1:
        raise TextError(f"shard_size must be >= 1 or None, got {shard_size}")
    size = n if not shard_size else shard_size
    return [(lo, min(n, lo + size)) for lo in range(0, n, max(size, 1))] or [(0, 0)]


def _shard_tasks(n: int, shard_size: int | None) -> Iterator[tuple[tuple[int, int], tuple[int, int]]]:
    parts = shards(n, shard_size)
    for s, base in enumerate(parts):
        for query in parts[s:]:
            yield base, query


def _collect(lims: np.ndarray, ids: np.ndarray, dist: np.ndarray, base_lo: int, query_lo: int,
             same: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = np.repeat(np.arange(len(lims) - 1, dtype=np.int64), np.diff(lims).astype(np.int64)) + query_lo
    b = ids.astype(np.int64) + base_lo
    keep = b < q if same else np.ones(len(b), dtype=bool)  # a pair once; never a record with itself
    return b[keep], q[keep], dist[keep]


def equal_code_pairs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Star edges ``(first, other)`` for every group of identical rows of ``codes`` ``[n, d]``.

    Example:
        >>> equal_code_pairs(np.array([[1], [2], [1], [1]], dtype=np.uint8))
        (array([0, 0]), array([2, 3]))
    """
    codes = np.ascontiguousarray(codes)
    if codes.ndim != 2:
        raise TextError(f"codes must be 2-d [n, d], got shape {list(codes.shape)}")
    n = len(codes)
    if n < 2:
        return _EMPTY
    rows = codes.view(np.dtype((np.void, codes.dtype.itemsize * codes.shape[1]))).ravel()
    order = np.argsort(rows, kind="stable")  # stable: groups list ids in increasing order
    srt = rows[order]
    new = np.ones(n, dtype=bool)
    new[1:] = srt[1:] != srt[:-1]
    group_first = order[np.flatnonzero(new)][np.cumsum(new) - 1]
    dup = ~new
    a, b = group_first[dup], order[dup]
    return a.astype(np.int64), b.astype(np.int64)


# ---------------------------------------------------------------------- lexical: LSH banding
def _collision(j: np.ndarray, bands: int, rows: int) -> np.ndarray:
    return 1.0 - (1.0 - j ** rows) ** bands


def lsh_bands(threshold: float, num_perm: int, *, max_rows: int = 7,
              fp_weight: float = 0.2, fn_weight: float = 0.8) -> tuple[int, int]:
    """(bands, rows) minimising ``fp_weight * FP + fn_weight * FN`` areas of the S-curve.

    FP = integral over J in [0, t] of P[candidate | J]; FN = integral over [t, 1] of
    P[miss | J], with ``P[candidate | J] = 1 - (1 - J^rows)^bands`` (the criterion datasketch's
    MinHashLSH uses). ``rows <= 7`` because a band of ``rows`` 8-bit slots must fit FAISS's
    64-bit hash key.
    """
    if not 0 < threshold < 1:
        raise TextError(f"threshold must be in (0, 1), got {threshold}")
    grid_lo, grid_hi = np.linspace(0, threshold, 200), np.linspace(threshold, 1, 200)
    best, best_cost = (1, 1), math.inf
    for rows in range(1, max_rows + 1):
        for bands in range(1, num_perm // rows + 1):
            fp = np.trapezoid(_collision(grid_lo, bands, rows), grid_lo)
            fn = np.trapezoid(1 - _collision(grid_hi, bands, rows), grid_hi)
            cost = fp_weight * fp + fn_weight * fn
            if cost < best_cost:
                best, best_cost = (bands, rows), cost
    return best


def bbit_codes(signatures: np.ndarray, *, pad_bytes: int = 8) -> np.ndarray:
    """b-bit (b = 8) minwise codes: the low byte of each slot, plus zero padding for FAISS's 64-bit reads."""
    low = (np.asarray(signatures) & 0xFF).astype(np.uint8)
    return np.ascontiguousarray(np.pad(low, ((0, 0), (0, pad_bytes))))


def minhash_pairs(signatures: np.ndarray, threshold: float, *, bands: int | None = None, rows: int | None = None,
                  shard_size: int | None = None, progress: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs whose estimated Jaccard (fraction of equal slots) is >= ``threshold``.

    Identical signatures are collapsed first (their pairs come back as stars with score 1.0);
    the banded FAISS search runs over the distinct signatures only.

    Args:
        signatures: ``[n, k]`` uint32 MinHash signatures.
        threshold: minimum estimated Jaccard, in (0, 1].
        bands, rows: LSH banding (default: :func:`lsh_bands`); ``bands * rows <= k``, ``rows <= 7``.
        shard_size: records per index shard (None: one index).

    Returns:
        ``(a, b, score)``: int64 ids with ``a < b`` and float64 estimated Jaccard.
    """
    sig = np.ascontiguousarray(signatures)
    if sig.ndim != 2:
        raise TextError(f"signatures must be 2-d [n, num_perm], got shape {list(sig.shape)}")
    if not 0 < threshold <= 1:
        raise TextError(f"threshold must be in (0, 1], got {threshold}")
    n, k = sig.shape
    if bands is None or rows is None:
        b0, r0 = lsh_bands(min(threshold, 0.99), k)
        bands, rows = bands or b0, rows or r0
    if not 1 <= rows <= 7 or bands < 1 or bands * rows > k:
        raise TextError(f"LSH banding needs 1 <= rows <= 7 and bands * rows <= num_perm={k}; "
                         f"got bands={bands}, rows={rows}")
    ea, eb = equal_code_pairs(sig)
    if n < 2:
        return ea, eb, np.ones(len(ea))
    # distinct signatures (representatives): the search runs over these
    is_rep = np.ones(n, dtype=bool)
    is_rep[eb] = False
    reps = np.flatnonzero(is_rep)
    rsig = sig[reps]
    codes = bbit_codes(rsig)
    d = codes.shape[1] * 8
    # lossless pre-filter: estimated J >= t  =>  at most k(1-t) unequal slots  =>  hamming <= 8 k (1-t)
    radius = 8 * int(math.floor(k * (1 - threshold) + 1e-9)) + 1
    out_a, out_b, out_s = [ea], [eb], [np.ones(len(ea))]
    tasks = list(_shard_tasks(len(reps), shard_size))
    built: tuple[tuple[int, int], object] | None = None
    for base, query in tqdm(tasks, desc="lexical search", unit="shard", disable=not progress or len(tasks) < 2,
                            leave=False):
        faiss = _faiss()
        if built is None or built[0] != base:
            index = faiss.IndexBinaryMultiHash(d, bands, 8 * rows)
            index.add(codes[base[0]:base[1]])
            built = (base, index)
        lims, dist, ids = built[1].range_search(codes[query[0]:query[1]], radius)
        a, b, _ = _collect(lims, ids, dist, base[0], query[0], same=base == query)
        score = _slot_agreement(rsig, a, b)
        ok = score >= threshold - 1e-12
        out_a.append(reps[a[ok]])
        out_b.append(reps[b[ok]])
        out_s.append(score[ok])
    a, b = np.concatenate(out_a), np.concatenate(out_b)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo, hi, np.concatenate(out_s)


def _slot_agreement(sig: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    out = np.empty(len(a), dtype=np.float64)
    for lo in range(0, len(a), chunk):
        out[lo:lo + chunk] = (sig[a[lo:lo + chunk]] == sig[b[lo:lo + chunk]]).mean(axis=1)
    return out


# ---------------------------------------------------------------------- semantic: Hamming range search
def hamming_range_pairs(codes: np.ndarray, radius: int, *, index: IndexKind = "auto", shard_size: int | None = None,
                        flat_limit: int = 200_000, nlist: int | None = None, nprobe: int = 16,
                        progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of packed binary codes ``[n, nbytes]`` with Hamming distance ``<= radius``.

    Args:
        index: ``"flat"`` (exact ``IndexBinaryFlat``), ``"ivf"`` (``IndexBinaryIVF``, approximate,
            ``nlist`` ~ 4 sqrt(n) lists, ``nprobe`` probed) or ``"auto"`` (flat up to ``flat_limit``
            records per shard, IVF beyond).

    Returns:
        ``(a, b, distance)`` with ``a < b`` (int64, int64, int64).
    """
    faiss = _faiss()
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise TextError(f"codes must be 2-d [n, nbytes], got shape {list(codes.shape)}")
    if index not in ("auto", "flat", "ivf"):
        raise TextError(f"index must be one of ['auto', 'flat', 'ivf'], got {index!r}")
    if radius < 0:
        raise TextError(f"radius must be >= 0, got {radius}")
    n, nbytes = codes.shape
    d = nbytes * 8
    out_a, out_b, out_d = [], [], []
    tasks = list(_shard_tasks(n, shard_size))
    built: tuple[tuple[int, int], object] | None = None
    for base, query in tqdm(tasks, desc="semantic search", unit="shard", disable=not progress or len(tasks) < 2,
                            leave=False):
        if base[1] - base[0] == 0:
            continue
        if built is None or built[0] != base:
            size = base[1] - base[0]
            kind = index if index != "auto" else ("flat" if size <= flat_limit else "ivf")
            xb = codes[base[0]:base[1]]
            if kind == "flat" or size < 64:
                idx = faiss.IndexBinaryFlat(d)
            else:
                lists = nlist or max(1, min(size // 39, int(4 * math.sqrt(size))))
                idx = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(d), d, lists)
                idx.cp.verbose = False
                idx.train(xb)
                idx.nprobe = min(nprobe, lists)
            idx.add(xb)
            built = (base, idx)
        lims, dist, ids = built[1].range_search(codes[query[0]:query[1]], int(radius) + 1)  # FAISS: dist < radius
        a, b, dd = _collect(lims, ids, dist, base[0], query[0], same=base == query)
        out_a.append(a)
        out_b.append(b)
        out_d.append(dd.astype(np.int64))
    if not out_a:
        return _EMPTY[0], _EMPTY[1], np.zeros(0, np.int64)
    a, b = np.concatenate(out_a), np.concatenate(out_b)
    return np.minimum(a, b), np.maximum(a, b), np.concatenate(out_d)


# ---------------------------------------------------------------------- dense: nearest cosine
def _float_matrix(name: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise TextError(f"{name}: expected a [n, dim] embedding matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise TextError(f"{name}: embeddings hold NaN or Inf values")
    return x


def nearest_cosine(queries: np.ndarray, references: np.ndarray, *, exclude_self: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine similarity of each query's most similar reference (FAISS ``IndexFlatIP``).

    Args:
        queries: ``[m, dim]`` float embeddings (normalised here to unit L2 norm).
        references: ``[n, dim]`` float embeddings, ``n >= 1``.
        exclude_self: queries *are* the references (same order): skip the query's own row
            (distance to the closest *other* record; needs ``n >= 2``).

    Returns:
        ``(index[m] int64, cosine[m] float64)``.

    Raises:
        TextError: empty references, mismatched dimensions, non-finite values.

    Example:
        >>> idx, cos = nearest_cosine(np.array([[1.0, 0.1]]), np.array([[0.0, 1.0], [1.0, 0.0]]))
        >>> int(idx[0]), round(float(cos[0]), 3)
        (1, 0.995)
    """
    faiss = _faiss()
    q, r = _float_matrix("queries", queries), _float_matrix("references", references)
    if len(r) == 0 or len(r) < 1 + int(exclude_self):
        raise TextError(f"references: need at least {1 + int(exclude_self)} record(s), got {len(r)}")
    if q.shape[1] != r.shape[1]:
        raise TextError(f"queries have dimension {q.shape[1]} but references {r.shape[1]}")
    if exclude_self and len(q) != len(r):
        raise TextError(f"exclude_self needs queries == references, got {len(q)} and {len(r)} rows")
    q, r = q.copy(), r.copy()
    faiss.normalize_L2(q)
    faiss.normalize_L2(r)
    index = faiss.IndexFlatIP(r.shape[1])
    index.add(r)
    k = 2 if exclude_self else 1
    sims, ids = index.search(q, k) if len(q) else (np.zeros((0, k), np.float32), np.zeros((0, k), np.int64))
    if exclude_self:
        own = ids[:, 0] == np.arange(len(q))
        col = np.where(own, 1, 0)
        rows = np.arange(len(q))
        return ids[rows, col].astype(np.int64), np.clip(sims[rows, col].astype(np.float64), -1.0, 1.0)
    return ids[:, 0].astype(np.int64), np.clip(sims[:, 0].astype(np.float64), -1.0, 1.0)
