"""Duplicate clusters (connected components) and the keep/drop rule.

Records are nodes, accepted duplicate pairs (of any method) are edges; a cluster is a
connected component with at least two records (scipy.sparse.csgraph). Near-duplicate edges
are transitive here on purpose: a chain a~b~c puts all three in one cluster.

**Keep/drop rule**: in every cluster keep exactly one record, the one with the smallest
``(client_id, index)``; drop all others. Global ids number clients in increasing id order and
records in index order, so that is the smallest global id of the component. Deterministic,
and independent of the order in which pairs were found.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["cluster_members", "component_labels", "keep_mask"]


def component_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes given edges ``(a[k], b[k])``; int64 ``[n]``."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def keep_mask(labels: np.ndarray) -> np.ndarray:
    """``True`` for the smallest id of each component (kept), ``False`` for the rest (dropped).

    Example:
        >>> keep_mask(np.array([0, 1, 0, 2, 1])).tolist()
        [True, True, False, True, False]
    """
    labels = np.asarray(labels)
    keep = np.zeros(len(labels), dtype=bool)
    if len(labels):
        _, first = np.unique(labels, return_index=True)  # first occurrence = smallest id
        keep[first] = True
    return keep


def cluster_members(labels: np.ndarray) -> list[np.ndarray]:
    """Global ids of every component of size >= 2, each sorted, clusters ordered by their smallest id."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    srt = labels[order]
    cuts = np.flatnonzero(np.diff(srt)) + 1
    groups = [g for g in np.split(order, cuts) if len(g) > 1]
    groups.sort(key=lambda g: int(g[0]))
    return groups
