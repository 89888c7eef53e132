"""Federated unlearning (defenses/unlearning): retrain is exact, every method writes a linked, verifiable,
resumable run that never trains the forgotten client, the maths against slow references, clear errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

from trustfl.config import RunConfig
from trustfl.defenses.unlearning import (ForgetFederation, UnlearningError, UnlearnSettings, calibrate, fedavg,
                                         make_plan, project_l2_ball, round_contribution, unlearn)
from trustfl.federation import Federation
from trustfl.rundir import RunDir, sha256_file

from tiny_runs import tiny_run

FORGET = 1  # sampled in rounds 2, 3, 4 (5 clients, 2 per round, seed 0); client 2 only in round 2


def _config_dict(model_dir: str, **over) -> dict:
    attack = {"attackers": [FORGET], "data": {"name": "backdoor", "trigger": "cf", "target": 1, "poison_fraction": 0.5}}
    return tiny_run(model_dir, name="u", replace={"attack": attack},
                    **{"data__holdout_fraction": 0.2, "partition__num_clients": 5, "federation__rounds": 4,
                       "federation__clients_per_round": 2, **over})


@pytest.fixture(scope="module")
def parent(tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("unlearn") / "parent"
    Federation(RunConfig.from_dict(_config_dict(tiny_bert_dir)), out_dir=out, progress=False).run()
    return out


def _own_run(path, parent, clients_per_round, *, updates: bool, **over):
    """A run recorded through RunWriter (no federation): the parent's config, given participants."""
    from trustfl.rundir import RunWriter

    p = RunDir(parent)
    config = p.config
    for key, value in over.items():
        section, field = key.split("__")
        config[section][field] = value
    w = RunWriter.create(path, config=config, layout=p.layout, seeds={"seed": 0})
    w.write_initial(p.global_vector(0))
    for r, ids in enumerate(clients_per_round, start=1):
        ups = {c: (p.global_vector(r) - p.global_vector(r - 1), 10) for c in ids} if updates else None
        w.write_round(r, global_vector=p.global_vector(r), client_updates=ups, metrics={"clients": ids})
    return path


@pytest.fixture(scope="module")
def no_updates_run(parent, tmp_path_factory):
    return _own_run(tmp_path_factory.mktemp("unlearn") / "no_updates", parent, [[3, 4], [1, 2]], updates=False,
                    federation__save_client_updates=False)


OPTS = UnlearnSettings(recovery_rounds=2, calibration_ratio=0.5, interval=1, pga_epochs=1, early_stop_accuracy=0.0)


@pytest.fixture(scope="module")
def methods(parent):
    return {m: unlearn(parent, [FORGET], m, out_dir=parent.parent / m, progress=False, settings=OPTS)
            for m in ("federaser", "pga", "rollback")}


@pytest.fixture(scope="module")
def retrained(parent, tmp_path_factory):
    return unlearn(parent, [FORGET], "retrain", out_dir=parent.parent / "retrain", progress=False)


# ---------------------------------------------------------------- retrain is exact
def test_retrain_equals_a_fresh_run_without_the_client_bit_for_bit(parent, retrained, tiny_bert_dir, tmp_path):
    before = sha256_file(parent / "manifest.json")
    fresh = tmp_path / "fresh"
    ForgetFederation(RunConfig.from_dict(_config_dict(tiny_bert_dir)), forget=[FORGET], out_dir=fresh,
                     progress=False).run()
    a, b, p = RunDir(retrained.run_dir), RunDir(fresh), RunDir(parent)
    assert retrained.first_round == 2 and a.completed_rounds == b.completed_rounds == 4
    for r in range(5):
        assert torch.equal(a.global_vector(r), b.global_vector(r)), f"round {r}"
    assert torch.equal(a.global_vector(1), p.global_vector(1))  # round 1 reused from the parent
    assert not torch.equal(a.global_vector(4), p.global_vector(4))
    assert all(FORGET not in m["clients"] for m in a.metrics())
    assert [m["clients"] for m in a.metrics()] == [m["clients"] for m in b.metrics()]
    a.verify()
    assert sha256_file(parent / "manifest.json") == before  # the parent is never modified


