"""Dedup as a run component of the federated loop (``[dedup] enabled = true`` in a run config).

Runs on the client side after the per-client holdout split and before data attacks: clients
send keyed codes, the server finds candidate pairs, clients confirm and drop their duplicates.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from trustfl.defenses.dedup.errors import DedupError
from trustfl.defenses.dedup.keys import key_for_run
from trustfl.defenses.dedup.protocol import deduplicate
from trustfl.types import ClientDataContext, RunComponent, RunContext

__all__ = ["DedupComponent", "deduplicate_clients", "from_config"]
log = logging.getLogger(__name__)


def deduplicate_clients(train: dict[int, Any], config: Any, *, progress: bool = False
                        ) -> tuple[dict[int, Any], dict[str, Any]]:
    """Deduplicate the clients' training datasets (``datasets.Dataset`` with a ``text`` column).

    Returns:
        ``({client_id: kept dataset}, summary)`` where the summary (for the run manifest) holds the
        counts, thresholds, key id and the dropped ``row_id`` values per client.
    """
    s = config.dedup
    key = key_for_run(s.key_file, config.seed)
    texts = {cid: list(ds["text"][:]) for cid, ds in train.items()}
    result = deduplicate(texts, key, s, keep_server_view=False, progress=progress)
    kept, dropped_rows = {}, {}
    for cid, ds in train.items():
        mask = result.keep[cid]
        if len(mask) and not mask.any():
            raise DedupError(f"dedup: every one of client {cid}'s {len(mask)} training records duplicates a record of "
                             "a client with a smaller id, so it would train on nothing; raise the thresholds, drop "
                             "that client from the partition, or disable [dedup]")
        kept[cid] = ds if mask.all() else ds.select(np.flatnonzero(mask).tolist())
        if "row_id" in ds.column_names:
            rows = ds["row_id"][:]
            dropped_rows[str(cid)] = [int(rows[i]) for i in np.flatnonzero(~mask)]
    counts = result.counts()
    summary = {"methods": list(s.methods), "thresholds": result.thresholds, "key_id": key.key_id,
               "records_before": result.num_records, "records_after": result.num_records - result.num_dropped,
               **{k: counts[k] for k in ("pairs", "clusters", "cross_client_clusters", "dropped",
                                         "dropped_per_client")},
               "pair_counts": result.pair_counts(), "candidates": result.candidates, "dropped_rows": dropped_rows,
               "seconds": round(result.timings.get("total_s", 0.0), 3)}
    log.info("dedup: %d of %d training records dropped (%d clusters, %d across clients; pairs %s)",
             result.num_dropped, result.num_records, counts["clusters"], counts["cross_client_clusters"],
             counts["pairs"])
    return kept, summary


class DedupComponent(RunComponent):
    """Near-duplicate removal over the clients' training records (docs/dedup.md)."""

    name = "dedup"

    def __init__(self, config: Any) -> None:
        self.config = config
        self.summary: dict[str, Any] | None = None
        self.progress = False

    def setup(self, context: RunContext) -> None:
        self.progress = context.progress

    def prepare_clients(self, data: ClientDataContext) -> dict[int, tuple[Any, Any]]:
        kept, self.summary = deduplicate_clients({cid: tr for cid, (tr, _) in data.splits.items()}, self.config,
                                                 progress=self.progress)
        return {cid: (kept[cid], ho) for cid, (_, ho) in data.splits.items()}

    def manifest(self) -> dict[str, Any]:
        return {"dedup": self.summary}


def from_config(config: Any) -> list[RunComponent]:
    return [DedupComponent(config)] if config.dedup.enabled else []
