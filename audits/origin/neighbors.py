"""Nearest reference records: embedding cosine (FAISS) and MinHash Jaccard (vectorised scan).

* Cosine: a FAISS ``IndexFlatIP`` (exact inner-product search; Johnson, Douze & Jégou 2019,
  "Billion-scale similarity search with GPUs") over L2-normalised embeddings, so the inner
  product is the cosine similarity and ``1 - cos`` the cosine distance
  (:func:`trustfl.text.nearest_cosine`).
* MinHash: the estimated Jaccard index of keyed signatures (Broder 1997) against every
  reference, in ``[chunk, n_ref, k]`` blocks (no Python loop over pairs).
"""

from __future__ import annotations

import numpy as np

from trustfl.audits.origin.errors import OriginError
from trustfl.text import TextError
from trustfl.text import nearest_cosine as text_nearest_cosine

__all__ = ["nearest_cosine", "nearest_minhash"]


def nearest_cosine(queries: np.ndarray, references: np.ndarray, *, exclude_self: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine similarity of each query's most similar reference (FAISS ``IndexFlatIP``).

    :func:`trustfl.text.nearest_cosine`, with its input errors raised as :class:`OriginError`.

    Returns:
        ``(index[m] int64, cosine[m] float64)``.

    Example:
        >>> idx, cos = nearest_cosine(np.array([[1.0, 0.1]]), np.array([[0.0, 1.0], [1.0, 0.0]]))
        >>> int(idx[0]), round(float(cos[0]), 3)
        (1, 0.995)
    """
    try:
        return text_nearest_cosine(queries, references, exclude_self=exclude_self)
    except TextError as exc:
        raise OriginError(str(exc)) from exc


def nearest_minhash(queries: np.ndarray, references: np.ndarray, *, exclude_self: bool = False,
                    chunk_pairs: int = 250_000) -> tuple[np.ndarray, np.ndarray]:
    """Index and estimated Jaccard of each query signature's most similar reference signature.

    Args:
        queries: ``[m, k]`` MinHash signatures; references: ``[n, k]`` (same key and ``k``).
        exclude_self: as in :func:`nearest_cosine`.
        chunk_pairs: query-reference pairs compared per block (memory ~ ``chunk_pairs * k`` bytes).

    Returns:
        ``(index[m] int64, jaccard[m] float64)``; ties go to the lowest reference index.
    """
    q, r = np.asarray(queries), np.asarray(references)
    if q.ndim != 2 or r.ndim != 2 or (len(q) and q.shape[1] != r.shape[1]):
        raise OriginError(f"signatures must be [m, k] and [n, k] with the same k, got {q.shape} and {r.shape}")
    if len(r) < 1 + int(exclude_self):
        raise OriginError(f"references: need at least {1 + int(exclude_self)} signature(s), got {len(r)}")
    k = r.shape[1]
    idx = np.zeros(len(q), dtype=np.int64)
    best = np.zeros(len(q), dtype=np.float64)
    step = max(1, chunk_pairs // max(1, len(r)))
    for lo in range(0, len(q), step):
        eq = (q[lo:lo + step, None, :] == r[None, :, :]).sum(axis=2, dtype=np.int32)  # [b, n]
        if exclude_self:
            rows = np.arange(lo, min(lo + step, len(q)))
            eq[rows - lo, rows] = -1
        j = eq.argmax(axis=1)
        idx[lo:lo + step] = j
        best[lo:lo + step] = eq[np.arange(len(j)), j] / k
    return idx, best