def test_linked_manifest_names_parent_method_and_clients(parent, retrained):
    link = RunDir(retrained.run_dir).manifest["extra"]["unlearning"]
    assert link["parent"] == str(parent.resolve()) and link["method"] == "retrain"
    assert link["parent_manifest_sha256"] == sha256_file(parent / "manifest.json")
    assert link["forgotten"] == [FORGET] and link["first_round"] == 2 and link["wall_seconds"] > 0
    # client compute: the samples the remaining clients processed in rounds 2..4
    expected = sum(cm["samples_seen"] for m in RunDir(retrained.run_dir).metrics()[1:]
                   for cm in m["client_metrics"].values())
    assert retrained.client_samples == int(expected) > 0


# ---------------------------------------------------------------- approximate methods
@pytest.mark.parametrize("method,rounds", [("federaser", 4), ("pga", 4), ("rollback", 4)])
def test_approximate_methods_write_a_linked_verifiable_run(parent, methods, method, rounds):
    res = methods[method]
    run = RunDir(res.run_dir)
    run.verify()
    assert run.completed_rounds == rounds and run.config["federation"]["rounds"] == rounds
    assert torch.equal(run.global_vector(1), RunDir(parent).global_vector(1))
    metrics = run.metrics()
    assert all(FORGET not in m["clients"] for m in metrics)
    assert metrics[1]["unlearning"]["method"] == method and "eval" in metrics[-1]
    assert all(torch.isfinite(run.global_vector(r)).all() for r in range(rounds + 1))
    assert 0 < res.client_samples
    if method != "federaser":  # the step round stores no update; recovery rounds do
        assert run.client_ids(2) == [] and run.client_ids(3)
    else:  # calibrated updates have the length of the stored ones
        p = RunDir(parent)
        for r in (2, 3, 4):
            for c in run.client_ids(r):
                stored = float(p.client_update(r, c)[0].norm())
                assert float(run.client_update(r, c)[0].norm()) == pytest.approx(stored, rel=1e-4)


def test_rollback_step_subtracts_exactly_the_clients_fedavg_share(parent, methods):
    p = RunDir(parent)
    expected = p.global_vector(4).double()
    for r in (2, 3, 4):  # slow reference: recompute each round's FedAvg with and without the client
        ups = {int(c): p.client_update(r, c) for c in p.client_ids(r)}

        def avg(ids):
            w = torch.tensor([float(ups[c][1]) for c in ids], dtype=torch.float64)
            return sum(w[i] / w.sum() * ups[c][0].double() for i, c in enumerate(ids)) if ids else 0.0
        expected -= avg(sorted(ups)) - avg(sorted(c for c in ups if c != FORGET))
    got = RunDir(methods["rollback"].run_dir).global_vector(2).double()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_pga_stays_inside_the_ball_around_the_reference(methods):
    info = RunDir(methods["pga"].run_dir).metrics()[1]["unlearning"]
    assert info["ascent_steps"] > 0 and info["client_samples"] > 0
    assert info["distance_to_reference"] <= info["radius"] * (1 + 1e-5)


def test_an_interrupted_unlearning_resumes_to_the_same_run(parent, methods, tmp_path, monkeypatch):
    opts, whole = OPTS, methods["pga"]
    original = ForgetFederation.sample_clients

    def killed(self, round):
        if round == 4:
            raise KeyboardInterrupt
        return original(self, round)

    monkeypatch.setattr(ForgetFederation, "sample_clients", killed)
    with pytest.raises(KeyboardInterrupt):
        unlearn(parent, [FORGET], "pga", out_dir=tmp_path / "cut", settings=opts, progress=False)
    assert RunDir(tmp_path / "cut").completed_rounds == 3
    monkeypatch.setattr(ForgetFederation, "sample_clients", original)
    resumed = unlearn(parent, [FORGET], "pga", out_dir=tmp_path / "cut", settings=opts, progress=False, resume=True)
    assert torch.equal(RunDir(resumed.run_dir).global_vector(4), RunDir(whole.run_dir).global_vector(4))
    with pytest.raises(UnlearningError, match="not this unlearning"):
        unlearn(parent, [FORGET], "rollback", out_dir=tmp_path / "cut", progress=False, resume=True)


# ---------------------------------------------------------------- errors
def test_a_client_that_never_took_part_is_a_clear_error(parent, tmp_path):
    out = _own_run(tmp_path / "p", parent, [[3, 4]], updates=True)
    with pytest.raises(UnlearningError, match=r"client\(s\) \[0\] never took part"):
        unlearn(out, [0], "retrain", progress=False)
    assert not (tmp_path / "p-unlearn-retrain-c0").exists()


