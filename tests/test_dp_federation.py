"""DP inside the federated loop (tiny model, real text): ε per round in metrics and manifest, each
client's ε from its own accountant, no hook pile-up, and the client-level budget stop."""

from __future__ import annotations

import pytest
import torch

from trustfl.config import RunConfig
from trustfl.defenses.dp import epsilon
from trustfl.errors import ConfigError
from trustfl.federation import Federation
from trustfl.rundir import RunDir

from tiny_runs import tiny_run


def _config(model_dir: str, **sections) -> RunConfig:
    """``sections`` replace whole sections of the base run (which keeps no client updates)."""
    return RunConfig.from_dict(tiny_run(model_dir, name="dp", replace={
        "federation": {"rounds": 2, "save_client_updates": False}, **sections}))


def test_sample_level_dp_in_the_loop(tiny_bert_dir, tmp_path):
    cfg = _config(tiny_bert_dir, privacy={"sample": {"target_epsilon": 4.0, "delta": 1e-5, "max_grad_norm": 0.5}})
    fed = Federation(cfg, out_dir=tmp_path / "run", progress=False)
    summary = fed.run()
    run = RunDir(tmp_path / "run")
    run.verify()
    assert fed.trainer.prefix is not None  # DP on the frozen-prefix replay path
    hooks = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in fed.model.modules())
    assert hooks == 0  # Opacus hooks removed after every client
    metrics = run.metrics()
    for m in metrics:
        per_client = m["privacy_sample"]["epsilon_per_client"]
        assert m["privacy_sample"]["epsilon_max"] == max(per_client.values())
    last = metrics[-1]
    for cid, cm in last["client_metrics"].items():
        # independent: the client's (σ, q) and all its noisy steps so far, through the accountant
        steps = int(cm["dp_steps_total"])
        ref = epsilon(noise_multiplier=cm["dp_noise_multiplier"], sample_rate=cm["dp_sample_rate"], steps=steps,
                      delta=1e-5)
        assert last["privacy_sample"]["epsilon_per_client"][cid] == pytest.approx(ref, rel=1e-9)
        assert cm["dp_epsilon"] <= 4.0 + 1e-9 or cm["dp_noise_only_steps"] > 0
    assert run.manifest["extra"]["privacy"]["sample"]["epsilon_max"] == last["privacy_sample"]["epsilon_max"]
    assert 0.0 <= summary.final_metrics["accuracy"] <= 1.0


def test_client_level_budget_stops_cleanly(tiny_bert_dir, tmp_path):
    z, budget = 2.0, 2.0
    cfg = _config(tiny_bert_dir, federation={"rounds": 30, "clients_per_round": 2, "sampling": "poisson",
                                             "save_client_updates": False},
                  server={"aggregator": "fedavg", "aggregator_options": {"weighted": False}},
                  privacy={"client": {"noise_multiplier": z, "clip_norm": 0.05, "delta": 1e-5,
                                      "max_epsilon": budget}})
    allowed = max(t for t in range(1, 31)
                  if epsilon(noise_multiplier=z, sample_rate=0.5, steps=t, delta=1e-5) <= budget)
    assert allowed < 30
    summary = Federation(cfg, out_dir=tmp_path / "run", progress=False).run()
    assert summary.rounds_completed == allowed and "budget" in (summary.stopped_reason or "")
    run = RunDir(tmp_path / "run")
    run.verify()
    last = run.metrics()[-1]
    assert last["privacy_client"]["epsilon"] <= budget
    assert run.manifest["extra"]["privacy"]["client"]["epsilon"] == pytest.approx(
        epsilon(noise_multiplier=z, sample_rate=0.5, steps=allowed, delta=1e-5))
    assert all(m["aggregation"]["stats"]["dp_clip_norm"] == 0.05 for m in run.metrics())


def test_client_level_config_rules_name_the_field(tiny_bert_dir):
    with pytest.raises(ConfigError, match="server.aggregator_options.weighted"):
        _config(tiny_bert_dir, privacy={"client": {"noise_multiplier": 1.0}})
    with pytest.raises(ConfigError, match="privacy.client.clip_norm"):
        _config(tiny_bert_dir, server={"aggregator": "fedavg", "aggregator_options": {"weighted": False}},
                privacy={"client": {"noise_multiplier": 1.0, "clip_norm": 0}})
    with pytest.raises(ConfigError, match="privacy.sample"):
        _config(tiny_bert_dir, privacy={"sample": {"target_epsilon": 1.0, "noise_multiplier": 1.0}})


