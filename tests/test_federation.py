"""The federated loop end to end on a tiny model and real text: run dir, determinism, resume
after a real kill, and every hook (data attack, update attack, secure sum, callbacks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
import torch

from trustfl.config import RunConfig
from trustfl.errors import ConfigError, StopFederation
from trustfl.federation import Federation
from trustfl.rundir import RunDir
from trustfl.types import DataAttackStage, UpdateAttackStage

from tiny_runs import federation_run, tiny_run


_config = federation_run


def test_run_writes_a_verifiable_run_directory(tiny_bert_dir, tmp_path):
    fed = Federation(_config(tiny_bert_dir), out_dir=tmp_path / "run", progress=False)
    summary = fed.run()
    run = RunDir(tmp_path / "run")
    run.verify()
    assert summary.rounds_completed == run.completed_rounds == 2
    g0, g2 = run.global_vector(0), run.global_vector(2)
    assert g0.numel() == fed.layout.size and not torch.equal(g0, g2)
    metrics = run.metrics()
    assert [m["round"] for m in metrics] == [1, 2]
    assert 0.0 <= metrics[-1]["eval"]["accuracy"] <= 1.0
    # the stored updates are what the server aggregated: FedAvg of them moves g1 to g2
    ids = run.client_ids(2)
    ups = [run.client_update(2, c) for c in ids]
    weights = torch.tensor([float(n) for _, n in ups])
    mean = (weights / weights.sum()) @ torch.stack([u for u, _ in ups])
    torch.testing.assert_close(run.global_vector(1) + mean, g2, atol=1e-6, rtol=1e-5)
    # every training row belongs to exactly one client; holdouts and test are disjoint from training
    extra = run.manifest["extra"]
    train_rows = [r for c in extra["clients"].values() for r in c["train_rows"]]
    holdout_rows = [r for c in extra["clients"].values() for r in c["holdout_rows"]]
    assert len(train_rows) == len(set(train_rows))
    assert not set(train_rows) & set(holdout_rows) and not set(train_rows) & set(extra["test_rows"])
    assert set(run.manifest["fingerprints"]) >= {"dataset", "test", "client_0_train", "client_0_holdout"}


def test_same_seed_same_run_other_seed_other_run(tiny_bert_dir, tmp_path):
    a = Federation(_config(tiny_bert_dir), out_dir=tmp_path / "a", progress=False).run()
    b = Federation(_config(tiny_bert_dir), out_dir=tmp_path / "b", progress=False).run()
    other_seed = _config(tiny_bert_dir)
    other_seed.seed = 1
    c = Federation(other_seed, out_dir=tmp_path / "c", progress=False).run()
    ga, gb, gc = (RunDir(x.run_dir).global_vector(2) for x in (a, b, c))
    assert torch.equal(ga, gb)
    assert not torch.equal(ga, gc)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from trustfl.config import RunConfig
    from trustfl.federation import Federation
    import json
    import torch
    torch.set_num_threads(int(sys.argv[3]))  # bit-exact equality needs the same intra-op thread count
    cfg = RunConfig.from_dict(json.loads(sys.argv[1]))

    def kill_in_round_2(report):
        if report.round == 2:
            os.kill(os.getpid(), signal.SIGKILL)   # a real kill, after training, before the commit

    Federation(cfg, out_dir=sys.argv[2], callbacks=[kill_in_round_2], progress=False).run()
""")


def test_resume_after_kill_equals_uninterrupted_run(tiny_bert_dir, tmp_path):
    cfg = _config(tiny_bert_dir, federation__rounds=3)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, json.dumps(cfg.to_dict()), str(tmp_path / "killed"),
                           str(torch.get_num_threads())],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    killed = RunDir(tmp_path / "killed")
    assert killed.completed_rounds == 1
    resumed = Federation(cfg, out_dir=tmp_path / "killed", resume=True, progress=False).run()
    assert resumed.rounds_completed == 3
    full = Federation(cfg, out_dir=tmp_path / "full", progress=False).run()
    a, b = RunDir(tmp_path / "killed"), RunDir(tmp_path / "full")
    a.verify()
    for r in range(4):
        assert torch.equal(a.global_vector(r), b.global_vector(r)), f"round {r} differs after resume"
    assert [m["round"] for m in a.metrics()] == [1, 2, 3]
    assert a.metrics()[-1]["eval"] == b.metrics()[-1]["eval"]
    assert resumed.final_metrics == full.final_metrics


