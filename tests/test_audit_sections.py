"""The robustness and contribution sections of ``trustfl audit`` (issue 15)."""

from __future__ import annotations

import itertools
import math
import types

import numpy as np
import pytest
import torch

from trustfl.audits.contribution import audit as contribution_audit
from trustfl.audits.contribution import contributions
from trustfl.audits.robustness import audit as robustness_audit
from trustfl.audits.robustness import compute_scores
from trustfl.rundir import RunDir, RunWriter

SETTINGS = types.SimpleNamespace(options={}, progress=False)
D, N, ATTACKER, ROUNDS = 64, 6, "5", 3


def _write_synthetic(path, *, store=True, accepted_attacker=True, server_lr=1.0):
    """6 clients over 3 rounds: 5 honest (a shared direction + noise), client 5 sends 10x a random direction."""
    gen = torch.Generator().manual_seed(0)
    layout = {"names": ["w"], "shapes": [[D]], "dtype": "float32"}
    w = RunWriter.create(path, config={"seed": 0, "server": {"server_lr": server_lr},
                                       "federation": {"save_client_updates": store}},
                         layout=layout, seeds={"global": 0}, extra={"attackers": [int(ATTACKER)]})
    g = torch.zeros(D)
    w.write_initial(g)
    direction = torch.randn(D, generator=gen)
    for r in range(1, ROUNDS + 1):
        ups = {c: direction + 0.3 * torch.randn(D, generator=gen) for c in range(N - 1)}
        ups[N - 1] = 10.0 * torch.randn(D, generator=gen)
        honest_mean = torch.stack([ups[c] for c in range(N - 1)]).mean(0)
        agg = torch.stack(list(ups.values())).mean(0) if accepted_attacker else honest_mean
        g = g + server_lr * agg
        clients = {str(c): {"accepted": accepted_attacker or c != N - 1, "clipped": False,
                            "flagged": not accepted_attacker and c == N - 1, "reason": ""} for c in range(N)}
        w.write_round(r, global_vector=g, client_updates={c: (u, 10) for c, u in ups.items()} if store else None,
                      metrics={"aggregation": {"clients": clients, "stats": {}},
                               "eval": {"accuracy": 0.9, "attack_success_rate": 0.1 * r}})
    return RunDir(path)


def _np_robust_z(x):
    if len(x) < 3:
        return np.zeros_like(x)
    med = np.median(x)
    dev = np.abs(x - med)
    scale = 1.4826 * np.median(dev)
    if scale <= 0:
        scale = 1.2533 * dev.mean()
    return (x - med) / scale if scale > 0 else np.zeros_like(x)


