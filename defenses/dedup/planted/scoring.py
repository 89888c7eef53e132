"""Scoring a dedup result against planted ground truth.

* :func:`score_dedup` — per-type recall / precision and pairwise precision / recall / F1 of
  predicted clusters;
* :func:`adjudicate_pairs` — whether predicted pairs outside the planted ground truth are
  genuine near-duplicates (true shingle Jaccard), so duplicates already in the real corpora
  are not counted as false positives;
* :func:`labels_from_clusters` — cluster labels from lists of member ids (connected
  components: :func:`trustfl.defenses.dedup.component_labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from trustfl.defenses.dedup.clusters import component_labels
from trustfl.defenses.dedup.planted.corpus import DUP_TYPES, NATURAL_EXACT, ORIGINAL, PlantedCorpus
from trustfl.text import jaccard

__all__ = ["adjudicate_pairs", "labels_from_clusters", "score_dedup"]


def labels_from_clusters(n: int, clusters: Iterable[Sequence[int]]) -> np.ndarray:
    """Labels for ``n`` records from clusters of global ids; records in no cluster get their own label."""
    a, b = [], []
    for members in clusters:
        m = np.asarray(members, dtype=np.int64)
        if len(m) > 1:
            a.append(np.full(len(m) - 1, m[0]))
            b.append(m[1:])
    if not a:
        return np.arange(n, dtype=np.int64)
    return component_labels(n, np.concatenate(a), np.concatenate(b))


def adjudicate_pairs(texts: Sequence[str], a: np.ndarray, b: np.ndarray, shingles: Callable[[str], set[str]],
                     threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """True shingle Jaccard of record pairs and whether it reaches ``threshold``.

    Used to decide whether a predicted pair that the planted ground truth does not contain is
    a genuine near-duplicate (already in the real data) rather than a false positive.

    Returns:
        ``(jaccard float64 [m], genuine bool [m])``.
    """
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    cache: dict[int, set[str]] = {}

    def sh(i: int) -> set[str]:
        s = cache.get(i)
        if s is None:
            s = cache[i] = shingles(texts[i])
        return s

    jac = np.fromiter((jaccard(sh(int(i)), sh(int(j))) for i, j in zip(a, b)), dtype=np.float64,
                      count=len(a))
    return jac, jac >= threshold - 1e-12


def _pair_count(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x * (x - 1) / 2


def score_dedup(corpus: PlantedCorpus, pred_labels: np.ndarray, *,
                extra_true_edges: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Score predicted clusters against the ground truth, per duplicate type and overall.

    Ground truth: clusters are the connected components of the source links (planted copy ->
    source, natural exact duplicate -> first occurrence) plus ``extra_true_edges`` (pairs
    adjudicated as genuine near-duplicates, e.g. by :func:`adjudicate_pairs`).

    Definitions (``P(r)``: the predicted cluster of record ``r``, ``G(r)``: its true cluster):

    * **recall of type T**: fraction of records of type T (each is a copy) with ``P(r) = P(source(r))``;
    * **precision of type T**: over records r of type T, ``sum |P(r) ∩ G(r)| - 1`` divided by
      ``sum |P(r)| - 1``: of the pairs (r, s) the detector puts together, the fraction that are
      true duplicates (1.0 when the detector pairs no record of type T);
    * **pairwise** precision / recall / F1 over all unordered record pairs: a pair is predicted
      when both are in one predicted cluster, true when both are in one true cluster.

    Args:
        corpus: the corpus with ground truth.
        pred_labels: int ``[n]`` predicted cluster label per global record id (singletons unique).

    Returns:
        ``{"per_type": {type: {...}}, "pairwise": {...}, "ground_truth": {...}}``.
    """
    n = len(corpus)
    pred = np.asarray(pred_labels, dtype=np.int64)
    if pred.shape != (n,):
        raise ValueError(f"pred_labels must have shape ({n},), got {pred.shape}")
    la, lb = corpus.true_pairs()
    if extra_true_edges is not None:
        la = np.concatenate([la, np.asarray(extra_true_edges[0], dtype=np.int64)])
        lb = np.concatenate([lb, np.asarray(extra_true_edges[1], dtype=np.int64)])
    gt = component_labels(n, la, lb)
    _, pred = np.unique(pred, return_inverse=True)
    size_p = np.bincount(pred)
    size_g = np.bincount(gt)
    joint_key = pred * (int(gt.max()) + 1) + gt
    uniq, joint_inv, joint_cnt = np.unique(joint_key, return_inverse=True, return_counts=True)
    joint = joint_cnt[joint_inv]
    pp = size_p[pred] - 1  # predicted partners of each record
    tp = joint - 1  # correctly predicted partners
    per_type: dict[str, dict[str, Any]] = {}
    for kind in (NATURAL_EXACT, *DUP_TYPES, ORIGINAL):
        sel = np.flatnonzero(corpus.dup_type == kind)
        if not sel.size:
            continue
        row: dict[str, Any] = {"records": int(sel.size)}
        if kind != ORIGINAL:
            src = corpus.source_id[sel]
            hit = pred[sel] == pred[src]
            row["recall"] = float(hit.mean())
            row["missed"] = int((~hit).sum())
            cross = corpus.cross_client[sel]
            if cross.any() and (~cross).any():
                row["recall_cross_client"] = float(hit[cross].mean())
                row["recall_same_client"] = float(hit[~cross].mean())
        npp, ntp = float(pp[sel].sum()), float(tp[sel].sum())
        row["precision"] = ntp / npp if npp else 1.0
        row["predicted_partners"] = int(npp)
        row["false_partners"] = int(npp - ntp)
        per_type[kind] = row
    tp_pairs = float(_pair_count(joint_cnt).sum())
    pred_pairs = float(_pair_count(size_p).sum())
    true_pairs = float(_pair_count(size_g).sum())
    precision = tp_pairs / pred_pairs if pred_pairs else 1.0
    recall = tp_pairs / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "per_type": per_type,
        "pairwise": {"precision": precision, "recall": recall, "f1": f1, "true_positive_pairs": int(tp_pairs),
                     "predicted_pairs": int(pred_pairs), "true_pairs": int(true_pairs)},
        "ground_truth": {"links": int(len(corpus.true_pairs()[0])),
                         "adjudicated_edges": 0 if extra_true_edges is None else int(len(extra_true_edges[0])),
                         "clusters": int((size_g > 1).sum()), "records_in_clusters": int(size_g[size_g > 1].sum())},
        "predicted": {"clusters": int((size_p > 1).sum()), "records_in_clusters": int(size_p[size_p > 1].sum())},
    }
