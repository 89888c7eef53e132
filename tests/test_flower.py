"""The ``flower`` engine in Flower's simulation runtime (Ray): the same global adapter as the local engine.

Same config and seed, two rounds, five clients of a tiny BERT from a config: Multi-Krum, and
DP (client-level DP-FedAvg with seeded server noise plus sample-level DP-SGD on every client, whose
accountants the server keeps between rounds) give the local engine's global adapter, ε and
aggregation record; a server killed in round 2 resumes and ends where the local run ends. The Ray
runtime starts once for all runs (it is shared by a process's runs); those tests are marked
integration (slow). Codec and config checks need no Ray.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from trustfl.config import RunConfig
from trustfl.errors import ConfigError, UpdateError
from trustfl.federation import Federation
from trustfl.rundir import RunDir
from trustfl.types import ClientResult

flwr = pytest.importorskip("flwr")

from trustfl.federation.flower.codec import (decode_reply, decode_task, encode_reply, encode_task,  # noqa: E402
                                             from_array_record, to_array_record)


def _config(model_dir: str, engine: str, **sections) -> RunConfig:
    data = {
        "name": f"fl-{engine}", "seed": 3,
        "model": {"name": model_dir, "max_length": 24},
        "lora": {"r": 2, "top_layers": 2},
        "data": {"name": "sms_spam", "max_records": 120, "holdout_fraction": 0.1},
        "partition": {"num_clients": 5, "scheme": "iid"},
        "client": {"batch_size": 8, "max_steps": 2, "lr": 5e-3},
        "federation": {"rounds": 2, "engine": engine, "save_client_updates": True,
                       "flower": {"client_cpus": 1.0, "round_timeout": 300.0}},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return RunConfig.from_dict(data)


def _both(tiny_bert_dir, tmp_path, **sections):
    runs = {}
    for engine in ("local", "flower"):
        fed = Federation(_config(tiny_bert_dir, engine, **sections), out_dir=tmp_path / engine, progress=False)
        runs[engine] = (fed, fed.run())
    return runs


@pytest.fixture(scope="module", autouse=True)
def _stop_simulation():
    yield
    from trustfl.federation.flower.engine import shutdown_simulations

    shutdown_simulations()


@pytest.mark.integration  # starts Ray (about 30 s on 2 idle cores)
def test_flower_simulation_matches_local_with_multi_krum(tiny_bert_dir, tmp_path):
    runs = _both(tiny_bert_dir, tmp_path, server={"aggregator": "multi_krum", "aggregator_options": {"f": 1}})
    (local, _), (flower, summary) = runs["local"], runs["flower"]
    assert summary.rounds_completed == 2
    torch.testing.assert_close(flower.global_vector, local.global_vector, rtol=1e-5, atol=1e-6)
    a, b = RunDir(tmp_path / "local"), RunDir(tmp_path / "flower")
    b.verify()
    for r in (1, 2):
        torch.testing.assert_close(b.global_vector(r), a.global_vector(r), rtol=1e-5, atol=1e-6)
    for ma, mb in zip(a.metrics(), b.metrics()):
        accepted = {c: v["accepted"] for c, v in ma["aggregation"]["clients"].items()}
        assert {c: v["accepted"] for c, v in mb["aggregation"]["clients"].items()} == accepted  # same selection
        assert not all(accepted.values())  # Multi-Krum left one out
        assert mb["engine"] == {"name": "flower", "replied": ma["clients"], "dropped": {}}
    assert not torch.equal(b.global_vector(2), b.global_vector(0))  # it trained


@pytest.mark.integration  # starts Ray (about 30 s on 2 idle cores)
def test_flower_simulation_matches_local_with_dp(tiny_bert_dir, tmp_path):
    dp = {"client": {"noise_multiplier": 1.0, "clip_norm": 0.05, "delta": 1e-5},
          "sample": {"noise_multiplier": 1.0, "delta": 1e-5, "max_grad_norm": 0.5}}
    runs = _both(tiny_bert_dir, tmp_path, privacy=dp,
                 federation={"clients_per_round": 3, "sampling": "poisson", "save_client_updates": False},
                 server={"aggregator": "fedavg", "aggregator_options": {"weighted": False}})
    (local, _), (flower, _) = runs["local"], runs["flower"]
    torch.testing.assert_close(flower.global_vector, local.global_vector, rtol=1e-5, atol=1e-6)
    a, b = RunDir(tmp_path / "local").metrics(), RunDir(tmp_path / "flower").metrics()
    for ma, mb in zip(a, b):
        assert mb["privacy_client"]["epsilon"] == pytest.approx(ma["privacy_client"]["epsilon"], rel=1e-12)
        # sample-level ε: each client's accountant ran on its node and was kept by the server between rounds
        assert mb["privacy_sample"]["epsilon_per_client"] == pytest.approx(ma["privacy_sample"]["epsilon_per_client"])
        assert mb["privacy_sample"]["epsilon_max"] > 0
    extra = RunDir(tmp_path / "flower").manifest["extra"]["privacy"]
    assert extra["sample"]["epsilon_max"] == pytest.approx(a[-1]["privacy_sample"]["epsilon_max"])


# ---------------------------------------------------------------------- codec (no Ray)
def _reply(delta, *, cid=2, n=7, metrics=None, state=None):
    return encode_reply(ClientResult(client_id=cid, delta=delta, num_samples=n, metrics=metrics or {"loss": 1.0}),
                        privacy_state=state)


def test_codec_round_trips_only_the_vector():
    v = torch.randn(11)
    task = decode_task(encode_task(round=3, client_id=4, config_json="{}", num_labels=2, global_vector=v,
                                   privacy_state={"history": [[1.0, 0.1, 2]]}))
    assert (task.round, task.client_id, task.num_labels) == (3, 4, 2)
    assert torch.equal(task.global_vector, v) and task.privacy_state == {"history": [[1.0, 0.1, 2]]}
    result, state = decode_reply(_reply(v, state={"a": 1}), client_id=2, size=11)
    assert torch.equal(result.delta, v) and result.num_samples == 7 and state == {"a": 1}
    big = torch.full((5,), torch.finfo(torch.float32).max)
    assert torch.equal(from_array_record(to_array_record(big), size=5, what="x"), big)
    nan = torch.tensor([float("nan"), 1.0])  # values are the pipeline's job: decoded as sent
    assert torch.isnan(decode_reply(_reply(nan), client_id=2, size=2)[0].delta[0])


@pytest.mark.parametrize("bad, match", [
    (lambda: _reply(torch.randn(4)), "float32 vector of 5"),
    (lambda: _reply(torch.randn(5), cid=3), "claims to come from client 3"),
    (lambda: _reply(torch.randn(5), n=-1), "num_samples"),
    (lambda: _reply(torch.randn(5), metrics={"loss": float("inf")}), "finite"),
    (lambda: _reply(torch.randn(5), metrics={"loss": float("nan")}), "finite"),
])
def test_codec_rejects_bad_replies(bad, match):
    with pytest.raises(UpdateError, match=match):
        decode_reply(bad(), client_id=2, size=5)


def test_codec_rejects_wrong_dtype_missing_records_and_bad_state():
    app = flwr.app
    content = _reply(torch.randn(5))
    content["update"] = app.ArrayRecord({"vector": app.Array(np.zeros(5, dtype=np.float64))})
    with pytest.raises(UpdateError, match="float32"):
        decode_reply(content, client_id=2, size=5)
    content = _reply(torch.randn(5))
    del content["metrics"]
    with pytest.raises(UpdateError, match="MetricRecord"):
        decode_reply(content, client_id=2, size=5)
    with pytest.raises(UpdateError, match="report"):
        decode_reply(app.RecordDict(), client_id=2, size=5)
    content = _reply(torch.randn(5))
    content["report"]["privacy_state"] = "{not json"
    with pytest.raises(UpdateError, match="JSON"):
        decode_reply(content, client_id=2, size=5)
    content = _reply(torch.randn(5))
    content["report"]["num_samples"] = True
    with pytest.raises(UpdateError, match="num_samples"):
        decode_reply(content, client_id=2, size=5)
    inflated = decode_reply(_reply(torch.randn(5), n=2**62), client_id=2, size=5)[0]
    assert inflated.num_samples == 2**62  # kept as the client's claim; the pipeline decides what weights mean
    with pytest.raises(UpdateError, match="size"):
        task = encode_task(round=1, client_id=0, config_json="{}", num_labels=None, global_vector=torch.randn(3),
                           privacy_state=None)
        task["task"]["size"] = 0
        decode_task(task)


def test_flower_settings_name_the_field(tiny_bert_dir):
    for key, value in (("client_cpus", 0), ("round_timeout", -1.0), ("connect_timeout", 0), ("min_clients", 0)):
        with pytest.raises(ConfigError, match=f"federation.flower.{key}"):
            _config(tiny_bert_dir, "flower", federation={"flower": {key: value}})
    with pytest.raises(ConfigError, match="federation.engine"):
        _config(tiny_bert_dir, "ray")
    with pytest.raises(ConfigError, match="federation.flower.*unknown"):
        _config(tiny_bert_dir, "flower", federation={"flower": {"timeout": 3}})
    cfg = _config(tiny_bert_dir, "flower")
    assert json.loads(json.dumps(cfg.to_dict()))["federation"]["flower"]["min_clients"] == 1
    assert math.isfinite(cfg.federation.flower.round_timeout)


def test_flower_engine_refuses_mpc_secure_aggregation(tiny_bert_dir, tmp_path):
    class Sum:
        def weighted_sum(self, updates, weights):
            return (updates * weights[:, None].to(updates.dtype)).sum(0), float(weights.sum())

    cfg = _config(tiny_bert_dir, "flower", federation={"save_client_updates": False})
    fed = Federation(cfg, out_dir=tmp_path / "s", secure_aggregation=Sum(), progress=False)
    with pytest.raises(ConfigError, match="federation.engine = 'flower'.*secure aggregation"):
        fed.setup()


@pytest.mark.integration  # starts Ray (about 30 s on 2 idle cores)
def test_killed_flower_server_resumes_from_its_last_complete_round(tiny_bert_dir, tmp_path):
    """A server that dies in round 2 (before its commit) resumes after round 1 and ends where an
    uninterrupted local run ends, sample-level DP accountants included."""
    dp = {"sample": {"noise_multiplier": 1.0, "delta": 1e-5, "max_grad_norm": 0.5}}
    local = Federation(_config(tiny_bert_dir, "local", privacy=dp), out_dir=tmp_path / "local", progress=False)
    local.run()

    def die_in_round_2(report):
        if report.round == 2:
            raise RuntimeError("server killed")

    cfg = _config(tiny_bert_dir, "flower", privacy=dp)
    with pytest.raises(RuntimeError, match="server killed"):
        Federation(cfg, out_dir=tmp_path / "flower", callbacks=[die_in_round_2], progress=False).run()
    assert RunDir(tmp_path / "flower").completed_rounds == 1
    resumed = Federation(cfg, out_dir=tmp_path / "flower", resume=True, progress=False)
    summary = resumed.run()
    assert summary.rounds_completed == 2
    torch.testing.assert_close(resumed.global_vector, local.global_vector, rtol=1e-5, atol=1e-6)
    a, b = RunDir(tmp_path / "local").metrics()[-1], RunDir(tmp_path / "flower").metrics()[-1]
    assert b["privacy_sample"]["epsilon_per_client"] == pytest.approx(a["privacy_sample"]["epsilon_per_client"])
