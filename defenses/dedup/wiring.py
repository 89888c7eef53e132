"""Dedup as a run component of the federated loop (``[dedup] enabled = true`` in a run config).

Runs on the client side after the per-client holdout split and before data attacks: clients
send keyed codes, the server finds candidate pairs, clients confirm and drop their duplicates.
The same phases run in process (local engine) or as Flower messages (deployment).
"""

from __future__ import annotations

import logging
from typing import Any

from trustfl.defenses.dedup.distributed import DedupDataStep
from trustfl.types import ClientDataContext, RunComponent, RunContext

__all__ = ["DedupComponent", "deduplicate_clients", "from_config"]
log = logging.getLogger(__name__)


def deduplicate_clients(train: dict[int, Any], config: Any, *, progress: bool = False
                        ) -> tuple[dict[int, Any], dict[str, Any]]:
    """Deduplicate the clients' training datasets (``datasets.Dataset`` with a ``text`` column).

    Runs the dedup step's phases in process (as the local engine does).

    Returns:
        ``({client_id: kept dataset}, summary)`` where the summary (for the run manifest) holds the
        counts, thresholds, key id and the dropped ``row_id`` values per client.
    """
    component = DedupComponent(config)
    component.progress = progress
    kept = component.prepare_clients(ClientDataContext(splits={cid: (ds, None) for cid, ds in train.items()},
                                                       seed=config.seed))
    return {cid: tr for cid, (tr, _) in kept.items()}, dict(component.summary or {})


class DedupComponent(DedupDataStep):
    """Near-duplicate removal over the clients' training records (docs/dedup.md).

    A :class:`~trustfl.types.distributed.DistributedDataStep`: the local engine runs the protocol's
    phases in process; a Flower deployment runs them as messages, each node on its own records
    (:mod:`trustfl.defenses.dedup.distributed`).
    """

    name = "dedup"

    def setup(self, context: RunContext) -> None:
        self.progress = context.progress

    def prepare_clients(self, data: ClientDataContext) -> dict[int, tuple[Any, Any]]:
        splits = super().prepare_clients(data)
        if not self.deferred and self.summary is not None:  # in process: the records' row ids too
            self.summary["dropped_rows"] = {
                str(cid): [int(tr["row_id"][i]) for i in self.summary["dropped_indices"][str(cid)]]
                for cid, (tr, _) in data.splits.items() if "row_id" in tr.column_names}
            self._log()
        return splits

    def record_decision(self, decisions: dict[int, Any], *, excluded: dict[int, str], facts: dict[str, Any]) -> None:
        super().record_decision(decisions, excluded=excluded, facts=facts)
        if self.deferred:
            self._log()

    def _log(self) -> None:
        s = self.summary or {}
        log.info("dedup: %s of %s training records dropped (%s clusters, %s across clients; pairs %s)",
                 s.get("dropped"), s.get("records_before"), s.get("clusters"), s.get("cross_client_clusters"),
                 s.get("pairs"))


def from_config(config: Any) -> list[RunComponent]:
    return [DedupComponent(config)] if config.dedup.enabled else []
