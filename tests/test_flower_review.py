"""The Flower engine's round bookkeeping and node cache, driven through the real ClientApp without Ray.

* A simulated node (a Ray actor hosts many virtual SuperNodes, one ``partition-id`` per message)
  builds the model, data split and tokenizer once per run config, not once per partition, and
  still trains each message's own client (same update as a node built for that client alone).
* The engine's facts (replied, dropped, SecAgg+) are read once per round: a Poisson round that
  sampled nobody (no ``fit``) records nobody, not the previous round's clients.
* The loopback deployment refuses a config value its ``key='value'`` strings cannot carry.

The grid is the transport only: real Flower Messages go to the real ClientApp (mods included).
"""

from __future__ import annotations

import pytest
import torch

from trustfl.config import RunConfig
from trustfl.errors import TrustFLError

flwr = pytest.importorskip("flwr")

from flower_nodes import InProcessGrid  # noqa: E402  (after the importorskip)
from tiny_runs import tiny_run  # noqa: E402


def _config(model_dir: str) -> RunConfig:
    data = tiny_run(model_dir, name="review", replace={
        "federation": {"rounds": 2, "engine": "flower", "sampling": "poisson", "clients_per_round": 2,
                       "flower": {"round_timeout": 60.0, "connect_timeout": 1.0}}},
        data__max_records=90, lora__top_layers=1, partition__num_clients=3, client__max_steps=1)
    return RunConfig.from_dict({**data, "seed": 4})


def _simulated_nodes(num_nodes: int) -> InProcessGrid:
    """Virtual SuperNodes ``partition-id = i``, all served in this one process (as one Ray actor serves many)."""
    return InProcessGrid([{"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)])


@pytest.fixture
def counted_builds(monkeypatch):
    """Every node-side build (model, split, components) this test triggers, as the node configs it got."""
    from trustfl.federation.flower import node

    builds: list[dict] = []
    real = node._build

    def build(config_json, node_config, num_labels, decisions):
        builds.append(dict(node_config))
        return real(config_json, node_config, num_labels, decisions)

    monkeypatch.setattr(node, "_build", build)
    monkeypatch.setattr(node, "_CACHE", {})
    return builds


def _report(round: int, vector: torch.Tensor):
    from trustfl.types import RoundReport

    return RoundReport(round=round, global_vector=vector, client_ids=[], aggregate=None, metrics={})


def test_a_simulated_node_builds_once_for_all_its_partitions_and_facts_are_read_once(tiny_bert_dir, counted_builds):
    import json

    from trustfl.federation.flower import node
    from trustfl.federation.flower.engine import FlowerEngine

    cfg = _config(tiny_bert_dir)
    text = json.dumps(cfg.to_dict(), sort_keys=True)
    first = node.node_clients(text, {"partition-id": 0, "num-partitions": 3}, 2)
    assert node.node_clients(text, {"partition-id": 1, "num-partitions": 3}, 2) is first  # no rebuild
    assert len(counted_builds) == 1 and sorted(first.splits) == [0, 1, 2]
    size = first.side.layout.size

    grid = _simulated_nodes(3)
    grid.crash[102] = "train"
    engine = FlowerEngine(grid, config=cfg, num_labels=2)
    g = torch.zeros(size)
    view = engine.fit(1, [0, 1, 2], g)  # three partitions, one after another, on the same "actor"
    assert len(counted_builds) == 1  # the model, split and components were built once
    assert view.client_ids == [0, 1] and set(engine.dropped) == {2}
    facts = engine.after_round(_report(1, g))["engine"]
    assert facts["replied"] == [0, 1] and list(facts["dropped"]) == ["2"] and "fell over" in facts["dropped"]["2"]

    # a Poisson round that sampled nobody: the loop skips fit but asks for the facts; none carry over
    assert engine.after_round(_report(2, g)) == {"engine": {"name": "flower", "replied": [], "dropped": {}}}

    # the shared build trained each message's own client: client 1's update equals a build for client 1 alone
    node._CACHE.clear()
    alone = node.node_clients(text, {"client-id": 1, "partition-id": 1}, 2)
    assert alone is not first and len(counted_builds) == 2
    from trustfl.federation.flower.codec import TrainTask

    result, _ = alone.train(TrainTask(round=1, client_id=1, config_json=text, num_labels=2, global_vector=g,
                                      privacy_state=None))
    torch.testing.assert_close(view.results[1].delta, result.delta, rtol=1e-5, atol=1e-7)
    assert view.results[1].num_samples == result.num_samples
    assert not torch.equal(view.results[0].delta, view.results[1].delta)  # different clients' data


def test_simulation_engine_facts_before_any_round(tiny_bert_dir):
    from trustfl.federation.flower.engine import SimulationEngine

    engine = SimulationEngine(_config(tiny_bert_dir), progress=False)  # Ray is not started by after_round
    assert engine.after_round(_report(1, torch.zeros(1))) == {"engine": {"name": "flower", "replied": [],
                                                                         "dropped": {}}}
    assert engine.runtime is None


def test_loopback_config_strings_refuse_what_they_cannot_carry():
    from trustfl.federation.flower.loopback import node_config_arg

    assert node_config_arg({"client-id": 0, "data-file": "/d/a b.jsonl", "x": 1.5, "y": True}) == \
        "client-id=0 data-file='/d/a b.jsonl' x=1.5 y=true"
    for value in ("/data/o'brien/node.jsonl", "line\nbreak"):
        with pytest.raises(TrustFLError, match="flower loopback: config value .* Flower's key='value' config "
                                               "strings cannot carry") as err:
            node_config_arg({"data-file": value})
        assert "\n" not in str(err.value)


def test_loopback_values_parse_back_as_flower_reads_them():
    from flwr.common.config import parse_config_args

    from trustfl.federation.flower.loopback import node_config_arg

    config = {"client-id": 3, "data-file": "/tmp/x y/z.jsonl", "torch-threads": 1, "ratio": 0.25, "on": False,
              "path": "C:\\data\\n.csv"}
    assert parse_config_args([node_config_arg(config)]) == config