def test_resume_with_a_different_config_is_refused(tiny_bert_dir, tmp_path):
    Federation(_config(tiny_bert_dir, federation__rounds=1), out_dir=tmp_path / "r", progress=False).run()
    other = _config(tiny_bert_dir, federation__rounds=1, client__lr=1e-2)
    with pytest.raises(Exception, match="client"):
        Federation(other, out_dir=tmp_path / "r", resume=True, progress=False).run()


@dataclass(frozen=True)
class _LaterSettings:
    """A config section 'added to trustfl after the run was recorded' (test_resume_of_a_run_recorded_before...)."""

    enabled: bool = False
    level: int = 3


def test_resume_of_a_run_recorded_before_a_setting_existed(tiny_bert_dir, tmp_path, monkeypatch):
    """A run recorded before a config section existed resumes when the section is at its default, and is
    refused when it is not; recorded values still win over today's defaults."""
    from trustfl import plugins
    from trustfl.rundir import ConfigMismatchError

    Federation(_config(tiny_bert_dir, federation__rounds=1), out_dir=tmp_path / "r", progress=False).run()
    monkeypatch.setitem(plugins._SECTIONS, "later", plugins.Section("later", _LaterSettings, "tests"))
    cfg = _config(tiny_bert_dir, federation__rounds=1)
    assert cfg.to_dict()["later"] == {"enabled": False, "level": 3}
    summary = Federation(cfg, out_dir=tmp_path / "r", resume=True, progress=False).run()
    assert summary.rounds_completed == 1
    with pytest.raises(ConfigMismatchError, match="later.level"):
        Federation(_config(tiny_bert_dir, federation__rounds=1, later__level=4), out_dir=tmp_path / "r",
                   resume=True, progress=False).run()
    with pytest.raises(ConfigMismatchError, match="client.lr"):
        Federation(_config(tiny_bert_dir, federation__rounds=1, client__lr=1e-2), out_dir=tmp_path / "r",
                   resume=True, progress=False).run()


class FlipAll(DataAttackStage):
    """Data attack for the hook test: every label becomes 0."""

    def __call__(self, dataset, *, client_id, seed, attackers):
        return dataset.map(lambda row: {"label": 0})


class ScaleAttack(UpdateAttackStage):
    """Update attack for the hook test: attackers send -10x their honest update; records what it saw."""

    omniscient = True

    def __init__(self):
        self.seen = []

    def __call__(self, updates, *, context):
        self.seen.append((context.round, list(context.attacker_ids), tuple(context.benign_updates.shape)))
        return -10.0 * updates


def test_data_and_update_attack_hooks(tiny_bert_dir, tmp_path):
    attack = ScaleAttack()
    cfg = _config(tiny_bert_dir, federation__rounds=1)
    from trustfl.attacks import AttackComponent

    fed = Federation(cfg, out_dir=tmp_path / "atk", progress=False,
                     components=[AttackComponent(data_attacks={1: FlipAll()}, update_attack=attack, attackers=[0])])
    fed.run()
    assert set(fed.client_train[1]["label"]) == {0}
    assert len(set(fed.client_train[2]["label"])) == 2 or len(fed.client_train[2]) < 5
    run = RunDir(tmp_path / "atk")
    assert attack.seen == [(1, [0], (3, fed.layout.size))]
    honest = Federation(cfg, out_dir=tmp_path / "honest", progress=False,
                        components=[AttackComponent(data_attacks={1: FlipAll()})])
    honest.run()
    h = RunDir(tmp_path / "honest")
    torch.testing.assert_close(run.client_update(1, 0)[0], -10.0 * h.client_update(1, 0)[0])
    assert torch.equal(run.client_update(1, 2)[0], h.client_update(1, 2)[0])
    assert run.metrics()[0]["attackers"] == [0, 1]  # update attacker 0 and data attacker 1
    assert run.metrics()[0]["detection"] == {"tp": 0, "fp": 0, "fn": 2, "tn": 2}  # FedAvg catches no one


def test_hook_misconfiguration_is_refused(tiny_bert_dir, tmp_path):
    cfg = _config(tiny_bert_dir)
    from trustfl.attacks import AttackComponent

    with pytest.raises(ConfigError, match="out of range"):
        Federation(cfg, out_dir=tmp_path / "x", components=[AttackComponent(attackers=[7], update_attack=ScaleAttack())])
    with pytest.raises(ConfigError, match="no attackers"):
        Federation(cfg, out_dir=tmp_path / "x", components=[AttackComponent(update_attack=ScaleAttack())])

    class PlainSum:
        def weighted_sum(self, updates, weights):
            return weights.to(updates.dtype) @ updates, float(weights.sum())

    with pytest.raises(ConfigError, match="save_client_updates"):
        Federation(cfg, out_dir=tmp_path / "x", secure_aggregation=PlainSum())


