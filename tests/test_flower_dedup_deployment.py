"""Distributed near-duplicate detection in a real Flower deployment on loopback.

A SuperLink and 3 SuperNodes as processes, each node with its own data file (sms_spam partitions
written by examples/flower_app/make_node_data.py) plus planted near-duplicates within and across
nodes. With ``[dedup]`` on, before round 1 every node sends keyed codes of its own records, the
server indexes them with FAISS and asks the nodes to confirm their within-node candidates, and
each node applies the decision to its own file before training. The run directory must record the
clusters and dropped records that the local engine's dedup step finds on the same records, and
each node must have trained on exactly its kept records.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from trustfl.rundir import RunDir

from flower_nodes import APP, node_configs, write_node_files

pytest.importorskip("flwr")
pytest.importorskip("psutil")


CONFIG = """
name = "deploy-dedup"
seed = 4
[model]
name = "{model}"
max_length = 16
[lora]
r = 2
top_layers = 1
[data]
name = "sms_spam"
max_records = 90
holdout_fraction = 0.1
[partition]
num_clients = 3
scheme = "iid"
[client]
batch_size = 8
max_steps = 1
[federation]
rounds = 1
engine = "flower"
[federation.flower]
round_timeout = 120.0
connect_timeout = 60.0
min_clients = 3
[dedup]
enabled = true
methods = ["exact", "lexical"]
key_file = "{key_file}"
"""


def _write_node_files(config, out):
    files = write_node_files(config, out)
    rows = [[json.loads(line) for line in f.read_text().splitlines()] for f in files]
    train = [[r["text"] for r in rs if not r["holdout"]] for rs in rows]
    planted = {  # cross-node exact (case/punctuation), cross-node typo, within-node exact
        1: [train[0][0].upper() + "!!", train[0][1][:-3] + "x" + train[0][1][-2:]],
        2: [train[1][2] + " ", train[2][0], train[0][0]],
    }
    for cid, extra in planted.items():
        rows[cid] += [{"text": t, "label": 0, "holdout": False} for t in extra]
        files[cid].write_text("".join(json.dumps(r) + "\n" for r in rows[cid]))
    return files, {c: [r["text"] for r in rs if not r["holdout"]] for c, rs in enumerate(rows)}


@pytest.mark.integration
def test_loopback_deployment_dedup_matches_the_local_engine(tiny_bert_dir, tmp_path):
    from datasets import Dataset

    from trustfl.config import load_config
    from trustfl.defenses.dedup import DedupKey, deduplicate, key_for_run
    from trustfl.defenses.dedup.wiring import DedupComponent
    from trustfl.federation.clients import prepare_clients
    from trustfl.federation.flower.loopback import LoopbackDeployment

    key_file = tmp_path / "dedup.key"  # the nodes' shared key: a deployment refuses dedup without one
    DedupKey.generate().save(key_file)
    config_path = tmp_path / "federation.toml"
    config_path.write_text(CONFIG.format(model=tiny_bert_dir, key_file=key_file))
    files, train = _write_node_files(config_path, tmp_path / "nodes")
    nodes = node_configs(files)
    out = tmp_path / "run"
    with LoopbackDeployment(tmp_path / "flwr", nodes) as deployment:
        deployment.run(APP, {"config": str(config_path), "out-dir": str(out)}, timeout=300)
    run = RunDir(out)
    run.verify()
    info = run.manifest["extra"]["dedup"]
    assert info["engine"] == "flower" and info["nodes"] == {"decided": [0, 1, 2], "left_out": {}}

    # the local engine's dedup step on the same records (what Federation.setup runs), and the protocol in one call
    config = load_config(config_path)
    local = DedupComponent(config)
    kept = prepare_clients({c: (Dataset.from_dict({"text": t}), None) for c, t in train.items()}, [local],
                           seed=config.seed)
    ref = deduplicate(train, key_for_run(str(key_file), config.seed), config.dedup)
    assert info["cluster_ids"] == local.summary["cluster_ids"] == [[[c, i] for c, i in cl] for cl in ref.clusters]
    assert info["dropped_indices"] == local.summary["dropped_indices"]
    assert info["dropped_indices"] == {str(c): np.flatnonzero(~m).tolist() for c, m in ref.keep.items()}
    assert info["cross_client_clusters"] >= 2 and info["dropped"] >= 4  # the planted copies were found
    # each node trained on exactly its kept records
    metrics = run.metrics()
    assert [m["round"] for m in metrics] == [1] and metrics[0]["engine"]["dropped"] == {}
    for c in range(3):
        _, n = run.client_update(1, str(c))
        assert n == len(kept[c][0]) == len(train[c]) - len(info["dropped_indices"][str(c)])
    text = (out / "manifest.json").read_text() + "".join(p.read_text() for p in out.glob("*.jsonl"))
    assert not any(t in text for ts in train.values() for t in ts if len(t) > 12)  # no record left a node
