"""The steps of the dedup protocol after the server's search, shared by the in-process protocol
(:func:`~trustfl.defenses.dedup.protocol.deduplicate`) and the distributed data step
(:mod:`~trustfl.defenses.dedup.distributed`): one numbering of all records, the candidates each client's
confirmation accepted, clusters and the keep rule, and the parameters a result records."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from trustfl.defenses.dedup.clusters import cluster_labels, cluster_members, keep_mask
from trustfl.defenses.dedup.result import PairTable
from trustfl.text import MATCHING_RULE

__all__ = ["Numbering", "accepted_pairs", "decide_clusters", "result_params"]

# a within-client confirmation: (method, candidates, indices of the within-client ones) -> (ok, local score) there
Confirm = Callable[[str, Any, np.ndarray], tuple[np.ndarray, np.ndarray]]


class Numbering:
    """All clients' records numbered 0..n-1 in client-id order: ``owner[g]``, ``local[g]``, ``offsets``."""

    def __init__(self, ids: Sequence[int], sizes: Mapping[int, int]) -> None:
        self.ids = [int(c) for c in ids]
        self.offsets = np.zeros(len(self.ids) + 1, dtype=np.int64)
        np.cumsum([sizes[c] for c in self.ids], out=self.offsets[1:])
        self.owner = np.repeat(np.array(self.ids, dtype=np.int64), [sizes[c] for c in self.ids])
        self.local = (np.concatenate([np.arange(sizes[c], dtype=np.int64) for c in self.ids]) if self.offsets[-1]
                      else np.zeros(0, np.int64))

    @property
    def n(self) -> int:
        return int(self.offsets[-1])


def accepted_pairs(found: Mapping[str, Any], final: Mapping[str, float], confirm: Confirm | None
                   ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
    """The candidate pairs that stand: cross-client ones as the server scored them, within-client ones as their
    client's ``confirm`` decided on its own texts (``None``: the server's estimate against ``final``)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("a", "b", "method", "score", "local")}
    stats: dict[str, dict[str, int]] = {}
    for method, cand in found.items():
        accepted = np.ones(len(cand), dtype=bool)
        local_score = np.full(len(cand), np.nan)
        within = np.flatnonzero(cand.needs_confirmation)
        if confirm is not None and within.size:
            accepted[within], local_score[within] = confirm(method, cand, within)
        elif within.size:  # no confirmation: the estimate decides
            accepted[within] = cand.score[within] >= final[method] - 1e-12
        stats[method] = {"candidates": int(len(cand)), "within_client": int(within.size),
                         "accepted": int(accepted.sum()), "rejected_by_client": int((~accepted).sum())}
        parts["a"].append(cand.a[accepted])
        parts["b"].append(cand.b[accepted])
        parts["method"].append(np.full(int(accepted.sum()), method, dtype=object))
        parts["score"].append(cand.score[accepted])
        parts["local"].append(local_score[accepted])
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}, stats


def decide_clusters(numbering: Numbering, pairs: Mapping[str, np.ndarray]
                    ) -> tuple[dict[int, np.ndarray], list[list[tuple[int, int]]], PairTable]:
    """Clusters of the accepted pairs (transitive except semantic ones) and the keep rule: per client, the mask
    of records kept (the smallest ``(client, index)`` of a cluster stays); the clusters as ``(client, index)``;
    the pairs as a table sorted by global record numbers."""
    owner, local, offsets = numbering.owner, numbering.local, numbering.offsets
    a, b = pairs["a"].astype(np.int64), pairs["b"].astype(np.int64)
    labels = cluster_labels(numbering.n, a, b, transitive=pairs["method"].astype(str) != "semantic")
    keep_all = keep_mask(labels)
    clusters = [[(int(owner[g]), int(local[g])) for g in members] for members in cluster_members(labels)]
    keep = {c: keep_all[offsets[k]:offsets[k + 1]].copy() for k, c in enumerate(numbering.ids)}
    order = np.lexsort((b, a))
    table = PairTable(client_a=owner[a][order], index_a=local[a][order], client_b=owner[b][order],
                      index_b=local[b][order], method=pairs["method"][order].astype(str),
                      score=pairs["score"][order].astype(np.float64),
                      local_score=pairs["local"][order].astype(np.float64))
    return keep, clusters, table


def result_params(methods: Sequence[str], key_id: str, settings: Any, found: Mapping[str, Any]) -> dict[str, Any]:
    """What a result records about how it was made: methods, key id, matching rule, confirmation, and per method
    its code parameters and the server's index facts."""
    s = settings
    params: dict[str, Any] = {"methods": list(methods), "key_id": key_id, "normalization": MATCHING_RULE,
                              "confirm": s.confirm, "confirm_margin": s.confirm_margin, "shard_size": s.shard_size}
    if "lexical" in methods:
        params["lexical"] = {"num_perm": s.num_perm, "shingle": s.shingle, "ngram": s.ngram, **found["lexical"].info}
    if "semantic" in methods:
        params["semantic"] = {"bits": s.simhash_bits, "model": s.embed_model, "max_length": s.max_length,
                              **found["semantic"].info}
    return params
