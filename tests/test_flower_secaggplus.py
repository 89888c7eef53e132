"""Flower's SecAgg+ on trustfl's Flower engine: configs refused at load, and a simulated run whose
aggregate equals plain FedAvg within Flower's quantization error.

The bound (docs/flower.md, trustfl.federation.flower.secaggplus): with unweighted FedAvg every
client's weight is 1 = max_weight, each entry is stochastically rounded to a grid of step
2c/Q (c = clipping_range, Q = quantization_range), and the server divides the sum of n entries
by n, so |SecAgg+ mean - plain mean| < 2c/Q per entry. The reference mean is recomputed here by
training the same clients in this process from the run's own previous global adapter.
"""

from __future__ import annotations

import json

import pytest
import torch

from trustfl.config import RunConfig
from trustfl.errors import ConfigError
from trustfl.federation import Federation
from trustfl.rundir import RunDir

flwr = pytest.importorskip("flwr")

SECAGG = {"secure_aggregation": "secaggplus", "round_timeout": 300.0, "min_clients": 2}


def _config(model_dir: str, *, engine: str = "flower", flower: dict | None = None, **sections) -> RunConfig:
    data = {
        "name": "secagg", "seed": 5,
        "model": {"name": model_dir, "max_length": 24},
        "lora": {"r": 2, "top_layers": 2},
        "data": {"name": "sms_spam", "max_records": 100, "holdout_fraction": 0.1},
        "partition": {"num_clients": 4, "scheme": "iid"},
        "client": {"batch_size": 8, "max_steps": 2, "lr": 5e-3},
        "server": {"aggregator": "fedavg", "aggregator_options": {"weighted": False}},
        "federation": {"rounds": 2, "engine": engine, "save_client_updates": False,
                       "flower": {**SECAGG, **(flower or {})}},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return RunConfig.from_dict(data)


# ---------------------------------------------------------------------- refused at load (no Ray)
@pytest.mark.parametrize("sections, match", [
    ({"server": {"aggregator": "krum", "aggregator_options": {"f": 0}}}, "needs individual updates"),
    ({"server": {"aggregator": "median", "aggregator_options": {}}}, "needs individual updates"),
    ({"server": {"pre": [{"name": "norm_clip", "max_norm": 1.0}]}}, "needs individual updates"),
    ({"federation": {"save_client_updates": True}}, "save_client_updates must be false"),
])
def test_secaggplus_refuses_what_needs_individual_updates(tiny_bert_dir, tmp_path, sections, match):
    fed_section = {"rounds": 2, "engine": "flower", "save_client_updates": False,
                   "flower": SECAGG, **sections.pop("federation", {})}
    cfg = _config(tiny_bert_dir, federation=fed_section, **sections)
    with pytest.raises(ConfigError, match=match) as err:
        Federation(cfg, out_dir=tmp_path / "r", progress=False)
    line = str(err.value)
    assert "\n" not in line and line.startswith("federation.flower.secure_aggregation = 'secaggplus'")
    assert not (tmp_path / "r").exists()  # refused before anything ran or was written


def test_secaggplus_refuses_update_attacks(tiny_bert_dir, tmp_path):
    cfg = _config(tiny_bert_dir, attack={"update": {"name": "sign_flip"}, "attackers": [1]})
    with pytest.raises(ConfigError, match="secaggplus.*update attacks"):
        Federation(cfg, out_dir=tmp_path / "r", progress=False)


@pytest.mark.parametrize("flower, match", [
    ({"num_shares": 2}, "num_shares: an integer must be > 2"),
    ({"num_shares": 0.0}, "num_shares: a float"),
    ({"num_shares": 1.5}, "num_shares: a float"),
    ({"num_shares": 5, "reconstruction_threshold": 5}, "reconstruction_threshold: must be < num_shares"),
    ({"reconstruction_threshold": 0}, "reconstruction_threshold: must be >= 1"),
    ({"reconstruction_threshold": 1.01}, "reconstruction_threshold: a float"),
    ({"clipping_range": 0.0}, "clipping_range: must be > 0"),
    ({"clipping_range": -1e308}, "clipping_range: must be > 0"),
    ({"quantization_range": 1}, "quantization_range: must be in"),
    ({"quantization_range": 2**32}, "quantization_range: must be in"),
    ({"quantization_range": 2**31}, "overflows SecAgg\\+'s modulus"),  # 4 clients x 2**31 >= 2**32
    ({"max_weight": 0.0}, "max_weight: must be > 0"),
    ({"max_weight": float("inf")}, "must be a finite number"),
    ({"secure_aggregation": "secagg"}, "secure_aggregation: must be one of"),
    ({"num_shares": "3"}, "num_shares"),
])
def test_secaggplus_settings_name_the_field(tiny_bert_dir, flower, match):
    with pytest.raises(ConfigError, match=match) as err:
        _config(tiny_bert_dir, flower=flower)
    assert "\n" not in str(err.value) and str(err.value).startswith("federation")


def test_secaggplus_needs_the_flower_engine_and_two_clients(tiny_bert_dir):
    with pytest.raises(ConfigError, match="runs on engine = 'flower', got engine = 'local'"):
        _config(tiny_bert_dir, engine="local")
    with pytest.raises(ConfigError, match="clients_per_round: SecAgg\\+ sums at least 2"):
        _config(tiny_bert_dir, federation={"clients_per_round": 1})
    cfg = _config(tiny_bert_dir, flower={"num_shares": 3, "reconstruction_threshold": 2, "max_weight": 1.0})
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))  # as the nodes receive it
    assert again.federation.flower == cfg.federation.flower
    assert isinstance(again.federation.flower.num_shares, int)


