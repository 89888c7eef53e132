"""Federated unlearning, review fixes: data steps without the forgotten clients (retrain exact under [dedup]),
subtraction refused on non-FedAvg pipelines, participants = the aggregated clients, recorded weights, rebuilt
records checked against the manifest, the MIA criterion of the verdict, no global RNG change, NaN calibration."""

from __future__ import annotations

import json

import pytest
import torch

from trustfl.config import RunConfig
from trustfl.defenses.unlearning import (ForgetFederation, UnlearningError, UnlearnSettings, calibrate, make_plan,
                                         projected_gradient_ascent, unlearn)
from trustfl.federation import Federation
from trustfl.rundir import RunDir, RunWriter

from tiny_runs import tiny_run

FORGET, OTHER = 1, 3  # client 1 trains in rounds 2-4, client 3 in round 1 (5 clients, 2 per round, seed 0)


def _dedup_config(model_dir: str, data_file: str) -> dict:
    return tiny_run(model_dir, name="ud", **{"data__name": data_file, "data__max_records": None,
                                             "data__holdout_fraction": 0.2, "partition__num_clients": 5,
                                             "federation__rounds": 4, "federation__clients_per_round": 2,
                                             "dedup__enabled": True, "dedup__methods": ["exact"]})


@pytest.fixture(scope="module")
def planted(tiny_bert_dir, tmp_path_factory):
    """A JSONL corpus in which a record of client 3 is an exact copy of one of client 1's (same partition)."""
    from trustfl.federation.clients import split_data

    folder = tmp_path_factory.mktemp("unlearn_dedup")
    base = split_data(RunConfig.from_dict(tiny_run(tiny_bert_dir, **{"partition__num_clients": 5})))
    names = base.dataset.features["label"].names
    rows = [{"text": t, "label": names[y]} for t, y in zip(base.dataset["text"], base.dataset["label"])]
    path = folder / "corpus.jsonl"

    def write() -> None:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    write()
    cfg = RunConfig.from_dict(_dedup_config(tiny_bert_dir, str(path)))
    before = split_data(cfg).splits
    src, dst = int(before[FORGET][0]["row_id"][0]), int(before[OTHER][0]["row_id"][0])
    rows[dst]["text"] = rows[src]["text"]
    write()
    after = split_data(cfg).splits
    for c in before:  # the partition does not depend on the texts
        assert after[c][0]["row_id"] == before[c][0]["row_id"]
    parent = folder / "parent"
    Federation(cfg, out_dir=parent, progress=False).run()
    return {"parent": parent, "path": path, "dst": dst, "cfg": cfg}


def test_retrain_with_dedup_ignores_the_forgotten_clients_records(planted, tiny_bert_dir, tmp_path):
    from trustfl.defenses.dedup.wiring import deduplicate_clients
    from trustfl.federation.clients import split_data

    parent, dst = RunDir(planted["parent"]), planted["dst"]
    assert dst in parent.manifest["extra"]["dedup"]["dropped_rows"][str(OTHER)]  # client 1's copy was kept
    res = unlearn(planted["parent"], [FORGET], "retrain", out_dir=tmp_path / "retrain", progress=False)
    run = RunDir(res.run_dir)
    # independent reference: the dedup library over the remaining clients' records only
    raw = split_data(planted["cfg"]).splits
    kept, _ = deduplicate_clients({c: tr for c, (tr, _) in raw.items() if c != FORGET}, planted["cfg"])
    clients = run.manifest["extra"]["clients"]
    for c, tr in kept.items():
        assert clients[str(c)]["train_rows"] == list(tr["row_id"]), f"client {c}"
    assert dst in clients[str(OTHER)]["train_rows"]
    # client 3's records changed and it trained in round 1: nothing of the parent can be reused
    assert res.first_round == 1 and run.manifest["extra"]["unlearning"]["kept_rounds"] == 0
    assert not torch.equal(run.global_vector(1), parent.global_vector(1))
    assert run.manifest["fingerprints"][f"client_{OTHER}_train"] != parent.manifest["fingerprints"][
        f"client_{OTHER}_train"]
    assert run.manifest["fingerprints"][f"client_{FORGET}_train"] == parent.manifest["fingerprints"][
        f"client_{FORGET}_train"]  # the forgotten client keeps its records as the parent prepared them
    fresh = tmp_path / "fresh"
    ForgetFederation(planted["cfg"], forget=[FORGET], out_dir=fresh, progress=False).run()
    for r in range(5):
        assert torch.equal(run.global_vector(r), RunDir(fresh).global_vector(r)), f"round {r}"
    run.verify()