def test_robustness_scores_match_a_numpy_reference(tmp_path):
    run = _write_synthetic(tmp_path / "run", server_lr=0.5)
    scores = compute_scores(run)
    assert [s.round for s in scores] == [1, 2, 3]
    for s in scores:
        r = s.round
        U = np.stack([run.client_update(r, c)[0].numpy().astype(np.float64) for c in s.client_ids])
        g = [run.global_vector(i).numpy().astype(np.float64) for i in range(ROUNDS + 1)]
        agg = (g[r] - g[r - 1]) / 0.5
        norm = np.linalg.norm(U, axis=1)
        cos_agg = U @ agg / (norm * np.linalg.norm(agg))
        np.testing.assert_allclose(s.scores["norm"].numpy(), norm, rtol=1e-9)
        np.testing.assert_allclose(s.scores["cos_aggregate"].numpy(), cos_agg, rtol=1e-6, atol=1e-9)
        if r >= 2:
            prev = g[r - 1] - g[r - 2]
            np.testing.assert_allclose(s.scores["cos_previous"].numpy(),
                                       U @ prev / (norm * np.linalg.norm(prev)), rtol=1e-6, atol=1e-9)
        else:
            assert np.isnan(s.scores["cos_previous"].numpy()).all()
        f = max(0, (N - 3) // 2)
        assert s.f == f
        sq = ((U[:, None, :] - U[None, :, :]) ** 2).sum(-1)
        krum = np.array([np.sort(np.delete(sq[i], i))[: N - f - 2].sum() for i in range(N)])
        np.testing.assert_allclose(s.scores["krum"].numpy(), krum, rtol=1e-6)
        med = np.median(U, axis=0)
        np.testing.assert_allclose(s.scores["median_distance"].numpy(), np.linalg.norm(U - med, axis=1), rtol=1e-6)
        for key, ref in (("norm", norm), ("krum", krum)):
            np.testing.assert_allclose(s.z[key].numpy(), _np_robust_z(ref), rtol=1e-6, atol=1e-9)
        assert s.flagged == [c == ATTACKER for c in s.client_ids]  # the scaled attacker, and only it


def test_robustness_section_finds_the_attacker_the_defense_accepted(tmp_path):
    res = robustness_audit(_write_synthetic(tmp_path / "run"), SETTINGS)
    assert res.name == "robustness" and res.status == "warn"
    missed = res.data["audit_flagged_defense_accepted"]
    assert {(m["round"], m["client"]) for m in missed} == {(r, ATTACKER) for r in range(1, ROUNDS + 1)}
    assert any(f.severity == "warn" and "accepted by the run's defense" in f.title for f in res.findings)
    gt = res.data["ground_truth"]
    assert gt["audit"]["precision"] == 1.0 and gt["audit"]["recall"] == 1.0
    assert gt["defense"]["recall"] == 0.0  # the FedAvg "defense" caught nothing
    assert res.data["asr"] == {"1": 0.1, "2": 0.2, "3": pytest.approx(0.3)}
    assert res.figures["robustness_heatmap.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert res.data["rounds"]["1"]["clients"]["0"]["audit_flag"] is False
    import json

    json.dumps(res.data)  # JSON-able


def test_robustness_section_passes_when_the_defense_caught_the_attacker(tmp_path):
    res = robustness_audit(_write_synthetic(tmp_path / "run", accepted_attacker=False), SETTINGS)
    assert res.status == "pass", res.verdict
    assert res.data["audit_flagged_defense_accepted"] == []
    assert res.data["ground_truth"]["defense"]["recall"] == 1.0


def test_sections_unavailable_without_stored_updates(tmp_path):
    run = _write_synthetic(tmp_path / "run", store=False)
    for section in (robustness_audit, contribution_audit):
        res = section(run, SETTINGS)
        assert res.status == "unavailable"
        assert any("save_client_updates = false" in nc.why for nc in res.not_checked), res.not_checked
        assert res.verdict


# ---------------------------------------------------------------------- contribution, pure-tensor core
def _exact_shapley(ids, utility):
    phi = dict.fromkeys(ids, 0.0)
    perms = list(itertools.permutations(ids))
    for perm in perms:
        prefix = frozenset()
        for c in perm:
            phi[c] += (utility(prefix | {c}) - utility(prefix)) / len(perms)
            prefix = prefix | {c}
    return phi


def test_contributions_rank_noise_lowest_and_duplicates_share_credit():
    gen = torch.Generator().manual_seed(1)
    d = 200
    target = torch.randn(d, generator=gen)
    a = 0.5 * target + 0.2 * torch.randn(d, generator=gen)
    b = 0.5 * target + 0.2 * torch.randn(d, generator=gen)
    noise = 3.0 * target.norm() / math.sqrt(d) * torch.randn(d, generator=gen)
    updates = {"a": (a, 10), "b": (b, 10), "a_copy": (a.clone(), 10), "noise": (noise, 10)}

    def utility(v):
        return -float((v - target).norm())

    res = contributions({1: updates}, utility, permutations=400, tolerance=0.0)
    phi = res.shapley
    ranking = [c for c, _ in res.ranking()]
    assert ranking[-1] == "noise" and phi["noise"] < 0
    assert phi["a"] > 0 and phi["b"] > 0 and phi["a_copy"] > 0
    assert phi["a"] == pytest.approx(phi["a_copy"], rel=0.15)  # the duplicates share credit
    # against the exact Shapley values (all 24 permutations) of the same FedAvg utility
    from trustfl.audits.contribution import fedavg_vector

    exact = _exact_shapley(list(updates), lambda s: utility(fedavg_vector(torch.zeros(d), updates, s, 1.0)))
    assert exact["a"] == pytest.approx(exact["a_copy"], abs=1e-9)
    for c in updates:
        assert phi[c] == pytest.approx(exact[c], abs=0.15 * max(abs(v) for v in exact.values()))
    # efficiency: values sum to U(all) - U(empty); leave-one-out is negative for the noise client only
    rnd = res.rounds[0]
    assert sum(phi.values()) == pytest.approx(rnd.v_full - rnd.v_empty, rel=1e-6)
    assert res.loo["noise"] < 0 < res.loo["b"]
    # with its twin still in, leaving one duplicate out costs less than leaving out a unique client
    assert res.loo["a"] < res.loo["b"]
    from trustfl.audits.contribution import classify

    assert classify(phi, 0.1) == {"a": "helped", "b": "helped", "a_copy": "helped", "noise": "hurt"}
    assert classify({"x": 0.05, "y": -0.05}, 0.1) == {"x": "free-rode", "y": "free-rode"}


def test_contributions_truncate_a_round_without_gain():
    calls = []

    def utility(v):
        calls.append(1)
        return 1.0

    res = contributions({1: {"x": (torch.ones(3), 1), "y": (-torch.ones(3), 1)}}, utility, permutations=5,
                        leave_one_out=False)
    assert res.shapley == {"x": 0.0, "y": 0.0} and res.rounds[0].truncated_round and len(calls) == 2


# ---------------------------------------------------------------------- end to end on a tiny run
@pytest.fixture(scope="module")
def tiny_run(tiny_bert_dir, tmp_path_factory):
    from trustfl.config import RunConfig
    from trustfl.federation import Federation

    cfg = RunConfig.from_dict({
        "name": "t", "seed": 0,
        "model": {"name": tiny_bert_dir, "max_length": 24},
        "lora": {"r": 2, "top_layers": 2},
        "data": {"name": "sms_spam", "max_records": 240, "holdout_fraction": 0.1},
        "partition": {"num_clients": 4, "scheme": "dirichlet", "alpha": 1.0},
        "client": {"batch_size": 8, "max_steps": 3, "lr": 5e-3},
        "federation": {"rounds": 2, "save_client_updates": True},
    })
    out = tmp_path_factory.mktemp("audit") / "run"
    Federation(cfg, out_dir=out, progress=False).run()
    return RunDir(out)


def test_sections_end_to_end_on_a_tiny_run(tiny_run):
    rob = robustness_audit(tiny_run, SETTINGS)
    assert rob.status in ("pass", "warn") and set(rob.data["rounds"]) == {"1", "2"}
    assert all(len(r["clients"]) == 4 for r in rob.data["rounds"].values())
    settings = types.SimpleNamespace(options={"contribution": {"test_records": 40, "permutations": 4}}, progress=False)
    res = contribution_audit(tiny_run, settings)
    assert res.status in ("pass", "warn"), (res.verdict, res.not_checked)
    assert res.data["test_records"] == 40
    assert set(res.data["shapley"]) == {"0", "1", "2", "3"} and set(res.data["leave_one_out"]) == {"0", "1", "2", "3"}
    assert not any("initial adapter differs" in f.title for f in res.findings)
    # the full-coalition utility of round 2 is the run's own global(2) evaluated on the same records
    r2 = res.data["rounds"]["2"]
    assert 0.0 <= r2["utility_full"] <= 1.0 and r2["utility_evaluations"] <= 16
    assert sum(r2["shapley"].values()) == pytest.approx(r2["utility_full"] - r2["utility_empty"], abs=1e-9)
    assert res.figures["contribution.png"][:4] == b"\x89PNG"
    assert res.verdict and res.seconds > 0


def test_contribution_utility_reproduces_the_runs_own_evaluation(tiny_run):
    settings = types.SimpleNamespace(options={"permutations": 2}, progress=False)
    res = contribution_audit(tiny_run, settings)
    assert res.data["test_records"] == len(tiny_run.manifest["extra"]["test_rows"])  # all of them (< 200)
    for m in tiny_run.metrics():
        # FedAvg of all stored updates on global(r-1) is the run's global(r): same test accuracy
        assert res.data["rounds"][str(m["round"])]["utility_full"] == pytest.approx(m["eval"]["accuracy"], abs=1e-9)


def test_min_ratio_keeps_a_tight_honest_cluster_from_flagging_a_slightly_further_client():
    from trustfl.audits.robustness import round_scores

    gen = torch.Generator().manual_seed(3)
    d = 4096  # honest distances concentrate: a tiny MAD
    base = torch.randn(d, generator=gen)
    ups = torch.stack([base + 0.01 * torch.randn(d, generator=gen) for _ in range(7)])
    ups = torch.cat([ups, (base + 0.012 * torch.randn(d, generator=gen))[None], 3.0 * base[None]])
    s = round_scores(1, [str(i) for i in range(9)], ups, aggregate=ups.mean(0), previous=None)
    assert s.z["median_distance"][7] > 3.5 and s.z["krum"][7] > 3.5  # a statistical outlier (tiny MAD) ...
    assert s.flagged == [False] * 8 + [True]  # ... but only the 3x client is flagged
    loose = round_scores(1, [str(i) for i in range(9)], ups, aggregate=ups.mean(0), previous=None, min_ratio=1.0)
    assert loose.flagged[7]


def test_contribution_without_a_test_set_is_unavailable(tmp_path):
    res = contribution_audit(_write_synthetic(tmp_path / "run"), SETTINGS)
    assert res.status == "unavailable" and "test rows" in res.not_checked[0].why
