"""What a federated run records about itself in the manifest's ``extra`` (provenance for audits)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["run_extra"]


def run_extra(fed: Any, data: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """``(extra, fingerprints)`` for a :class:`~trustfl.federation.Federation` after its data and model are ready.

    The pipeline and every component are recorded by ``get_config()`` (derived from their
    ``__init__`` signatures), so nothing a stage was built with is lost.
    """
    from trustfl.data import fingerprint_dataset

    fingerprints = {"dataset": fingerprint_dataset(data.dataset), "test": fingerprint_dataset(data.test),
                    **{f"client_{cid}_train": fingerprint_dataset(d) for cid, d in fed.client_train.items()},
                    **{f"client_{cid}_holdout": fingerprint_dataset(d) for cid, d in fed.client_holdout.items()}}
    extra: dict[str, Any] = {
        "engine": fed.engine.name,
        "pipeline": repr(fed.pipeline),
        "pipeline_config": fed.pipeline.get_config(),
        "components": [c.name for c in fed.components],
        "attackers": fed.malicious,
        "update_attackers": sorted({a for c in fed.components for a in c.update_attackers()}),
        "label_names": fed.label_names,
        "baseline_accuracy": fed.baseline_accuracy,
        "model_path": fed.fm.path,
        # float reductions depend on it: bit-exact reproduction needs the same thread count
        "torch_num_threads": torch.get_num_threads(),
        "clients": {str(cid): {"train_rows": list(map(int, fed.client_train[cid]["row_id"])),
                               "holdout_rows": list(map(int, fed.client_holdout[cid]["row_id"]))}
                    for cid in fed.client_train},
        "test_rows": list(map(int, data.test["row_id"])),
        "secure_aggregation": fed.secure_aggregation is not None,
    }
    for component in fed.components:
        extra.update(component.manifest())
    return extra, fingerprints