# ---------------------------------------------------------------- non-linear pipelines, participants, weights
def _write_run(path, *, pipeline, rounds, layout=None) -> RunDir:
    """A run recorded through RunWriter: ``rounds`` = [(sampled, {client: (update, n)}, metrics extra)]."""
    cfg = {"seed": 0, "partition": {"num_clients": 4}, "federation": {"save_client_updates": True},
           "server": {"server_lr": 1.0}}
    w = RunWriter.create(path, config=cfg, layout=layout or {"names": ["w"], "shapes": [[2]]}, seeds={"seed": 0},
                         extra={"pipeline_config": pipeline, "pipeline": repr(pipeline)})
    g = torch.zeros(2)
    w.write_initial(g)
    for r, (sampled, ups, extra) in enumerate(rounds, start=1):
        step = sum(u for u, _ in ups.values()) / len(ups)
        g = g + step
        w.write_round(r, global_vector=g, client_updates=ups, metrics={"clients": sampled, **extra})
    return RunDir(path)


FEDAVG = {"pre": [], "aggregator": {"class": "FedAvg", "weighted": True}, "post": []}
UPS = {0: (torch.tensor([1.0, 0.0]), 10), 1: (torch.tensor([0.0, 1.0]), 30)}


@pytest.mark.parametrize("pipeline", [
    {"pre": [], "aggregator": {"class": "Krum", "f": 0}, "post": []},
    {"pre": [], "aggregator": {"class": "TrimmedMean", "beta": 0.1}, "post": []},
    {"pre": [{"class": "NormClip", "max_norm": 1.0}], "aggregator": {"class": "FedAvg", "weighted": True}, "post": []},
    None])
@pytest.mark.parametrize("method", ["rollback", "pga"])
def test_subtracting_methods_refuse_a_pipeline_that_is_not_fedavg(tmp_path, pipeline, method):
    run = _write_run(tmp_path / "r", pipeline=pipeline, rounds=[([0, 1], UPS, {})])
    with pytest.raises(UnlearningError, match=f"method '{method}' subtracts FedAvg.*allow_nonlinear=true") as err:
        make_plan(run, [1], method)
    assert "\n" not in str(err.value)
    plan = make_plan(run, [1], method, UnlearnSettings(allow_nonlinear=True))  # the explicit approximation
    assert not plan.linear_aggregator and plan.link()["settings"]["allow_nonlinear"] is True
    assert make_plan(run, [1], "federaser").method == "federaser"  # aggregates with the run's own pipeline


def test_allow_nonlinear_is_validated_and_recorded_in_the_manifest(parent_run, tmp_path):
    with pytest.raises(UnlearningError, match="unlearning.allow_nonlinear"):
        UnlearnSettings(allow_nonlinear="yes")
    res = unlearn(parent_run, [1], "rollback", out_dir=tmp_path / "rb", progress=False,
                  settings=UnlearnSettings(recovery_rounds=0, allow_nonlinear=True))
    link = RunDir(res.run_dir).manifest["extra"]["unlearning"]
    assert link["settings"]["allow_nonlinear"] is True


def test_participants_are_the_aggregated_clients_not_the_sampled_ones(tmp_path):
    # round 1: clients 1, 2 sampled, only 2 replied (1 timed out on Flower: no stored update); round 2: 1 replied
    agg = {"aggregation": {"clients": {"2": {"accepted": True, "weight": 1.0}}, "stats": {}},
           "engine": {"name": "flower", "replied": [2], "dropped": {"1": "timeout"}}}
    replied_only = {"engine": {"name": "flower", "replied": [1, 3]}}
    run = _write_run(tmp_path / "r", pipeline=FEDAVG, rounds=[
        ([1, 2], {2: (torch.tensor([1.0, 1.0]), 5)}, agg),
        ([1, 3], {1: (torch.tensor([2.0, 0.0]), 5), 3: (torch.tensor([0.0, 2.0]), 5)}, replied_only)])
    plan = make_plan(run, [1], "rollback")
    assert plan.participants == {1: [2], 2: [1, 3]}
    assert plan.first_round == 2 and plan.rounds_with == [2] and sorted(plan.updates) == [2]


def test_rollback_uses_the_recorded_aggregation_weights(tmp_path):
    from trustfl.defenses.unlearning.methods import _rollback_step

    # the run's FedAvg gave client 0 weight 0.9 (not 10/40 from the stored counts)
    agg = {"aggregation": {"clients": {"0": {"accepted": True, "weight": 0.9}, "1": {"accepted": True, "weight": 0.1}},
                           "stats": {}}}
    run = _write_run(tmp_path / "r", pipeline=FEDAVG, rounds=[([0, 1], UPS, agg)])
    plan = make_plan(run, [0], "rollback")
    vector, _ = _rollback_step(plan, None)  # type: ignore[arg-type]
    full = 0.9 * UPS[0][0] + 0.1 * UPS[1][0]
    expected = run.global_vector(1) - (full - UPS[1][0])
    torch.testing.assert_close(vector, expected)