@pytest.mark.parametrize("clients,match", [([7], "not a client id"), ([-1], "not a client id"),
                                           ([True], "not a client id"), ([], "no client to forget"),
                                           ([0, 1, 2, 3, 4], "cannot forget all")])
def test_bad_client_ids(parent, clients, match):
    with pytest.raises(UnlearningError, match=match):
        make_plan(parent, clients, "rollback")


def test_unknown_method_and_bad_options(parent):
    with pytest.raises(UnlearningError, match="valid methods: retrain, federaser, pga, rollback"):
        make_plan(parent, [FORGET], "magic")
    for bad in ({"pga_lr": float("nan")}, {"calibration_ratio": 0.0}, {"recovery_rounds": -1},
                {"radius_fraction": float("inf")}, {"interval": 1.5}, {"early_stop_accuracy": 2.0}):
        with pytest.raises(UnlearningError, match=f"unlearning.{next(iter(bad))}"):
            UnlearnSettings(**bad)
    with pytest.raises(UnlearningError, match="valid options"):
        UnlearnSettings.from_dict({"recovery_round": 1})


def test_run_without_updates_refuses_the_methods_that_need_them(no_updates_run):
    for method in ("federaser", "pga", "rollback"):
        with pytest.raises(UnlearningError, match=f"without client updates.*{method}.*--method retrain"):
            make_plan(no_updates_run, [FORGET], method)
    assert make_plan(no_updates_run, [FORGET], "retrain").first_round == 2


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_update_names_round_and_client(parent, tmp_path, damage):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(parent, copy)
    f = copy / "updates" / "round_0003" / "client_0000.safetensors"
    assert f.is_file()
    if damage == "missing":
        f.unlink()
    else:
        data = bytearray(f.read_bytes())
        data[-3] ^= 0xFF
        f.write_bytes(bytes(data))
    with pytest.raises(UnlearningError, match=r"round 3, client 0: the stored update is missing or corrupt.*retrain"):
        make_plan(copy, [FORGET], "rollback")
    with pytest.raises(UnlearningError, match=r"round 3, client 0"):
        unlearn(copy, [FORGET], "federaser", progress=False, settings=UnlearnSettings(interval=1))
    assert not (tmp_path / "copy-unlearn-federaser-c1").exists()  # nothing written


def test_inflated_client_count_is_removed_with_the_same_weight_it_had():
    ups = _updates([[1.0, 0.0], [0.0, 1.0]], [10**9, 1])  # client 0 claimed a billion records
    got = round_contribution(ups, [0])
    full = fedavg(ups, [0, 1])
    torch.testing.assert_close(got, full - torch.tensor([0.0, 1.0]))


def test_output_inside_the_parent_and_unlearning_an_unlearning_run_are_refused(parent, retrained):
    with pytest.raises(UnlearningError, match="never modified"):
        unlearn(parent, [FORGET], "rollback", out_dir=parent / "sub", progress=False)
    with pytest.raises(UnlearningError, match="is itself an unlearning run"):
        make_plan(retrained.run_dir, [0], "retrain")


def test_dp_run_refuses_approximate_methods(tiny_bert_dir, tmp_path):
    from trustfl.rundir import RunWriter

    cfg = _config_dict(tiny_bert_dir)
    cfg["privacy"] = {"sample": {"target_epsilon": 4.0, "delta": 1e-5, "max_grad_norm": 0.5}}
    w = RunWriter.create(tmp_path / "dp", config=cfg, layout={"names": ["w"], "shapes": [[2]]}, seeds={"seed": 0})
    w.write_initial(torch.zeros(2))
    w.write_round(1, global_vector=torch.ones(2), client_updates={1: (torch.ones(2), 3)}, metrics={"clients": [1]})
    with pytest.raises(UnlearningError, match="differentially private.*retrain"):
        make_plan(tmp_path / "dp", [1], "pga")


# ---------------------------------------------------------------- maths against slow references
def _updates(rows, counts):
    return {i: (torch.tensor(r, dtype=torch.float32), n) for i, (r, n) in enumerate(zip(rows, counts))}


@hsettings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3), st.integers(1, 50)),
                min_size=2, max_size=6), st.data())
