"""Members and non-members of a run: the clients' training records and the holdouts the data module kept.

The records are never stored in the run directory (private client text stays with its owner); they are
rebuilt from the recorded config and seed exactly as the run built them (:func:`trustfl.federation.clients.
split_data`, then every run component's client-side data step), and every client's rebuilt training set and
holdout must match the dataset fingerprints recorded in the manifest, else the audit stops with a clear
error instead of scoring the wrong records. Canaries (negative ``row_id``) are set apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from trustfl.audits.privacy.settings import PrivacyAuditError

__all__ = ["MembershipData", "check_disjoint", "membership_data", "recorded_canaries", "run_config"]


@dataclass
class MembershipData:
    """Members (client training records, canaries excluded) and non-members (client holdouts).

    ``dropped_duplicates``: holdout records whose text equals a member's text (duplicates in the corpus):
    they are not non-members, so they were left out. ``members``/``nonmembers`` carry ``text``, ``label``
    (classification), ``client`` and ``row_id`` columns.
    """

    members: Any
    nonmembers: Any
    task: str
    dropped_duplicates: int = 0
    sampled_from: dict[str, int] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha256 over both sets (keys the score cache; no text leaves the run directory)."""
        from trustfl.data import fingerprint_dataset

        cols = ["text", "label"] if self.task == "classification" else ["text"]
        return hashlib.sha256((fingerprint_dataset(self.members, cols) + fingerprint_dataset(self.nonmembers, cols))
                              .encode()).hexdigest()


def run_config(run: Any, override: Any = None) -> Any:
    """The run's :class:`~trustfl.config.RunConfig` (``override``: a config for a run written by your own loop).

    Raises:
        PrivacyAuditError: the recorded config is not a trustfl run config and no override was given.
    """
    from trustfl.config import RunConfig
    from trustfl.errors import ConfigError

    if override is not None:
        return override if isinstance(override, RunConfig) else RunConfig.from_dict(dict(override))
    try:
        return RunConfig.from_dict(run.config)
    except (ConfigError, TypeError, ValueError) as exc:
        raise PrivacyAuditError(
            f"{run.path}: the recorded config is not a trustfl run config ({str(exc).splitlines()[0]}); for a run "
            "written by your own loop pass the model and the member/non-member records to membership_audit(...), "
            "or a trustfl config that rebuilds them (--config)") from exc


def check_disjoint(members: Any, nonmembers: Any) -> None:
    """Members and non-members must not share a record (same text and label).

    Raises:
        PrivacyAuditError: an empty side, or records in both (the count and the first row, never its text).
    """
    if len(members) == 0 or len(nonmembers) == 0:
        side = "members" if len(members) == 0 else "non-members"
        raise PrivacyAuditError(f"membership audit: no {side}; both members and non-members are needed "
                                "(data.holdout_fraction = 0 keeps no non-members)")
    labels = "label" in members.column_names and "label" in nonmembers.column_names

    def key(ds: Any, i: int) -> tuple[Any, ...]:
        return (ds[i]["text"], ds[i]["label"]) if labels else (ds[i]["text"],)

    seen = {key(members, i) for i in range(len(members))}
    both = [i for i in range(len(nonmembers)) if key(nonmembers, i) in seen]
    if both:
        raise PrivacyAuditError(f"membership audit: {len(both)} record(s) are both members and non-members (first: "
                                f"non-member row {both[0]}); members and non-members must be disjoint")


def recorded_canaries(run: Any) -> list[dict[str, Any]] | None:
    """The canaries recorded in the manifest (``extra["canaries"]``), checked against their sha256; None: none.

    Raises:
        PrivacyAuditError: a canary record that is malformed or does not match its recorded digest.
    """
    info = (run.manifest.get("extra") or {}).get("canaries")
    if not info:
        return None
    records = info.get("records")
    if not isinstance(records, list) or not records:
        raise PrivacyAuditError(f"{run.path}: manifest extra 'canaries' holds no canary records")
    digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
    if digest != info.get("sha256"):
        raise PrivacyAuditError(f"{run.path}: the recorded canaries do not match their sha256 (edited manifest?)")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("text"), str) or not isinstance(r.get("included"), bool):
            raise PrivacyAuditError(f"{run.path}: canary {i} is malformed (needs text and a boolean 'included')")
    return records


def _subsample(ds: Any, n: int, seed: int) -> Any:
    if len(ds) <= n:
        return ds
    import numpy as np

    return ds.select(np.sort(np.random.default_rng(seed).permutation(len(ds))[:n]))


def membership_data(run: Any, *, config: Any = None, max_records: int | None = None, seed: int = 0,
                    progress: bool = False) -> MembershipData:
    """Rebuild the run's members and non-members from its config and seed, checked against its fingerprints.

    Raises:
        PrivacyAuditError: not a trustfl config, no holdout, or a rebuilt set whose fingerprint differs from
            the manifest's (the dataset file changed, or the run was written with other code).
    """
    import datasets

    from trustfl import plugins
    from trustfl.federation.clients import prepare_clients, split_data
    from trustfl.rundir import RecordsMismatchError
    from trustfl.types import RunContext

    cfg = run_config(run, config)
    recorded = run.manifest.get("fingerprints") or {}
    if not any(k.startswith("client_") for k in recorded):
        raise PrivacyAuditError(f"{run.path}: the manifest records no client dataset fingerprints "
                                "(client_<id>_train / _holdout), so members cannot be checked; pass them explicitly")
    data = split_data(cfg)
    components = plugins.build_components(cfg)
    context = RunContext(config=cfg, seed=cfg.seed, num_clients=cfg.partition.num_clients,
                         clients_per_round=cfg.clients_per_round, rounds=cfg.federation.rounds, progress=progress)
    for c in components:
        c.setup(context)
    splits = prepare_clients(data.splits, components, seed=cfg.seed)
    try:
        run.check_client_records(splits)
    except RecordsMismatchError as exc:
        raise PrivacyAuditError(f"{exc}; give the member/non-member records explicitly") from None
    members, nonmembers = [], []
    for cid, (train, holdout) in sorted(splits.items()):
        real = train.filter(lambda r: r["row_id"] >= 0) if "row_id" in train.column_names else train
        members.append(real.add_column("client", [cid] * len(real)))
        nonmembers.append(holdout.add_column("client", [cid] * len(holdout)))
    keep = ["text", "client", "row_id"] + (["label"] if cfg.model.task == "classification" else [])
    mem = datasets.concatenate_datasets(members).select_columns(keep)
    non = datasets.concatenate_datasets(nonmembers).select_columns(keep)
    if len(non) == 0:
        raise PrivacyAuditError(f"{run.path}: the clients kept no holdout records (data.holdout_fraction = "
                                f"{cfg.data.holdout_fraction}), so there are no non-members to compare with")
    texts = set(mem["text"])
    dup = [i for i, t in enumerate(non["text"]) if t in texts]  # the corpus repeats some texts
    if dup:
        drop = set(dup)
        non = non.select([i for i in range(len(non)) if i not in drop])
    sizes = {"members": len(mem), "nonmembers": len(non)}
    if max_records is not None:
        mem, non = _subsample(mem, max_records, seed), _subsample(non, max_records, seed + 1)
    check_disjoint(mem, non)
    return MembershipData(members=mem, nonmembers=non, task=cfg.model.task, dropped_duplicates=len(dup),
                          sampled_from=sizes)
