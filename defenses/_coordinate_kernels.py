"""Column order statistics of ``x[n, d]`` in one cache-blocked pass (the kernel of the coordinate-wise median
and trimmed mean, Yin et al. 2018, "Byzantine-Robust Distributed Learning", ICML).

The textbook way, ``np.partition(x, k, axis=0)`` (what Flower's ``aggregate_median`` /
``aggregate_trimmed_avg`` do via ``np.median`` / ``np.partition``), selects down each column with a
stride of ``d`` elements, and the per-client counts need further full passes over ``[n, d]``. Here
the columns are cut into tiles of a few hundred KiB; each tile is

1. copied transposed into a reused buffer ``[c, n]``, so each column's ``n`` values are contiguous;
2. sorted row-wise in place (numpy's SIMD sort, x86-simd-sort on AVX-512/AVX2: a sort of ~100
   contiguous floats is cheaper than a scalar introselect at two ranks);
3. read off at the ranks ``lo`` and ``hi`` (and, for the trimmed mean, the mean of ranks ``lo..hi``);
4. compared with the original rows while the tile is still in cache, counting per client the
   coordinates where its value lies in ``[value at lo, value at hi]``.

So ``x`` is read from memory once. Tiles are shared out dynamically among up to
``torch.get_num_threads()`` threads (at most one per CPU; numpy's copy, sort and comparisons release the GIL), the
calling thread being one of them; every tile writes a disjoint slice of the outputs and each thread
keeps its own counts, so the result does not depend on the thread count.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["OrderStats", "column_order_stats"]

_TILE_BYTES = 1 << 19  # bytes of one [c, n] tile: it, its source rows and the masks stay in L2
_MIN_TILE_COLS = 64
_COPY_ROWS = 32  # source rows per transposing copy
_PARALLEL_MIN = 1 << 22  # elements below which the default is one thread
_POOL: ThreadPoolExecutor | None = None
_CPUS = os.cpu_count() or 1
_POOL_LOCK = threading.Lock()


@dataclass
class OrderStats:
    """Per column: the values at ranks ``lo`` and ``hi`` of the column sorted ascending, the mean of ranks
    ``lo..hi`` (``None`` unless asked for), and per row the number of columns where the row's value lies in
    ``[low, high]`` (``inside``, int64 ``[n]``)."""

    low: np.ndarray
    high: np.ndarray
    middle_mean: np.ndarray | None
    inside: np.ndarray


def column_order_stats(x: np.ndarray, lo: int, hi: int, *, middle_mean: bool = False,
                       threads: int | None = None, tile_cols: int | None = None) -> OrderStats:
    """Order statistics of every column of the finite float array ``x`` ``[n, d]`` (see :class:`OrderStats`).

    ``middle_mean`` averages ranks ``lo..hi`` per column in ``x``'s dtype; a column whose float32 sum
    overflows (values near the float32 maximum) is re-averaged in float64, so a representable mean is
    never ``inf``. ``threads`` defaults to ``torch.get_num_threads()`` (one below ``2**22`` elements);
    ``tile_cols`` to a tile of ~512 KiB. The result does not depend on ``threads`` or ``tile_cols``.
    """
    if x.ndim != 2 or x.dtype not in (np.float32, np.float64):
        raise TypeError(f"column_order_stats: expected a float32/float64 [n, d] array, got {x.dtype} {x.shape}")
    n, d = x.shape
    if not 0 <= lo <= hi < n:
        raise ValueError(f"column_order_stats: need 0 <= lo <= hi < n={n}, got lo={lo}, hi={hi}")
    cols = max(1, min(d, tile_cols or max(_MIN_TILE_COLS, _TILE_BYTES // (n * x.itemsize))))
    starts = list(range(0, d, cols))
    low, high = np.empty(d, x.dtype), np.empty(d, x.dtype)
    mid = np.empty(d, x.dtype) if middle_mean else None
    workers = max(1, min(threads or torch.get_num_threads(), _CPUS, len(starts)))
    if threads is None and n * d < _PARALLEL_MIN:
        workers = 1  # a few milliseconds of work: a thread hand-off would cost more than it saves
    lock = threading.Lock()
    pending = iter(starts)

    def next_start() -> int | None:
        with lock:
            return next(pending, None)

    def work() -> np.ndarray:
        tile = np.empty((cols, n), x.dtype)
        mask = np.empty((n, cols), bool)
        other = np.empty((n, cols), bool)
        inside = np.zeros(n, np.int64)
        while (s := next_start()) is not None:
            e = min(s + cols, d)
            _tile(x[:, s:e], tile[:e - s], mask[:, :e - s], other[:, :e - s], lo, hi,
                  low[s:e], high[s:e], None if mid is None else mid[s:e], inside)
        return inside

    if workers == 1:
        inside = work()
    else:
        pool = _pool()
        futures = [pool.submit(work) for _ in range(workers - 1)]
        inside = work()
        for fut in futures:
            inside += fut.result()
    return OrderStats(low=low, high=high, middle_mean=mid, inside=inside)


def _tile(rows: np.ndarray, tile: np.ndarray, mask: np.ndarray, other: np.ndarray, lo: int, hi: int,
          low: np.ndarray, high: np.ndarray, mid: np.ndarray | None, inside: np.ndarray) -> None:
    """One tile: ``rows`` ``[n, c]`` (a view of ``x``) -> ``low``/``high``/``mid`` ``[c]`` and ``inside += [n]``."""
    n = rows.shape[0]
    step = -(-n // -(-n // _COPY_ROWS))  # transpose ~32 source rows at a time: ~1.6x faster than one copyto
    for r in range(0, n, step):
        np.copyto(tile[:, r:r + step], rows[r:r + step].T)  # each column's n values contiguous
    tile.sort(axis=1)
    low[:] = tile[:, lo]
    high[:] = tile[:, hi]
    if mid is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            np.sum(tile[:, lo:hi + 1], axis=1, out=mid)
            mid /= hi - lo + 1
        bad = ~np.isfinite(mid)
        if bad.any():  # cast back: inf only if the mean itself is not representable
            mid[bad] = tile[bad, lo:hi + 1].astype(np.float64).mean(axis=1)
    if lo == hi:
        np.equal(rows, low, out=mask)
    else:
        np.greater_equal(rows, low, out=mask)
        np.less_equal(rows, high, out=other)
        mask &= other
    inside += mask.view(np.uint8).sum(axis=1, dtype=np.uint32)  # a byte sum: faster than count_nonzero(axis=1)


def _pool() -> ThreadPoolExecutor:
    """One process-wide pool of ``cpu_count - 1`` helper threads (created lazily; the caller is the other worker)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, _CPUS - 1), thread_name_prefix="trustfl-coord")
        return _POOL