def test_dp_run_stopped_then_resumed_equals_uninterrupted(tiny_bert_dir, tmp_path):
    """Both DP levels survive a stop + resume: same adapters, same per-client and client-level ε
    (the accountants are rebuilt from the run directory, not restarted from zero)."""
    from trustfl.errors import StopFederation

    privacy = {"sample": {"noise_multiplier": 1.0, "delta": 1e-5, "max_grad_norm": 0.5},
               "client": {"noise_multiplier": 1.0, "clip_norm": 0.05, "delta": 1e-5}}
    cfg = _config(tiny_bert_dir, federation={"rounds": 3, "clients_per_round": 2, "sampling": "poisson",
                                             "save_client_updates": False},
                  server={"aggregator": "fedavg", "aggregator_options": {"weighted": False}}, privacy=privacy)
    Federation(cfg, out_dir=tmp_path / "full", progress=False).run()

    def stop_after_first(report):
        if report.round == 1:
            raise StopFederation("stopped for the test")

    Federation(cfg, out_dir=tmp_path / "cut", callbacks=[stop_after_first], progress=False).run()
    assert RunDir(tmp_path / "cut").completed_rounds == 1
    Federation(cfg, out_dir=tmp_path / "cut", resume=True, progress=False).run()
    full, cut = RunDir(tmp_path / "full"), RunDir(tmp_path / "cut")
    cut.verify()
    torch.testing.assert_close(cut.global_vector(3), full.global_vector(3), atol=1e-6, rtol=1e-5)
    a, b = full.metrics()[-1], cut.metrics()[-1]
    assert b["privacy_sample"]["epsilon_per_client"] == pytest.approx(a["privacy_sample"]["epsilon_per_client"])
    assert b["privacy_client"]["epsilon"] == pytest.approx(a["privacy_client"]["epsilon"])
    assert b["privacy_client"]["epsilon"] > cut.metrics()[0]["privacy_client"]["epsilon"]


def test_privacy_hook_passed_in_code_keeps_its_accountants_across_resume(tiny_bert_dir, tmp_path):
    """Formerly Federation(privacy=DPAdapterTraining(...)) without [privacy] in the config persisted no
    accountant state, so a resume restarted every client's ε at 0. As a run component it is committed."""
    from trustfl.defenses import DPAdapterTraining, SampleLevelDP
    from trustfl.errors import StopFederation

    cfg = _config(tiny_bert_dir, federation={"rounds": 2, "save_client_updates": False})

    def hook():
        return SampleLevelDP(DPAdapterTraining(noise_multiplier=1.0, max_grad_norm=0.5, rounds=2))

    Federation(cfg, out_dir=tmp_path / "full", components=[hook()], progress=False).run()

    def stop_after_first(report):
        if report.round == 1:
            raise StopFederation("stopped for the test")

    Federation(cfg, out_dir=tmp_path / "cut", components=[hook()], callbacks=[stop_after_first], progress=False).run()
    Federation(cfg, out_dir=tmp_path / "cut", components=[hook()], resume=True, progress=False).run()
    a, b = RunDir(tmp_path / "full").metrics()[-1], RunDir(tmp_path / "cut").metrics()[-1]
    assert b["privacy_sample"]["epsilon_per_client"] == pytest.approx(a["privacy_sample"]["epsilon_per_client"])
    # resuming a DP run without its hook cannot silently continue: there is accountant state nobody restores
    with pytest.raises(ConfigError, match=r"recorded state for run component\(s\) \['privacy_sample'\]"):
        Federation(cfg, out_dir=tmp_path / "cut", resume=True, progress=False).run()


def test_each_round_is_one_manifest_commit(tiny_bert_dir, tmp_path, monkeypatch):
    """Formerly a DP round committed the manifest twice (round, then privacy summary)."""
    from trustfl.rundir import RunWriter

    commits = []
    original = RunWriter._commit
    monkeypatch.setattr(RunWriter, "_commit", lambda self, m: (commits.append(m["completed_rounds"]),
                                                               original(self, m))[1])
    cfg = _config(tiny_bert_dir, privacy={"sample": {"noise_multiplier": 1.0}})
    Federation(cfg, out_dir=tmp_path / "r", progress=False).run()
    assert commits.count(1) == 1 and commits.count(2) == 1
    assert RunDir(tmp_path / "r").manifest["extra"]["privacy"]["sample"]["epsilon_max"] > 0
