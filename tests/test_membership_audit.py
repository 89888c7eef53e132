"""The privacy audit of a run directory (trustfl.audits.privacy) on tiny runs: members and non-members rebuilt and
checked against the manifest, attacks scored, results written and cached, canaries planted and audited, no
leakage invented, and every bad input one clear error."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from trustfl.audits import AuditSettings
from trustfl.audits.privacy import (PrivacyAuditError, PrivacyAuditSettings, canary_epsilon, membership_data,
                                    privacy_audit)
from trustfl.audits.privacy.records import recorded_canaries
from trustfl.audits.report.sections import privacy as privacy_section
from trustfl.cli import main
from trustfl.config import RunConfig
from trustfl.errors import ConfigError
from trustfl.federation import Federation
from trustfl.rundir import RunDir, RunDirError, RunWriter

from tiny_runs import federation_run as _config

FAST = dict(bootstrap=30, candidates=15, max_records=200, population=40)


@pytest.fixture(scope="module")
def canary_run(tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mia") / "run"
    cfg = _config(tiny_bert_dir, data__holdout_fraction=0.3, canaries__count=24, partition__scheme="iid",
                  partition__alpha=None, federation__rounds=1)
    Federation(cfg, out_dir=out, progress=False).run()
    return out


@pytest.fixture(scope="module")
def audited(canary_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("mia-copy") / "run"
    shutil.copytree(canary_run, run)
    return run, privacy_audit(run, PrivacyAuditSettings(**FAST))


# ------------------------------------------------------------------ canaries in the run
def test_canaries_are_planted_with_recorded_coins(canary_run):
    run = RunDir(canary_run)
    canaries = recorded_canaries(run)
    assert len(canaries) == 24 and 0 < sum(c["included"] for c in canaries) < 24
    assert len({c["text"] for c in canaries}) == 24 and all(c["text"].startswith("my secret code is") for c in canaries)
    clients = run.manifest["extra"]["clients"]
    planted = sorted(-1 - r for info in clients.values() for r in info["train_rows"] if r < 0)
    assert planted == [c["index"] for c in canaries if c["included"]]  # exactly the coins that came up "in"
    assert all(r >= 0 for info in clients.values() for r in info["holdout_rows"])  # never a non-member


def test_members_exclude_canaries_and_match_the_fingerprints(canary_run):
    data = membership_data(RunDir(canary_run))
    assert min(data.members["row_id"]) >= 0 and len(data.nonmembers) > 0
    assert not set(data.members["text"]) & set(data.nonmembers["text"])
    assert set(data.members["client"]) == {0, 1, 2, 3}


def test_canary_records_are_deterministic_and_fair():
    from trustfl.attacks.membership import CanarySettings, canary_records

    s = CanarySettings(count=2000, secret_digits=8)
    a = canary_records(s, seed=3, num_clients=4, labels=[0, 1])
    assert a == canary_records(s, seed=3, num_clients=4, labels=[0, 1])
    assert a != canary_records(s, seed=4, num_clients=4, labels=[0, 1])
    share = sum(c["included"] for c in a) / len(a)
    assert 0.45 < share < 0.55 and {c["client"] for c in a} == {0, 1, 2, 3} and {c["label"] for c in a} == {0, 1}


@pytest.mark.parametrize("value,match", [
    ({"count": -1}, "canaries.count"), ({"count": 10**9}, "canaries.count"), ({"count": True}, "canaries.count"),
    ({"count": "5"}, "canaries.count"), ({"count": 5.5}, "canaries.count"),
    ({"count": 10, "secret_digits": 0}, "canaries.secret_digits"),
    ({"count": 10, "secret_digits": 65}, "canaries.secret_digits"),
    ({"count": 1000, "secret_digits": 2}, "canaries.secret_digits"),
    ({"count": 10, "prefix": "a\x00b"}, "canaries.prefix"), ({"count": 10, "prefix": "x" * 201}, "canaries.prefix"),
    ({"count": 10, "clients": []}, "canaries.clients"), ({"count": 10, "clients": [1, 1]}, "canaries.clients"),
    ({"count": 10, "clients": [-1]}, "canaries.clients"), ({"count": 10, "clients": [99]}, "canaries.clients"),
    ({"count": 10, "seed": -1}, "canaries.seed"), ({"count": 10, "coins": 0.7}, "canaries"),
])
def test_hostile_canary_config_is_one_clear_error(value, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict({"canaries": value, "partition": {"num_clients": 4}})


# ------------------------------------------------------------------ the audit
def test_audit_writes_metrics_plot_and_empirical_epsilon(audited):
    run, result = audited
    out = run / "audit" / "privacy"
    saved = json.loads((out / "results.json").read_text())
    assert saved["format"] == "trustfl-privacy-audit/1"
    assert (out / "roc.png").read_bytes().startswith(b"\x89PNG")
    for name in ("loss", "reference"):
        m = saved["membership"][name]
        assert 0 <= m["auc"] <= 1 and m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
        assert set(m["tpr_at_fpr"]) == {"0.01", "0.001"} and m["n_nonmembers"] == result.data["nonmembers"]
    cache = out / "cache"
    for name in ("loss", "reference", "lira", "lira_online", "rmia"):  # the AUC is sklearn's on the cached scores
        (blob,) = [json.loads(f.read_text()) for f in cache.glob(f"scores-{name}-*.json")]
        mem, non = blob["members"], blob["nonmembers"]
        assert (len(mem), len(non)) == (result.data["members"], result.data["nonmembers"])
        want = roc_auc_score([1] * len(mem) + [0] * len(non), mem + non)
        assert saved["membership"][name]["auc"] == pytest.approx(want, abs=1e-12), name
    shadows = saved["data"]["shadows"]
    assert shadows["count"] == 2 and shadows["mode"].startswith("online") and 0 < shadows["in_fraction"] <= 0.5
    assert shadows["pool"] >= result.data["members"] + result.data["nonmembers"] + shadows["population_z"]
    assert shadows["overrides"] == {}  # local engine, no secure aggregation: the target's recipe, its 24 canaries too
    recipe = json.loads((cache / "shadows" / "shadows.json").read_text())["config"]
    assert recipe["canaries"]["count"] == 24
    c = saved["canaries"]
    assert c["canaries"] == 24 and c["accounted"] is None
    assert c["exposure"]["max_bits"] == pytest.approx(4.0) and c["exposure"]["candidates_capped"] is None
    # the bound recomputed from the cached canary scores (shadow reference - target loss) and the recorded coins
    (blob,) = [json.loads(f.read_text()) for f in cache.glob("canaries-*.json")]
    coins = [bool(k["included"]) for k in recorded_canaries(RunDir(run))]
    scores = np.asarray(blob["reference"]) - np.asarray(blob["target"])
    bound = canary_epsilon(scores, coins, delta=1e-5, confidence=0.95, seed=0)
    assert (c["epsilon_lower_bound"], c["guesses"], c["correct"]) == (bound.epsilon, bound.guesses, bound.correct)
    k = c["k_plus"]  # the chosen guesses counted by hand: the k highest scores "in", the k lowest "out"
    order = np.argsort(scores, kind="stable")
    assert c["correct"] == sum(coins[i] for i in order[len(order) - k:]) + sum(not coins[i] for i in order[:k])
    assert saved["summary"]["best_attack"] in saved["membership"]


def test_audit_is_resumable_from_its_cache(audited):
    run, first = audited
    again = privacy_audit(run, PrivacyAuditSettings(**FAST))
    assert all(again.membership[n]["cached"] for n in ("loss", "reference", "lira", "rmia"))
    assert again.membership["loss"]["auc"] == first.membership["loss"]["auc"]
    assert again.canaries["epsilon_lower_bound"] == first.canaries["epsilon_lower_bound"]
    shadows = list((run / "audit" / "privacy" / "cache").glob("shadow-*.safetensors"))
    assert len(shadows) == 1


def test_shadow_attacks_recomputed_independently(audited):
    """The audit's LiRA (offline and online) and RMIA scores equal the formulas applied by hand to the shadows' and
    the target's losses, one fit over members and non-members together; each shadow trained on some audited
    records and not on others (the pool holds them), and on about as many records as the target."""
    import datasets

    from trustfl.attacks.membership import ShadowSet, lira_scores, lira_statistic, per_record_loss, rmia_log_scores
    from trustfl.audits.privacy import load_run_model

    run, result = audited
    rd = RunDir(run)
    data = membership_data(rd, max_records=FAST["max_records"])
    recs = datasets.Dataset.from_dict({"text": list(data.members["text"]) + list(data.nonmembers["text"]),
                                       "label": list(data.members["label"]) + list(data.nonmembers["label"])})
    shadows = ShadowSet.open(run / "audit" / "privacy" / "cache" / "shadows")
    inside = shadows.membership(recs)
    assert inside.any(1).all() and (~inside).any(1).all()  # every shadow: some records IN, some OUT
    trained = result.data["shadows"]["target_trained_records"]
    for sh in shadows.shadows:  # pool members (audited + population) trained on: about the target's count
        assert 0.5 * trained <= len(sh.members) <= 1.5 * trained + 40  # + the planted canaries are not hashed
    rm = load_run_model(rd)
    kw = dict(tokenizer=rm.tokenizer, task="classification", max_length=rm.max_length)
    target = per_record_loss(rm.use(rm.vector), recs, **kw)
    shadow_losses = shadows.losses(recs)
    cached = {}
    for f in (run / "audit" / "privacy" / "cache").glob("scores-*.json"):
        name = f.name.split("-")[1]
        blob = json.loads(f.read_text())
        cached[name] = torch.tensor(blob["members"] + blob["nonmembers"], dtype=torch.float64)
    t, sh = lira_statistic(target, task="classification"), lira_statistic(shadow_losses, task="classification")
    for name, online in (("lira", False), ("lira_online", True)):
        want = lira_scores(t, sh, inside, online=online, fix_variance=True, fill_missing=True)
        assert torch.allclose(cached[name], want, rtol=1e-6, atol=1e-6), name
    z = datasets.Dataset.from_dict({k: v for k, v in zip(("text", "label"), _population(run))})
    want = rmia_log_scores(-target, -shadow_losses, -per_record_loss(rm.use(rm.vector), z, **kw), -shadows.losses(z),
                           offline_a=None)
    assert torch.allclose(cached["rmia"], want)


def _population(run):
    """The RMIA population z the audit drew (rebuilt the audit's way), as (texts, labels)."""
    from trustfl.audits.privacy.membership import population_records
    from trustfl.audits.privacy.records import run_config

    rd = RunDir(run)
    data = membership_data(rd, max_records=FAST["max_records"])
    excl = set(data.members["text"]) | set(data.nonmembers["text"])
    z = population_records(rd, run_config(rd), exclude_texts=excl, n=FAST["population"], seed=2)
    return list(z["text"]), [int(y) for y in z["label"]]


def test_population_never_holds_the_rows_dedup_dropped(tiny_bert_dir, tmp_path):
    """Dedup drops near-copies of kept training records before training, so the manifest lists only the kept rows;
    the dropped rows (and any source row repeating a used row's text) are the run's data all the same and never
    population records (which feed the reference adapter, RMIA's z and the shadow pool)."""
    from trustfl.audits.privacy.membership import PopulationSource, population_records
    from trustfl.data import load_dataset_source
    from trustfl.federation.clients import split_data

    cfg = _config(tiny_bert_dir, data__max_records=600, data__holdout_fraction=0.3, dedup__enabled=True,
                  federation__rounds=1)
    Federation(cfg, out_dir=tmp_path / "run", progress=False).run()
    run = RunDir(tmp_path / "run")
    recorded = {r for c in run.manifest["extra"]["clients"].values() for r in c["train_rows"] + c["holdout_rows"]}
    before = {int(r) for tr, ho in split_data(cfg).splits.values() for ds in (tr, ho) for r in ds["row_id"]}
    dropped = before - recorded
    assert dropped and recorded <= before  # dedup dropped some training rows
    texts = load_dataset_source("sms_spam")["text"]
    pop = set(population_records(run, cfg, exclude_texts=set(), n=10**6, seed=0)["text"])
    assert len(pop) > 3000  # the rows outside the 600 sampled
    assert not pop & {texts[i] for i in dropped} and not pop & {texts[i] for i in before}
    source = PopulationSource.of_run(run, cfg)  # what an audit keeps and draws from several times
    assert set(source.sample(exclude_texts=set(), n=10**6, seed=0)["text"]) == pop
    some = set(sorted(pop)[:50])
    again = source.sample(exclude_texts=some, n=10**6, seed=0)
    assert not set(again["text"]) & some and len(again) >= len(pop) - 50


def test_shadow_adapter_cache_is_keyed_by_the_whole_recipe(canary_run, tmp_path):
    """server_lr and model.max_length are part of the recipe (a changed one never hits the cache); the name is not."""
    from trustfl.audits.privacy import load_run_model
    from trustfl.audits.privacy.membership import ScoreCache, population_records, shadow_reference
    from trustfl.audits.privacy.records import run_config

    rd = RunDir(canary_run)
    cfg = run_config(rd)
    rm = load_run_model(rd, config=cfg)
    pop = population_records(rd, cfg, exclude_texts=set(), n=12, seed=0)
    cache = ScoreCache(tmp_path / "cache")

    def variant(section, key, value):
        d = cfg.to_dict()
        d[section][key] = value
        return RunConfig.from_dict(d)

    first = shadow_reference(rd, rm, cfg, pop, cache=cache)
    assert torch.equal(shadow_reference(rd, rm, RunConfig.from_dict({**cfg.to_dict(), "name": "x"}), pop,
                                        cache=cache), first)
    assert len(list(cache.directory.glob("shadow-*.safetensors"))) == 1
    slower = shadow_reference(rd, rm, variant("server", "server_lr", 0.5), pop, cache=cache)
    assert len(list(cache.directory.glob("shadow-*.safetensors"))) == 2
    torch.testing.assert_close(slower - rm.initial, 0.5 * (first - rm.initial), rtol=1e-4, atol=1e-7)  # one round
    shadow_reference(rd, rm, variant("model", "max_length", 16), pop, cache=cache)
    assert len(list(cache.directory.glob("shadow-*.safetensors"))) == 3


def _canary_run(tiny_bert_dir, out, count, digits):
    cfg = _config(tiny_bert_dir, data__holdout_fraction=0.3, canaries__count=count, canaries__secret_digits=digits,
                  partition__scheme="iid", partition__alpha=None, federation__rounds=1)
    Federation(cfg, out_dir=out, progress=False).run()
    return out


def test_canary_candidates_are_capped_by_the_secret_space(tiny_bert_dir, tmp_path):
    """5 canaries of 3 digits is a valid run (1000 >= 100 x 5); 2000 candidates do not fit in the 995 other
    secrets: the audit draws all 995 and says so, instead of failing on the run config's planting rule."""
    import re

    from trustfl.audits.privacy.canary import candidate_texts

    run = _canary_run(tiny_bert_dir, tmp_path / "run", 5, 3)
    canaries = recorded_canaries(RunDir(run))
    info = RunDir(run).manifest["extra"]["canaries"]["settings"]
    for n in (200, 995, 5000):
        cand = candidate_texts(canaries, info, n, 7)
        assert len(cand) == min(n, 995) == len(set(cand))
        assert not set(cand) & {c["text"] for c in canaries}
        assert all(re.fullmatch(r"my secret code is \d{3}", t) for t in cand)
    res = privacy_audit(run, PrivacyAuditSettings(membership=False, shadow=False, candidates=2000, bootstrap=10))
    e = res.canaries["exposure"]
    assert (e["candidates"], e["candidates_requested"]) == (995, 2000) and "10^3" in e["candidates_capped"]
    assert e["max_bits"] == pytest.approx(math.log2(996)) and res.canaries["canaries"] == 5


def test_one_canary_is_reported_as_not_run(tiny_bert_dir, tmp_path):
    run = _canary_run(tiny_bert_dir, tmp_path / "run", 1, 2)
    res = privacy_audit(run, PrivacyAuditSettings(membership=False, shadow=False, candidates=10))
    assert res.canaries is None and "needs at least 2" in res.not_run["canaries"], res.not_run
    saved = json.loads((run / "audit" / "privacy" / "results.json").read_text())
    assert saved["not_run"]["canaries"] == res.not_run["canaries"]


def test_no_private_text_leaves_in_the_audit_files(audited, canary_run):
    run, _ = audited
    data = membership_data(RunDir(canary_run))
    texts = [t for t in list(data.members["text"]) + list(data.nonmembers["text"]) if len(t) > 25]
    blob = "".join(p.read_text(errors="ignore") for p in (run / "audit" / "privacy").rglob("*.json"))
    assert texts and not any(t in blob for t in texts)


def test_a_model_that_saw_none_of_them_gives_auc_near_one_half(canary_run, tiny_bert_dir):
    """Members and non-members both unseen (holdouts vs test rows): the audit must not invent leakage."""
    from trustfl.audits.privacy import load_run_model

    run = RunDir(canary_run)
    rm = load_run_model(run)
    data = membership_data(run)
    from trustfl.data import load_dataset_source

    test = load_dataset_source("sms_spam").select(run.manifest["extra"]["test_rows"])
    res = privacy_audit(run, PrivacyAuditSettings(attacks=("loss",), bootstrap=200, canaries=False),
                        model=rm.model, tokenizer=rm.tokenizer, task="classification", max_length=24,
                        members=data.nonmembers.select_columns(["text", "label"]),
                        nonmembers=test.select_columns(["text", "label"]), write=False)
    m = res.membership["loss"]
    assert m["auc_ci"][0] < 0.5 < m["auc_ci"][1], m


def test_privacy_section_reports_attacks_next_to_the_accountant(tiny_bert_dir, tmp_path):
    out = tmp_path / "dp"
    cfg = _config(tiny_bert_dir, data__holdout_fraction=0.3, canaries__count=16, federation__rounds=1,
                  privacy__sample={"target_epsilon": 4.0, "delta": 1e-5, "max_grad_norm": 0.5})
    Federation(cfg, out_dir=out, progress=False).run()
    res = privacy_section.audit(RunDir(out), AuditSettings(progress=False, options={"privacy": {
        "bootstrap": 20, "candidates": 10, "attacks": ["loss", "nope"]}}))
    assert res.status == "pass", res.verdict
    c = res.data["empirical_epsilon"]
    accounted = RunDir(out).manifest["extra"]["privacy"]["sample"]["epsilon_max"]
    assert c["accounted"]["epsilon"] == accounted and c["epsilon_lower_bound"] <= accounted
    assert c["empirical_within_accounted"] and c["delta"] == 1e-5
    assert "empirical ε" in res.verdict and "MIA best AUC" in res.verdict
    assert res.figures["membership_roc"].startswith(b"\x89PNG")
    assert any(n.what == "membership attack 'nope'" and "not installed" in n.why for n in res.not_checked)


# ------------------------------------------------------------------ bad input
def test_overlapping_and_empty_sets_are_refused(canary_run):
    from trustfl.audits.privacy import load_run_model

    run = RunDir(canary_run)
    rm = load_run_model(run)
    recs = [{"text": "hello there", "label": 0}, {"text": "win cash now", "label": 1}]
    kw = dict(model=rm.model, tokenizer=rm.tokenizer, task="classification", write=False)
    with pytest.raises(PrivacyAuditError, match="both members and non-members"):
        privacy_audit(run, PrivacyAuditSettings(canaries=False), members=recs, nonmembers=recs[1:], **kw)
    with pytest.raises(PrivacyAuditError, match="empty"):
        privacy_audit(run, PrivacyAuditSettings(canaries=False), members=recs, nonmembers=[], **kw)
    with pytest.raises(PrivacyAuditError, match="together"):
        privacy_audit(run, members=recs, write=False)
    with pytest.raises(PrivacyAuditError, match="lacks"):
        privacy_audit(run, PrivacyAuditSettings(canaries=False), members=[{"text": "x"}], nonmembers=recs, **kw)


def test_a_changed_dataset_or_seed_is_caught_by_the_fingerprints(canary_run):
    cfg = RunConfig.from_dict({**RunDir(canary_run).config, "seed": 1})
    with pytest.raises(PrivacyAuditError, match="do not match the manifest's fingerprint"):
        membership_data(RunDir(canary_run), config=cfg)


def test_runs_without_the_needed_files_are_clear_errors(tmp_path, canary_run):
    with pytest.raises(RunDirError, match="not a run directory"):
        privacy_audit(tmp_path / "nothing")
    own = tmp_path / "own"
    w = RunWriter.create(own, config={"rounds": 1}, seeds={"torch": 0},
                         layout={"names": ["w"], "shapes": [[4]], "dtype": "float32"})
    w.write_initial(torch.zeros(4))
    with pytest.raises(PrivacyAuditError, match="not a trustfl run config"):
        privacy_audit(own)
    w.write_round(1, global_vector=torch.ones(4))
    with pytest.raises(PrivacyAuditError, match="not a trustfl run config"):
        privacy_audit(own)
    # a trustfl run with no completed round
    fresh = tmp_path / "fresh"
    shutil.copytree(canary_run, fresh)
    manifest = json.loads((fresh / "manifest.json").read_text())
    w0 = RunWriter.create(tmp_path / "zero", config=manifest["config"], seeds=manifest["seeds"],
                          layout=manifest["layout"], fingerprints=manifest["fingerprints"], extra=manifest["extra"])
    w0.write_initial(RunDir(canary_run).global_vector(0))
    with pytest.raises(PrivacyAuditError, match="no completed round"):
        privacy_audit(tmp_path / "zero")


def test_tampered_canaries_are_refused(canary_run, tmp_path):
    manifest = json.loads((canary_run / "manifest.json").read_text())
    extra = manifest["extra"]
    extra["canaries"]["records"][0]["included"] = not extra["canaries"]["records"][0]["included"]
    w = RunWriter.create(tmp_path / "t", config=manifest["config"], seeds=manifest["seeds"], layout=manifest["layout"],
                         fingerprints=manifest["fingerprints"], extra=extra)
    w.write_initial(RunDir(canary_run).global_vector(0))
    with pytest.raises(PrivacyAuditError, match="sha256"):
        recorded_canaries(RunDir(tmp_path / "t"))


@pytest.mark.parametrize("options,match", [({"bootstrap": 0}, "bootstrap"), ({"confidence": 1.0}, "confidence"),
                                           ({"fprs": [0.0]}, "fprs"), ({"max_records": True}, "max_records"),
                                           ({"confidence": float("nan")}, "confidence"), ({"typo": 1}, "unknown"),
                                           ({"extra": {"lira": {"online": True}}}, "unknown option")])
def test_bad_audit_settings(options, match):
    with pytest.raises(PrivacyAuditError, match=match):
        PrivacyAuditSettings.from_options(options)


# ------------------------------------------------------------------ CLI
def test_cli_audit_privacy(audited, capsys, tmp_path):
    run, _ = audited
    assert main(["audit", "privacy", str(run), "--quiet", "--bootstrap", "30", "--candidates", "15",
                 "--max-records", "200", "--attacks", "loss,reference"]) == 0
    out = capsys.readouterr().out
    assert "empirical epsilon >=" in out and "results:" in out and "loss" in out
    assert main(["audit", "privacy", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["audit", "nosuch", str(run), "--quiet"]) == 2
    assert "unknown audit section" in capsys.readouterr().err
    assert main(["audit", "privacy", str(run), "--quiet", "--bootstrap", "0"]) == 2
    assert "bootstrap" in capsys.readouterr().err
    assert main(["audit", "privacy", str(run), "--quiet", "--members", str(tmp_path / "m.csv")]) == 2
    assert "not a file" in capsys.readouterr().err
    assert main(["audit", str(run), "--quiet", "--sections", "integrity", "--config", "x.toml"]) == 2