def test_round_contribution_matches_loop_reference(rows, data):
    ups = _updates([r for r, _ in rows], [n for _, n in rows])
    forget = data.draw(st.sets(st.sampled_from(sorted(ups)), min_size=1, max_size=len(ups) - 1))
    got = round_contribution(ups, forget, server_lr=0.5)

    def slow_avg(ids):
        total = sum(ups[i][1] for i in ids)
        return [sum(ups[i][1] / total * float(ups[i][0][k]) for i in ids) for k in range(3)]

    full, rest = slow_avg(sorted(ups)), slow_avg([i for i in ups if i not in forget])
    torch.testing.assert_close(got.double(), torch.tensor([0.5 * (a - b) for a, b in zip(full, rest)],
                                                          dtype=torch.float64), atol=1e-3, rtol=1e-4)
    assert torch.equal(fedavg(ups, sorted(ups), weighted=False), torch.stack([u for u, _ in ups.values()]).double()
                       .mean(0).float()) or torch.allclose(fedavg(ups, sorted(ups), weighted=False),
                                                           torch.stack([u for u, _ in ups.values()]).mean(0), atol=1e-3)


@hsettings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e30, 1e30), min_size=1, max_size=8), st.floats(0, 1e30))
def test_calibrate_keeps_direction_and_takes_the_stored_norm(values, norm):
    new = torch.tensor(values, dtype=torch.float32)
    out = calibrate(new, norm)
    assert torch.isfinite(out).all()
    if float(new.double().norm()) == 0:
        assert torch.equal(out, torch.zeros_like(new))
    elif norm > 0 and float(out.double().norm()) > 0:
        assert math.isclose(float(out.double().norm()), norm, rel_tol=1e-5)
        assert float(out.double() @ new.double()) / float(out.double().norm() * new.double().norm()) > 0.999


def test_calibrate_of_float32_max_and_nan():
    big = torch.full((4,), torch.finfo(torch.float32).max)
    assert torch.isfinite(calibrate(big, 2.0)).all() and math.isclose(float(calibrate(big, 2.0).norm()), 2.0,
                                                                       rel_tol=1e-5)
    with pytest.raises(ValueError, match="NaN/Inf"):  # a diverged calibration is an error, never a silent zero
        calibrate(torch.tensor([float("nan"), 1.0]), 1.0)


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4), st.lists(st.floats(-1e6, 1e6), min_size=4,
                                                                          max_size=4), st.floats(0, 1e6))
def test_projection_lands_in_the_ball_and_is_idempotent(w, c, radius):
    w, c = torch.tensor(w, dtype=torch.float64), torch.tensor(c, dtype=torch.float64)
    p = project_l2_ball(w, c, radius)
    assert float((p - c).norm()) <= radius * (1 + 1e-9) + 1e-6
    torch.testing.assert_close(project_l2_ball(p, c, radius), p)
    if float((w - c).norm()) <= radius:
        assert torch.equal(p, w)
    with pytest.raises(ValueError, match="radius"):
        project_l2_ball(w, c, -1.0)


def test_empty_and_one_element_inputs():
    assert fedavg({}, []) is None
    one = _updates([[1.0, 2.0]], [0])
    assert torch.equal(fedavg(one, [0]), torch.tensor([1.0, 2.0]))  # zero counts: equal weights
    torch.testing.assert_close(round_contribution(one, [0]), torch.tensor([1.0, 2.0]))  # alone: all of it
    with pytest.raises(ValueError, match="no stored update"):
        round_contribution({}, [0])


