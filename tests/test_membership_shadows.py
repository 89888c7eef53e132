"""Shadow adapters trained by the real federated loop: cached, resumable, membership recorded, losses right."""

from __future__ import annotations

import json

import pytest
import torch

from trustfl.attacks.membership import (LiRA, MembershipError, RMIA, ShadowSet, lira_scores, lira_statistic,
                                        per_record_loss, rmia_log_scores, train_shadow_adapters)
from trustfl.attacks.membership.shadows import shadow_recipe
from trustfl.config import RunConfig


def _config(model_dir: str, **over) -> RunConfig:
    data = {
        "name": "target", "seed": 0,
        "model": {"name": model_dir, "max_length": 24},
        "lora": {"r": 2, "top_layers": 1},
        "data": {"name": "sms_spam", "max_records": 200, "holdout_fraction": 0.1},
        "partition": {"num_clients": 2, "scheme": "iid"},
        "client": {"batch_size": 8, "max_steps": 2, "lr": 5e-3},
        "federation": {"rounds": 1},
    }
    for key, value in over.items():
        section, field = key.split("__")
        data.setdefault(section, {})[field] = value
    return RunConfig.from_dict(data)


@pytest.fixture(scope="module")
def pool():
    from trustfl.data import load_dataset_source

    ds = load_dataset_source("sms_spam").shuffle(seed=0)
    return ds.select(range(80)), ds.select(range(80, 100))  # shadow pool, disjoint candidates


