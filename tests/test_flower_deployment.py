"""A real Flower deployment on loopback: a SuperLink and SuperNodes as processes, ``flwr run`` of
examples/flower_app, two rounds of trustfl's federation, the run directory checked.

Three SuperNodes, each with its own data file (written by examples/flower_app/make_node_data.py);
the third one's file is corrupt, so its ClientApp crashes every round: the rounds go on with the
two others (min_clients = 2), the run directory records the crash, and each round's global
adapter is exactly the survivors' FedAvg (checked from their stored updates). Processes are always
stopped (the deployment's context manager), and the whole test is bounded by the run's timeout.
"""

from __future__ import annotations

import pytest
import torch

from trustfl.rundir import RunDir

from flower_nodes import APP, node_configs, write_node_files

pytest.importorskip("flwr")
pytest.importorskip("psutil")


CONFIG = """
name = "deploy"
seed = 1
[model]
name = "{model}"
max_length = 24
[lora]
r = 2
top_layers = 2
[data]
name = "sms_spam"
max_records = 120
holdout_fraction = 0.1
[partition]
num_clients = 3
scheme = "iid"
[client]
batch_size = 8
max_steps = 2
lr = 5e-3
[federation]
rounds = 2
engine = "flower"
[federation.flower]
round_timeout = 100.0
connect_timeout = 60.0
min_clients = 2
"""


@pytest.mark.integration
def test_loopback_deployment_survives_a_crashed_client(tiny_bert_dir, tmp_path):
    from trustfl.federation.flower.loopback import LoopbackDeployment

    config = tmp_path / "federation.toml"
    config.write_text(CONFIG.format(model=tiny_bert_dir))
    files = write_node_files(config, tmp_path / "nodes")
    assert [f.name for f in files] == [f"client_{i}.jsonl" for i in range(3)]
    files[2].write_text("{this is not json\n")  # client 2's ClientApp crashes when it loads its data
    nodes = node_configs(files)
    out = tmp_path / "run"
    with LoopbackDeployment(tmp_path / "flwr", nodes) as deployment:
        deployment.run(APP, {"config": str(config), "out-dir": str(out)}, timeout=420)  # ~4 min at load 13
    run = RunDir(out)
    run.verify()
    metrics = run.metrics()
    assert [m["round"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["clients"] == [0, 1, 2]
        assert m["engine"]["replied"] == [0, 1]
        assert list(m["engine"]["dropped"]) == ["2"] and m["engine"]["dropped"]["2"].startswith("crashed")
        assert "not valid JSON" in m["engine"]["dropped"]["2"]
        assert sorted(m["client_metrics"]) == ["0", "1"]
    for r in (1, 2):
        assert sorted(run.client_ids(r)) == ["0", "1"]
        updates = [run.client_update(r, c) for c in ("0", "1")]
        deltas = torch.stack([u for u, _ in updates])
        weights = torch.tensor([float(n) for _, n in updates], dtype=torch.float64)
        expected = run.global_vector(r - 1) + ((deltas.double() * weights[:, None]).sum(0) / weights.sum()).float()
        torch.testing.assert_close(run.global_vector(r), expected, rtol=1e-5, atol=1e-6)