# ---------------------------------------------------------------- CLI
def test_cli_unlearn_and_its_errors(parent, tmp_path, capsys):
    from trustfl.cli import main

    assert main(["unlearn", str(parent), "--client", "9", "--method", "pga", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trustfl unlearn: error:") and "not a client id" in err[0]
    assert main(["unlearn", str(tmp_path), "--client", "1", "--method", "pga", "-q"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["unlearn", str(parent), "--client", "1", "--method", "rollback", "--set", "recovery_round=1",
                 "-q"]) == 2
    assert "valid options" in capsys.readouterr().err
    out = tmp_path / "cli_rb"
    assert main(["unlearn", str(parent), "--client", "1", "--method", "rollback", "--out", str(out), "-q",
                 "--set", "recovery_rounds=0"]) == 0
    assert RunDir(out).manifest["extra"]["unlearning"]["method"] == "rollback"
    assert main(["unlearn", str(parent), "--client", "1", "--method", "rollback", "--out", str(out), "-q"]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["unlearn", str(parent), "--client", "x", "--method", "pga"])


# ---------------------------------------------------------------- verification and the audit section
def test_audit_section_verifies_against_retrain(parent, retrained, methods):
    from trustfl.audits.report import AuditSettings
    from trustfl.audits.unlearning import audit, verify_unlearning

    res = methods["rollback"]
    section = audit(RunDir(res.run_dir), AuditSettings(progress=False, options={"bootstrap": 20, "mia_records": 60}))
    assert section.verdict.startswith("rollback: ")
    rows = {r["name"]: r for r in section.data["rows"]}
    assert set(rows) == {"original", "rollback", "retrain"}
    # the verdict rule recomputed from the rows (ASR <= +5 pt, accuracy >= -2 pt, MIA AUC in retrain's CI, >= 5x)
    rb, rt = rows["rollback"], rows["retrain"]
    meets = (100 * (rb["asr"] - rt["asr"]) <= 5 and 100 * (rb["accuracy"] - rt["accuracy"]) >= -2
             and rt["mia_auc_ci"][0] <= rb["mia_auc"] <= rt["mia_auc_ci"][1] and rb["compute_ratio"] >= 5)
    assert section.status == ("pass" if meets else "warn") and rb["meets_goal"] is meets
    assert rows["retrain"]["l2_to_retrain"] == 0.0 and rows["retrain"]["compute_ratio"] == 1.0
    assert rows["rollback"]["compute_ratio"] == pytest.approx(retrained.client_samples / res.client_samples)
    assert all(rows[n]["asr"] is not None for n in rows)
    _check_mia_auc_against_a_slow_reference(parent, {n: RunDir(rows[n]["run_dir"]) for n in rows}, rows)
    assert "| rollback |" in section.data["table"]
    # L2 and cosine distance against an independent computation
    g0 = RunDir(parent).global_vector(0).double()
    a, b = RunDir(res.run_dir).global_vector(4).double(), RunDir(retrained.run_dir).global_vector(4).double()
    assert rows["rollback"]["l2_to_retrain"] == pytest.approx(float((a - b).norm()), rel=1e-5)
    cos = float(torch.nn.functional.cosine_similarity(a - g0, b - g0, dim=0))
    assert rows["rollback"]["cosine_to_retrain"] == pytest.approx(1 - cos, abs=1e-5)
    json.dumps(section.data)
    with pytest.raises(ValueError, match="not an unlearning run of"):
        verify_unlearning(RunDir(retrained.run_dir), {"x": RunDir(res.run_dir)})


def _check_mia_auc_against_a_slow_reference(parent, runs, rows):
    """Each run's LOSS AUC recomputed record by record (own forward pass and cross-entropy, sklearn's AUC)."""
    from sklearn.metrics import roc_auc_score

    from trustfl.audits.unlearning.rebuild import rebuild
    from trustfl.audits.unlearning.verify import _membership_sets

    rebuilt = rebuild(RunDir(parent))
    cfg = rebuilt.config
    members, nonmembers, _ = _membership_sets(rebuilt, [FORGET], 60, int(cfg.seed))
    tok = rebuilt.fm.tokenizer
    for name, run in runs.items():
        rebuilt.layout.load_into(rebuilt.model, run.global_vector(run.completed_rounds))
        rebuilt.model.eval()
        losses = []
        with torch.no_grad():
            for record in [*members, *nonmembers]:
                enc = tok(record["text"], truncation=True, max_length=cfg.model.max_length, return_tensors="pt")
                logits = rebuilt.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
                losses.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor([record["label"]]))))
        truth = [1] * len(members) + [0] * len(nonmembers)
        assert rows[name]["mia_auc"] == pytest.approx(roc_auc_score(truth, [-x for x in losses]), abs=1e-3), name


def test_audit_section_on_other_runs(parent, retrained, tmp_path):
    from trustfl.audits.report import AuditSettings
    from trustfl.audits.unlearning import audit

    plain = audit(RunDir(parent), AuditSettings(progress=False))
    assert plain.status == "unavailable" and "not an unlearning run" in plain.verdict
    own = audit(RunDir(retrained.run_dir), AuditSettings(progress=False, options={"bootstrap": 10, "mia_records": 60}))
    assert own.status == "pass" and own.verdict.startswith("retrain (exact baseline)")


def test_example_config_loads_and_describes_the_must_show_setup():
    from pathlib import Path

    from trustfl.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "examples" / "unlearning.toml")
    assert cfg.model.name == "minilm" and cfg.data.name in ("sms_spam", "trec")
    assert cfg.partition.num_clients == 10 and cfg.attack.attackers == [3] and cfg.attack.data["name"] == "backdoor"
    assert cfg.federation.save_client_updates