@pytest.mark.parametrize("sections", [
    {"federation": {"sampling": "poisson", "clients_per_round": 3}},
    {"privacy": {"client": {"noise_multiplier": 1.0, "clip_norm": 0.1, "delta": 1e-5}},  # client-level DP needs it
     "federation": {"sampling": "poisson", "clients_per_round": 3}},
])
def test_secaggplus_refuses_poisson_sampling_at_load(tiny_bert_dir, sections):
    """A Poisson round may hold 1 client (SecAgg+ cannot run) or more than clients_per_round (past the checked
    modulus), and a resumed run redraws the same round: refused at load, not at round k."""
    fed = {"rounds": 2, "engine": "flower", "save_client_updates": False, "flower": SECAGG, **sections["federation"]}
    with pytest.raises(ConfigError, match=r"^federation.sampling: 'poisson' with federation.flower.secure_aggregation"
                                          r" = 'secaggplus' is refused.*use sampling = 'fixed'") as err:
        _config(tiny_bert_dir, **{**sections, "federation": fed})
    assert "\n" not in str(err.value)
    _config(tiny_bert_dir, federation={**fed, "sampling": "fixed"})  # fixed-size rounds load


def test_secaggplus_weights_follow_the_pipeline(tiny_bert_dir):
    from trustfl.federation.flower.secaggplus import resolved_max_weight, sum_weight

    unweighted = _config(tiny_bert_dir)
    weighted = _config(tiny_bert_dir, server={"aggregator_options": {"weighted": True}})
    p1, p2 = unweighted.server.build_pipeline(), weighted.server.build_pipeline()
    assert (sum_weight(p1, 37), sum_weight(p2, 37)) == (1, 37)
    assert resolved_max_weight(unweighted.federation.flower, p1) == 1.0
    assert resolved_max_weight(weighted.federation.flower, p2) == 1000.0
    assert resolved_max_weight(_config(tiny_bert_dir, flower={"max_weight": 64.0}).federation.flower, p2) == 64.0


# ---------------------------------------------------------------------- a simulated run (Ray)
@pytest.fixture(scope="module", autouse=True)
def _stop_simulation():
    yield
    from trustfl.federation.flower.engine import shutdown_simulations

    shutdown_simulations()


def _reference_mean(config: RunConfig, round: int, client_ids, global_vector: torch.Tensor,
                    num_labels: int) -> torch.Tensor:
    """Plain FedAvg (unweighted) of the clients trained in this process from ``global_vector``."""
    from trustfl.federation.flower.codec import TrainTask
    from trustfl.federation.flower.node import node_clients

    text = json.dumps(config.to_dict(), sort_keys=True)
    deltas = []
    for cid in client_ids:
        node = node_clients(text, {"partition-id": cid, "torch-threads": 1}, num_labels)
        result, _ = node.train(TrainTask(round=round, client_id=cid, config_json=text, num_labels=num_labels,
                                         global_vector=global_vector.clone(), privacy_state=None))
        deltas.append(result.delta.double())
    return torch.stack(deltas).mean(0)