@pytest.fixture(scope="module")
def parent_run(tiny_bert_dir, tmp_path_factory):
    cfg = tiny_run(tiny_bert_dir, name="up", **{"partition__num_clients": 4, "federation__rounds": 2,
                                                "federation__clients_per_round": 2})
    out = tmp_path_factory.mktemp("unlearn_review") / "parent"
    Federation(RunConfig.from_dict(cfg), out_dir=out, progress=False).run()
    return out


# ---------------------------------------------------------------- rebuild checks the records and the layout
def _copy_with(parent, tmp_path, edit):
    import shutil

    from trustfl.audits.unlearning.rebuild import _rebuild

    copy = tmp_path / "copy"
    shutil.copytree(parent, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return lambda: _rebuild(RunDir(copy), progress=False)


def test_rebuild_refuses_client_records_that_differ_from_the_manifest(parent_run, tmp_path):
    def tamper(m):
        m["fingerprints"]["client_1_holdout"] = "0" * 64

    with pytest.raises(ValueError, match=r"client 1's holdout records .* do not match .*client_1_holdout"):
        _copy_with(parent_run, tmp_path, tamper)()


def test_rebuild_refuses_a_layout_with_other_shapes(parent_run, tmp_path):
    def reshape(m):
        m["layout"]["shapes"][0] = [s + 1 for s in m["layout"]["shapes"][0]]

    with pytest.raises(ValueError, match=r"adapter layout differs .*shapes"):
        _copy_with(parent_run, tmp_path, reshape)()


def test_rebuild_of_the_recorded_run_passes_its_checks(parent_run):
    from trustfl.audits.unlearning.rebuild import rebuild

    rebuilt = rebuild(RunDir(parent_run))
    assert rebuilt.fingerprints_match and rebuilt.warnings == []


# ---------------------------------------------------------------- the verdict's MIA criterion
def test_verdict_requires_the_mia_auc_inside_retrains_interval():
    from trustfl.audits.unlearning.verify import GOAL, MethodRow, _verdict

    ref = MethodRow(name="retrain", run_dir="r", accuracy=0.9, mia_auc=0.5, mia_auc_ci=(0.45, 0.55), compute_ratio=1.0)
    inside = MethodRow(name="m", run_dir="m", accuracy=0.9, mia_auc=0.54, compute_ratio=10.0)
    outside = MethodRow(name="m", run_dir="m", accuracy=0.9, mia_auc=0.58, compute_ratio=10.0)
    assert _verdict(inside, ref, False)[0] is True
    ok, text = _verdict(outside, ref, False)
    assert ok is False and "MIA AUC 0.580 outside retrain's interval [0.450, 0.550]" in text
    assert "mia_auc" in GOAL
    no_ci = MethodRow(name="retrain", run_dir="r", accuracy=0.9, mia_auc=0.5, mia_auc_ci=None, compute_ratio=1.0)
    assert _verdict(outside, no_ci, False)[0] is True  # no interval: informational only


# ---------------------------------------------------------------- RNG and NaN calibration
def test_pga_leaves_the_global_rng_as_it_was(parent_run):
    from trustfl.audits.unlearning.rebuild import rebuild

    rebuilt = rebuild(RunDir(parent_run))
    examples = rebuilt.trainer.attach_prefix(rebuilt.test_examples[:16])
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ref = RunDir(parent_run).global_vector(2)
    res = projected_gradient_ascent(rebuilt.trainer, examples, reference=ref, radius=1.0, lr=0.01, epochs=1,
                                    batch_size=8, stop_accuracy=0.0, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    again = projected_gradient_ascent(rebuilt.trainer, examples, reference=ref, radius=1.0, lr=0.01, epochs=1,
                                      batch_size=8, stop_accuracy=0.0, seed=0)
    assert res.steps == 2 and torch.equal(res.vector, again.vector)  # still seeded: the same ascent twice


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_calibrate_refuses_a_non_finite_calibration_update(bad):
    with pytest.raises(ValueError, match="calibration update has NaN/Inf"):
        calibrate(torch.tensor([bad, 1.0]), 1.0)
    with pytest.raises(ValueError, match="old_norm must be a finite number >= 0"):
        calibrate(torch.tensor([1.0, 1.0]), float("nan"))
    assert torch.equal(calibrate(torch.zeros(3), 2.0), torch.zeros(3))  # no direction and no divergence: zero