def test_secure_sum_hook_gives_the_fedavg_result(tiny_bert_dir, tmp_path):
    class PlainSum:  # the hook's contract, computed in the clear (the MPC version is a later issue)
        def __init__(self):
            self.calls = 0

        def weighted_sum(self, updates, weights):
            self.calls += 1
            return weights.to(updates.dtype) @ updates, float(weights.sum())

    secure = PlainSum()
    cfg = _config(tiny_bert_dir, federation__rounds=1, federation__save_client_updates=False)
    Federation(cfg, out_dir=tmp_path / "s", secure_aggregation=secure, progress=False).run()
    Federation(cfg, out_dir=tmp_path / "p", progress=False).run()
    assert secure.calls == 1
    torch.testing.assert_close(RunDir(tmp_path / "s").global_vector(1), RunDir(tmp_path / "p").global_vector(1))
    assert RunDir(tmp_path / "s").client_ids(1) == []
    # the server never held an individual update: no per-client norms or self-reported metrics are recorded
    secure_metrics = RunDir(tmp_path / "s").metrics()[0]
    assert "update_norms" not in secure_metrics and "client_metrics" not in secure_metrics


class RecordingSum:
    """A secure-sum hook computed in the clear that records the weights it was asked to use."""

    def __init__(self):
        self.weights = []

    def weighted_sum(self, updates, weights):
        self.weights.append(weights.clone())
        return weights.to(updates.dtype) @ updates, float(weights.sum())


def test_secure_sum_keeps_unweighted_fedavg_unweighted_and_runs_post_stages(tiny_bert_dir, tmp_path):
    """Formerly the loop computed total / wsum itself: FedAvg(weighted=False) silently became weighted and
    post-stages (DP noise) were silently skipped under secure aggregation."""
    from trustfl.defenses import build_pipeline

    cfg = _config(tiny_bert_dir, federation__rounds=1, federation__save_client_updates=False)
    unweighted = {"aggregator": "fedavg", "aggregator_options": {"weighted": False}}
    secure = RecordingSum()
    Federation(cfg, out_dir=tmp_path / "s", pipeline=build_pipeline(**unweighted), secure_aggregation=secure,
               progress=False).run()
    Federation(cfg, out_dir=tmp_path / "p", pipeline=build_pipeline(**unweighted), progress=False).run()
    assert torch.equal(secure.weights[0], torch.ones_like(secure.weights[0]))
    torch.testing.assert_close(RunDir(tmp_path / "s").global_vector(1), RunDir(tmp_path / "p").global_vector(1))
    from trustfl.types import Aggregate, PostStageBase

    class Shift(PostStageBase):
        def __init__(self, *, by: float = 1.0):
            self.by = by

        def __call__(self, aggregate, *, num_clients, generator=None, client_ids=None):
            return Aggregate(aggregate.vector + self.by, aggregate.info)

    shifted = build_pipeline(**unweighted)
    shifted.post.append(Shift(by=1.0))
    Federation(cfg, out_dir=tmp_path / "n", pipeline=shifted, secure_aggregation=RecordingSum(), progress=False).run()
    torch.testing.assert_close(RunDir(tmp_path / "n").global_vector(1), RunDir(tmp_path / "s").global_vector(1) + 1.0)


def test_callback_can_stop_the_run_cleanly(tiny_bert_dir, tmp_path):
    def stop_after_first(report):
        if report.round == 1:
            raise StopFederation("budget reached")
        return None

    def add_metric(report):
        return {"custom": report.round * 10}

    summary = Federation(_config(tiny_bert_dir, federation__rounds=3), out_dir=tmp_path / "s",
                         callbacks=[add_metric, stop_after_first], progress=False).run()
    assert summary.stopped_reason == "budget reached" and summary.rounds_completed == 1
    run = RunDir(tmp_path / "s")
    run.verify()
    assert run.metrics()[0]["custom"] == 10


def test_causal_lm_run_on_tweets_split_by_account(tiny_llama_dir, tmp_path):
    cfg = _config(tiny_llama_dir, model__task="causal_lm", lora__top_layers=1, federation__rounds=1,
                  data__name="health_tweets", data__max_records=600, partition__scheme="key",
                  partition__key_column="account", partition__num_clients=16, partition__alpha=None,
                  federation__clients_per_round=3)
    fed = Federation(cfg, out_dir=tmp_path / "lm", progress=False)
    summary = fed.run()
    assert summary.final_metrics["perplexity"] > 1.0 and summary.baseline_accuracy is None
    accounts = [set(fed.client_train[c]["account"][:]) for c in range(16)]
    assert all(len(a) == 1 for a in accounts) and len(set.union(*accounts)) == 16
    assert len(RunDir(tmp_path / "lm").client_ids(1)) == 3