@pytest.mark.integration  # starts Ray (about 30 s on 2 idle cores)
def test_secaggplus_simulation_equals_fedavg_within_quantization(tiny_bert_dir, tmp_path):
    cfg = _config(tiny_bert_dir)
    fed = Federation(cfg, out_dir=tmp_path / "run", progress=False)
    summary = fed.run()
    assert summary.rounds_completed == 2
    run = RunDir(tmp_path / "run")
    run.verify()
    settings = cfg.federation.flower
    bound = 2 * settings.clipping_range / settings.quantization_range  # 3.8e-6 per entry
    for m in run.metrics():
        r = m["round"]
        assert m["engine"]["replied"] == [0, 1, 2, 3] and m["engine"]["dropped"] == {}
        secure = m["engine"]["secure_aggregation"]
        assert secure["protocol"] == "secaggplus" and secure["weights"] == [1, 1, 1, 1] and secure["max_weight"] == 1.0
        # the run directory holds no individual update, norm or client metric
        assert run.client_ids(r) == [] and "update_norms" not in m and "client_metrics" not in m
        step = (run.global_vector(r).double() - run.global_vector(r - 1).double())
        plain = _reference_mean(cfg, r, [0, 1, 2, 3], run.global_vector(r - 1), num_labels=2)
        err = (step - plain).abs().max().item()
        assert err < bound + 1e-6, f"round {r}: |SecAgg+ - FedAvg| = {err:.3g} exceeds 2c/Q = {bound:.3g}"
        assert plain.abs().max().item() > 100 * bound  # the clients trained: the comparison is not vacuous
    assert not list((tmp_path / "run").rglob("*update*"))


@pytest.mark.integration  # Ray (shared with the test above)
def test_secaggplus_simulation_keeps_sample_level_epsilon(tiny_bert_dir, tmp_path):
    """Sample-level DP on the nodes under SecAgg+: each client's accountant travels beside its masked
    update, so ε per client equals the local engine's (no SecAgg+) for the same config and seed."""
    dp = {"sample": {"noise_multiplier": 1.0, "delta": 1e-5, "max_grad_norm": 0.5}}
    secure = Federation(_config(tiny_bert_dir, privacy=dp), out_dir=tmp_path / "secure", progress=False)
    secure.run()
    local_cfg = _config(tiny_bert_dir, engine="local", flower={"secure_aggregation": "none"}, privacy=dp)
    Federation(local_cfg, out_dir=tmp_path / "local", progress=False).run()
    a, b = RunDir(tmp_path / "local").metrics(), RunDir(tmp_path / "secure").metrics()
    for ma, mb in zip(a, b):
        assert mb["engine"]["replied"] == [0, 1, 2, 3]
        eps = mb["privacy_sample"]["epsilon_per_client"]
        assert eps == pytest.approx(ma["privacy_sample"]["epsilon_per_client"]) and min(eps.values()) > 0
    assert b[1]["privacy_sample"]["epsilon_max"] > b[0]["privacy_sample"]["epsilon_max"]  # accumulated over rounds


# ---------------------------------------------------------------------- the node's refusals (no Ray, no grid)
def _fit_message(cfg: RunConfig, size: int, *, cid: int = 0, fill: float = 0.0):
    """SecAgg+'s training message as the node's train handler receives it (a legacy FitIns)."""
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.compat.common.recorddict_compat import fitins_to_recorddict

    task = {"round": 1, "client_id": cid, "config": json.dumps(cfg.to_dict(), sort_keys=True), "num_labels": 2,
            "size": size, "privacy_state": ""}
    content = fitins_to_recorddict(FitIns(ndarrays_to_parameters([torch.full((size,), fill).numpy()]), task), True)
    return _received(content)


def _received(content):
    """A train message as a node receives it (metadata set by the SuperLink)."""
    import time

    from flwr.app.message.message import make_message

    meta = flwr.app.Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=7, reply_to_message_id="",
                             group_id="1", created_at=time.time(), ttl=600.0, message_type="train")
    return make_message(meta, content)


def _node_context(cfg: RunConfig, tmp_path, **extra):
    from trustfl.federation.clients import split_data

    train, _ = split_data(cfg).splits[0]
    path = tmp_path / "client_0.jsonl"
    train.select_columns(["text", "label"]).to_json(str(path), lines=True)
    return flwr.app.Context(run_id=1, node_id=7, node_config={"client-id": 0, "data-file": str(path), **extra},
                            state=flwr.app.RecordDict(), run_config={})


def _size(cfg: RunConfig) -> int:
    from trustfl.federation.setup import build_model_side

    return build_model_side(cfg, num_labels=2, privacy=None).layout.size


@pytest.mark.parametrize("flower, sections, fill, match", [
    ({"clipping_range": 1e-12}, {}, 0.0, "exceeds federation.flower.clipping_range"),
    ({"max_weight": 2.0}, {"server": {"aggregator_options": {"weighted": True}}}, 0.0,
     "exceeds federation.flower.max_weight"),
    ({}, {}, float("nan"), "NaN/Inf"),  # a NaN global adapter trains into a NaN update
])
def test_node_refuses_what_secaggplus_would_change_silently(tiny_bert_dir, tmp_path, flower, sections, fill, match):
    from trustfl.federation.flower.client_app import handle_train, masked_by_secaggplus_mod

    cfg = _config(tiny_bert_dir, flower=flower, **sections)
    with pytest.raises(ValueError, match=match), masked_by_secaggplus_mod():  # as secaggplus_mod calls it
        handle_train(_fit_message(cfg, _size(cfg), fill=fill), _node_context(cfg, tmp_path))