@pytest.fixture(scope="module")
def shadows(tiny_bert_dir, pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("shadows")
    return train_shadow_adapters(_config(tiny_bert_dir), pool[0], 2, out / "s", rounds=1)


def test_shadows_record_membership_and_resume(shadows, pool, tiny_bert_dir):
    population, candidates = pool
    assert len(shadows) == 2
    mask = shadows.membership(population)
    assert mask.shape == (2, 80)
    # each shadow drew half the pool, then the loop's own test (20%) and holdout (10%) splits removed some
    for row in mask:
        assert 15 <= int(row.sum()) <= 40
    assert not torch.equal(mask[0], mask[1])  # different random subsets
    assert not shadows.membership(candidates).any()  # disjoint records are OUT of every shadow
    assert not list(shadows.out_dir.rglob(".subset.jsonl"))  # the subset's text file is gone after training
    meta = json.loads((shadows.out_dir / "shadow_000" / "meta.json").read_text())
    assert all(len(h) == 64 for h in meta["members"])  # hashes, not text
    before = (shadows.out_dir / "shadow_000" / "adapter.safetensors").stat().st_mtime_ns
    again = train_shadow_adapters(_config(tiny_bert_dir), population, 2, shadows.out_dir, rounds=1)
    assert (shadows.out_dir / "shadow_000" / "adapter.safetensors").stat().st_mtime_ns == before  # reused
    assert torch.equal(again.membership(population), mask)
    assert len(ShadowSet.open(shadows.out_dir)) == 2


def test_shadow_losses_equal_per_record_loss(shadows, pool):
    _, candidates = pool
    losses = shadows.losses(candidates, batch_size=7)  # prefix computed once, replayed per shadow
    assert losses.shape == (2, 20) and losses.dtype == torch.float64
    for i in range(2):
        model, tok = shadows.model(i)
        want = per_record_loss(model, candidates, tokenizer=tok, task="classification", max_length=24)
        torch.testing.assert_close(losses[i], want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(losses[0], losses[1])  # two different adapters


def test_lira_and_rmia_fit_from_shadows(shadows, pool):
    """Fitted from a ShadowSet, LiRA and RMIA give the formulas applied by hand to the shadows' and the target's
    losses (shadow 0 as the target)."""
    population, candidates = pool
    target, tok = shadows.model(0)
    kw = dict(tokenizer=tok, task="classification", max_length=24)
    sl, inside = shadows.losses(population), shadows.membership(population)
    s = LiRA(online=True).fit(shadow_losses=torch.cat([sl, sl]), shadow_in=torch.cat([inside, ~inside])).score(
        target, population, **kw)
    t = lira_statistic(per_record_loss(target, population, **kw), task="classification")
    want = lira_scores(t, lira_statistic(torch.cat([sl, sl]), task="classification"), torch.cat([inside, ~inside]),
                       online=True, fix_variance=True)  # fewer than 64 shadows: the paper's global variance
    assert s.shape == (80,)
    torch.testing.assert_close(s, want, rtol=1e-9, atol=1e-9)
    x, z = candidates.select(range(10)), candidates.select(range(10, 20))
    r = RMIA().fit(reference_losses=shadows.losses(x), population=z,
                   population_reference_losses=shadows.losses(z)).score(target, x, **kw)
    want = rmia_log_scores(-per_record_loss(target, x, **kw), -shadows.losses(x), -per_record_loss(target, z, **kw),
                           -shadows.losses(z), gamma=1.0, offline_a=0.3)
    torch.testing.assert_close(r, want, rtol=0, atol=0)
    assert len(set(r.tolist())) > 1  # not a constant score


def test_shadow_cache_survives_new_default_settings_but_not_changed_ones(tiny_bert_dir, pool, shadows, tmp_path):
    """A config key added to trustfl since the shadows were trained (at its default) reuses them; a changed
    training setting is refused (never mixed)."""
    import shutil

    population, _ = pool
    out = tmp_path / "copy"
    shutil.copytree(shadows.out_dir, out)
    head = json.loads((out / "shadows.json").read_text())
    del head["config"]["secure_aggregation"]  # as if written before that plug-in section existed
    del head["config"]["federation"]["flower"]["round_timeout"]
    (out / "shadows.json").write_text(json.dumps(head))
    before = (out / "shadow_001" / "adapter.safetensors").read_bytes()
    again = train_shadow_adapters(_config(tiny_bert_dir), population, 2, out, rounds=1)
    assert (out / "shadow_001" / "adapter.safetensors").read_bytes() == before and len(again) == 2
    with pytest.raises(MembershipError, match=r"config client\.lr"):
        train_shadow_adapters(_config(tiny_bert_dir, client__lr=1e-2), population, 2, out, rounds=1)
    head["config"]["federation"]["flower"]["round_timeout"] = 1.0  # recorded, now different
    (out / "shadows.json").write_text(json.dumps(head))
    with pytest.raises(MembershipError, match="round_timeout"):
        train_shadow_adapters(_config(tiny_bert_dir), population, 2, out, rounds=1)
    head["config"]["federation"]["flower"].pop("round_timeout")
    head["config"]["dedup"] = {"enabled": True}  # recorded with another value (the rest of the section: defaults)
    (out / "shadows.json").write_text(json.dumps(head))
    with pytest.raises(MembershipError, match="dedup"):
        train_shadow_adapters(_config(tiny_bert_dir), population, 2, out, rounds=1)


def test_shadow_hostile(tiny_bert_dir, pool, tmp_path, shadows):
    population, _ = pool
    cfg = _config(tiny_bert_dir)
    with pytest.raises(MembershipError, match="n="):
        train_shadow_adapters(cfg, population, 0, tmp_path / "a")
    with pytest.raises(MembershipError, match="in_fraction"):
        train_shadow_adapters(cfg, population, 1, tmp_path / "a", in_fraction=0.0)
    with pytest.raises(MembershipError, match="empty"):
        train_shadow_adapters(cfg, [], 1, tmp_path / "a")
    with pytest.raises(MembershipError, match="RunConfig"):
        train_shadow_adapters({"model": {}}, population, 1, tmp_path / "a")
    with pytest.raises(MembershipError, match="different"):  # same dir, another pool
        train_shadow_adapters(cfg, population.select(range(40)), 2, shadows.out_dir, rounds=1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "precious.txt").write_text("x")
    with pytest.raises(MembershipError, match="not a shadow directory"):
        train_shadow_adapters(cfg, population, 1, tmp_path / "busy")
    assert (tmp_path / "busy" / "precious.txt").read_text() == "x"
    with pytest.raises(MembershipError, match="lacks classes"):
        spam_only = population.filter(lambda r: r["label"] == 0).select(range(3))
        train_shadow_adapters(cfg, spam_only, 1, tmp_path / "b", in_fraction=0.4)
    with pytest.raises(MembershipError, match="shadows.json"):
        ShadowSet.open(tmp_path)


def test_shadows_use_the_local_engine_and_plant_the_targets_canaries(tiny_bert_dir, pool, tmp_path):
    """A target on Flower with canaries: its shadows run the same training on the local engine, canaries planted
    as the target planted them (part of its recipe); shadows.json records the overrides, and a set trained with
    another recipe (no canaries) is refused rather than reused."""
    import shutil

    population, _ = pool
    cfg = _config(tiny_bert_dir, canaries__count=6, federation__engine="flower")
    got = train_shadow_adapters(cfg, population, 1, tmp_path / "s", rounds=1)
    assert set(got.overrides) == {"federation.engine"}
    head = json.loads((tmp_path / "s" / "shadows.json").read_text())
    assert head["overrides"] == got.overrides and head["config"]["canaries"]["count"] == 6
    assert head["config"]["federation"]["engine"] == "local" and got.config.federation.engine == "local"
    manifest = json.loads((tmp_path / "s" / "shadow_000" / "run" / "manifest.json").read_text())
    assert manifest["config"]["canaries"]["count"] == 6 and manifest["config"]["federation"]["engine"] == "local"
    assert any(r < 0 for c in manifest["extra"]["clients"].values() for r in c["train_rows"])  # planted rows
    assert ShadowSet.open(tmp_path / "s").overrides == got.overrides
    # a set trained without the canaries: a different recipe
    shutil.copytree(tmp_path / "s", tmp_path / "old")
    old = json.loads((tmp_path / "old" / "shadows.json").read_text())
    old["config"]["canaries"]["count"] = 0
    (tmp_path / "old" / "shadows.json").write_text(json.dumps(old))
    with pytest.raises(MembershipError, match="canaries.count"):
        train_shadow_adapters(cfg, population, 2, tmp_path / "old", rounds=1)


def test_shadow_recipe_turns_secure_aggregation_into_its_plaintext_equivalent(tiny_bert_dir):
    base = _config(tiny_bert_dir, federation__sampling="poisson", federation__save_client_updates=False,
                   server__aggregator_options={"weighted": False}).to_dict()
    noisy = json.loads(json.dumps(base))
    noisy["secure_aggregation"].update(enabled=True, norm_bound=0.5, noise_multiplier=1.2, delta=1e-6)
    RunConfig.from_dict(noisy)  # a valid target
    recipe, why = shadow_recipe(noisy)
    cfg = RunConfig.from_dict(recipe)
    assert not cfg.secure_aggregation.enabled and cfg.server.pre == base["server"]["pre"]
    c = cfg.privacy.client
    assert (c.noise_multiplier, c.clip_norm, c.delta, c.adaptive, c.max_epsilon) == (1.2, 0.5, 1e-6, False, None)
    assert "privacy.client" in why["secure_aggregation"]
    bounded = json.loads(json.dumps(base))
    bounded["secure_aggregation"].update(enabled=True, norm_bound=0.5, cosine_threshold=0.1)
    RunConfig.from_dict(bounded)
    recipe, why = shadow_recipe(bounded)
    cfg = RunConfig.from_dict(recipe)
    assert cfg.server.pre == [{"name": "norm_clip", "max_norm": 0.5}] and cfg.privacy.client is None
    assert "cosine_threshold" in why["secure_aggregation"]
    plain = json.loads(json.dumps(base))
    plain["secure_aggregation"]["enabled"] = True
    recipe, why = shadow_recipe(plain)
    assert recipe == base and set(why) == {"secure_aggregation"}  # the secure sum is the plain sum
    assert shadow_recipe(base) == (base, {})
    flower = _config(tiny_bert_dir, federation__engine="flower", federation__save_client_updates=False).to_dict()
    flower["federation"]["flower"].update(secure_aggregation="secaggplus", round_timeout=30.0)
    RunConfig.from_dict(flower)
    recipe, why = shadow_recipe(flower)
    assert set(why) == {"federation.engine", "federation.flower"}
    assert RunConfig.from_dict(recipe).federation.flower.secure_aggregation == "none"  # valid on the local engine
    bounded["secure_aggregation"].update(over_bound="zero", cosine_threshold=None)
    RunConfig.from_dict(bounded)
    with pytest.raises(MembershipError, match="over_bound = 'zero'"):
        shadow_recipe(bounded)