def test_full_model_without_prefix_cache(tiny_bert_dir, tmp_path):
    cfg = _config(tiny_bert_dir, lora__top_layers=None, federation__rounds=1)
    fed = Federation(cfg, out_dir=tmp_path / "full", progress=False)
    fed.run()
    assert fed.trainer.prefix is None
    assert any(".layer.0." in n for n in fed.layout.names)


@pytest.mark.integration
def test_real_minilm_federation_beats_majority_baseline(tmp_path):
    """Real weights, real text: 2 rounds of MiniLM + LoRA (top 2 blocks, cached prefix) on sms_spam."""
    cfg = RunConfig.from_dict({
        "name": "real", "model": {"name": "minilm", "max_length": 48}, "lora": {"top_layers": 2},
        "data": {"name": "sms_spam", "max_records": 1500}, "partition": {"num_clients": 4, "alpha": 1.0},
        "client": {"lr": 1e-3, "batch_size": 16}, "federation": {"rounds": 2}})
    summary = Federation(cfg, out_dir=tmp_path / "real", progress=False).run()
    assert summary.final_metrics["accuracy"] > summary.baseline_accuracy + 0.05
    assert summary.final_metrics["macro_f1"] > 0.8


def test_disk_prefix_store_gives_identical_runs(tiny_bert_dir, tmp_path):
    store = str(tmp_path / "store")
    plain = Federation(_config(tiny_bert_dir, federation__rounds=1), out_dir=tmp_path / "a", progress=False).run()
    first = Federation(_config(tiny_bert_dir, federation__rounds=1, lora__prefix_cache_dir=store),
                       out_dir=tmp_path / "b", progress=False).run()
    files = sorted(p.name for p in (tmp_path / "store").rglob("*.safetensors"))
    assert len(files) == 5  # 4 clients + the test set
    second = Federation(_config(tiny_bert_dir, federation__rounds=1, lora__prefix_cache_dir=store),
                        out_dir=tmp_path / "c", progress=False).run()
    assert sorted(p.name for p in (tmp_path / "store").rglob("*.safetensors")) == files
    g = [RunDir(s.run_dir).global_vector(1) for s in (plain, first, second)]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])


def test_stateful_aggregator_sees_real_client_ids(tiny_bert_dir, tmp_path):
    """Client sampling changes which row is which client; FoolsGold must key its history by id."""
    from trustfl.defenses import FoolsGold

    fg = FoolsGold()
    cfg = _config(tiny_bert_dir, federation__rounds=2, federation__clients_per_round=2)
    fed = Federation(cfg, out_dir=tmp_path / "fg", pipeline=fg, progress=False)
    fed.run()
    sampled = sorted({c for m in fed.history for c in m["clients"]})
    state = fed.pipeline.state_dict()
    ids_key = next(k for k in state if k.endswith("client_ids"))
    assert sorted(state[ids_key].tolist()) == sampled


@pytest.mark.parametrize("head_lr", [None, 4.0])
def test_sgd_client_step_equals_a_hand_computed_sgd_step(tiny_bert_dir, tmp_path, head_lr):
    """optimizer = 'sgd': one full-batch local step moves each parameter by exactly -lr * gradient,
    with the head's own ``head_lr`` when set."""
    cfg = _config(tiny_bert_dir, client__optimizer="sgd", client__lr=0.5, client__max_steps=1,
                  client__batch_size=10_000, client__max_grad_norm=None, client__head_lr=head_lr,
                  lora__cache_prefix=False, federation__rounds=1)
    fed = Federation(cfg, out_dir=tmp_path / "sgd", progress=False)
    fed.setup()
    trainer, examples = fed.trainer, fed.engine.client_examples[0]
    start = fed.layout.flatten(fed.model)
    for module in fed.model.modules():  # no dropout: both paths are then deterministic
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    result = trainer.train(0, examples, start, round=1, seed=0)
    fed.layout.load_into(fed.model, start)
    batch = trainer.batcher(examples)
    params = [p for p in fed.model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(trainer.forward(batch).loss, params)
    names = [n for n, p in fed.model.named_parameters() if p.requires_grad]
    lrs = [head_lr if head_lr is not None and "modules_to_save" in n else 0.5 for n in names]
    expected = torch.cat([-lr * g.reshape(-1) for lr, g in zip(lrs, grads)])
    assert head_lr is None or any("modules_to_save" in n for n in names)
    torch.testing.assert_close(result.delta, expected, atol=1e-6, rtol=1e-4)
