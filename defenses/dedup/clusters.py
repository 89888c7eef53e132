"""Duplicate clusters and the keep/drop rule.

Records are nodes, accepted duplicate pairs are edges. Two kinds of edges are treated
differently:

* **exact and lexical** edges are transitive: their connected components (scipy.sparse.csgraph)
  form *groups* (a chain a~b~c of shared text is one group; lexical precision stays 1.00 on
  planted data because a 0.7 Jaccard chain still shares most of its text);
* **semantic** edges do not chain: a topic ("URGENT! ... prize" spam) holds many distinct
  messages that are each close to a few others, and components over embedding links pulled
  up to 31 unrelated records into one cluster. Groups are joined by star clustering: groups
  are visited by decreasing number of semantically linked groups (then smallest id); an
  unassigned group becomes a *centre* and takes every still-unassigned group it links to
  directly. Every member of a cluster is then linked to its centre (one hop, never a chain).

**Keep/drop rule**: in every cluster keep exactly one record, the one with the smallest
``(client_id, index)``; drop all others. Global ids number clients in increasing id order and
records in index order, so that is the smallest global id of the component. Deterministic,
and independent of the order in which pairs were found.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["cluster_labels", "cluster_members", "component_labels", "keep_mask"]


def component_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes given edges ``(a[k], b[k])``; int64 ``[n]``."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def cluster_labels(n: int, a: np.ndarray, b: np.ndarray, transitive: np.ndarray | None = None) -> np.ndarray:
    """Cluster label of each of ``n`` nodes; int64 ``[n]``.

    ``transitive[k]`` (default all True) says edge ``(a[k], b[k])`` chains (exact, lexical):
    those edges form groups (connected components). The other edges (semantic) join groups
    by star clustering, one hop from a centre (see the module docstring). Deterministic.
    """
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    chain = np.ones(len(a), dtype=bool) if transitive is None else np.asarray(transitive, dtype=bool)
    groups = component_labels(n, a[chain], b[chain])
    ga, gb = groups[a[~chain]], groups[b[~chain]]
    cross = ga != gb
    if not cross.any():
        return groups
    ga, gb = ga[cross], gb[cross]
    links = np.unique(np.concatenate([np.stack([ga, gb], 1), np.stack([gb, ga], 1)]), axis=0)
    m = int(groups.max()) + 1
    degree = np.bincount(links[:, 0], minlength=m)
    rep = np.full(m, n, dtype=np.int64)
    np.minimum.at(rep, groups, np.arange(n, dtype=np.int64))
    starts = np.searchsorted(links[:, 0], np.arange(m + 1))
    centre = np.full(m, -1, dtype=np.int64)
    for g in np.lexsort((rep, -degree)):  # most linked groups first, then smallest id
        if centre[g] >= 0 or degree[g] == 0:
            continue
        centre[g] = g
        nbrs = links[starts[g]:starts[g + 1], 1]
        free = nbrs[centre[nbrs] < 0]
        centre[free] = g
    centre[centre < 0] = np.flatnonzero(centre < 0)
    return centre[groups]


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