def test_node_secaggplus_reply_is_a_fitres_with_its_weight(tiny_bert_dir, tmp_path):
    from flwr.compat.common.recorddict_compat import recorddict_to_fitres

    from trustfl.federation.flower.client_app import handle_train, masked_by_secaggplus_mod

    cfg = _config(tiny_bert_dir)
    with masked_by_secaggplus_mod():  # what secaggplus_mod's masking stage hands the handler
        reply = handle_train(_fit_message(cfg, _size(cfg)), _node_context(cfg, tmp_path))
    fitres = recorddict_to_fitres(reply.content, keep_input=True)
    assert fitres.num_examples == 1 and fitres.metrics["client_id"] == 0  # unweighted: w = 1
    (delta,) = flwr.common.parameters_to_ndarrays(fitres.parameters)
    assert delta.dtype.name == "float64" and torch.from_numpy(delta).abs().max() > 0
    with pytest.raises(ConfigError, match="node and server disagree on the model"), masked_by_secaggplus_mod():
        handle_train(_fit_message(cfg, 5), _node_context(cfg, tmp_path))  # a wrong-sized global


@pytest.mark.parametrize("node", [{}, {"secure-aggregation": "secaggplus"}])
def test_node_refuses_a_legacy_fitins_that_secaggplus_mod_does_not_mask(tiny_bert_dir, tmp_path, node):
    """A FitIns without SecAgg+'s configs skips secaggplus_mod: its FitRes would carry the update in plaintext."""
    from trustfl.federation.flower.client_app import app, handle_train, secaggplus_when_asked

    cfg = _config(tiny_bert_dir)
    message = _fit_message(cfg, _size(cfg))
    assert "secaggplus_configs" not in message.content.config_records
    with pytest.raises(ValueError, match="secaggplus_mod did not run.*plaintext; refused") as err:
        secaggplus_when_asked(message, _node_context(cfg, tmp_path, **node), handle_train)  # the app's train chain
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="secaggplus_mod did not run"):
        handle_train(message, _node_context(cfg, tmp_path, **node))
    with pytest.raises(ValueError, match="secaggplus_mod did not run"):  # the ClientApp as Flower calls it (mods
        app(message, _node_context(cfg, tmp_path, **node))  # included); Flower turns this into an error reply


def test_node_refuses_an_unknown_secure_aggregation_setting(tiny_bert_dir, tmp_path):
    from trustfl.federation.flower.client_app import handle_train

    cfg = _config(tiny_bert_dir)
    context = _node_context(cfg, tmp_path, **{"secure-aggregation": "secagg"})
    with pytest.raises(ValueError, match=r"'secure-aggregation' must be one of \['none', 'secaggplus'\], got 'secagg'"):
        handle_train(_fit_message(cfg, _size(cfg)), context)


def test_node_that_requires_secaggplus_refuses_plaintext(tiny_bert_dir, tmp_path):
    from trustfl.federation.flower.client_app import handle_train
    from trustfl.federation.flower.codec import encode_task

    cfg = _config(tiny_bert_dir)
    content = encode_task(round=1, client_id=0, config_json=json.dumps(cfg.to_dict()), num_labels=2,
                          global_vector=torch.zeros(4), privacy_state=None)
    message = _received(content)
    with pytest.raises(ValueError, match="requires secure-aggregation = 'secaggplus'; it does not send its update"):
        handle_train(message, _node_context(cfg, tmp_path, **{"secure-aggregation": "secaggplus"}))


def test_cli_refuses_a_secaggplus_config_in_one_line(tiny_bert_dir, tmp_path, capsys):
    from trustfl.cli import main

    cfg = tmp_path / "secagg.toml"
    cfg.write_text(f"""
[model]
name = "{tiny_bert_dir}"
[data]
name = "sms_spam"
max_records = 60
[partition]
num_clients = 3
[server]
aggregator = "median"
[federation]
engine = "flower"
save_client_updates = false
[federation.flower]
secure_aggregation = "secaggplus"
""")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trustfl run: error: federation.flower.secure_aggregation = 'secaggplus': the pipeline")
    assert "needs individual updates" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_record_names_are_flowers():
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    from trustfl.federation.flower import client_app, secaggplus

    assert client_app.SECAGGPLUS_CONFIGS == secaggplus.CONFIGS == RECORD_KEY_CONFIGS
