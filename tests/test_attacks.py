"""Attacks against independent references written from the papers' definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from trustfl.attacks import (ALIE, IPM, DistributedBackdoor, GaussianUpdate, LabelFlip, MinMax, MinSum, Scaling,
                             SignFlip, TextBackdoor, available_attacks, make_attack)
from trustfl.data import make_dataset
from trustfl.types import AttackContext


def _ctx(benign: torch.Tensor | None, k: int = 2, seed: int = 0) -> AttackContext:
    d = benign.shape[1] if benign is not None else 5
    return AttackContext(round=1, attacker_ids=list(range(k)), global_vector=torch.zeros(d),
                         benign_updates=benign, generator=torch.Generator().manual_seed(seed))


def _benign(m: int = 8, d: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g) + 0.5


def test_alie_matches_paper_formula():
    benign = _benign(16, 40).double()
    honest = torch.randn(4, 40).double()
    out = ALIE()(honest, context=_ctx(benign, k=4))
    n, f = 20, 4
    s = np.floor(n / 2 + 1) - f
    z = norm.ppf((n - s) / n)
    b = benign.numpy()
    expected = b.mean(0) - z * b.std(0)
    np.testing.assert_allclose(out.numpy(), np.tile(expected, (4, 1)), rtol=1e-9)
    assert ALIE.z_max(20, 4) == pytest.approx(z)


def test_ipm_and_simple_attacks():
    benign = _benign()
    honest = torch.randn(3, benign.shape[1])
    torch.testing.assert_close(IPM(epsilon=0.5)(honest, context=_ctx(benign, 3)),
                               (-0.5 * benign.double().mean(0)).float().expand(3, -1))
    torch.testing.assert_close(SignFlip(scale=2)(honest, context=_ctx(None)), -2 * honest)
    torch.testing.assert_close(Scaling(factor=5)(honest, context=_ctx(None)), 5 * honest)
    a = GaussianUpdate(std=3.0)(torch.zeros(2, 20_000), context=_ctx(None, seed=1))
    b = GaussianUpdate(std=3.0)(torch.zeros(2, 20_000), context=_ctx(None, seed=1))
    assert torch.equal(a, b) and a.std().item() == pytest.approx(3.0, rel=0.02)


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 12), st.integers(2, 40), st.integers(0, 1000), st.sampled_from(["unit_vec", "std", "sign"]))
def test_min_max_and_min_sum_satisfy_their_constraints_tightly(m, d, seed, perturbation):
    benign = _benign(m, d, seed).double()
    b = benign.numpy()
    pair = ((b[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    mean = b.mean(0)
    for attack, ok in (
        (MinMax(perturbation=perturbation), lambda v: ((b - v) ** 2).sum(1).max() <= pair.max() + 1e-9),
        (MinSum(perturbation=perturbation), lambda v: ((b - v) ** 2).sum() <= pair.sum(1).max() + 1e-9),
    ):
        out = attack(torch.zeros(2, d, dtype=torch.float64), context=_ctx(benign)).numpy()
        assert np.allclose(out[0], out[1])
        assert ok(out[0]), type(attack).__name__
        # tight: pushing further along the same direction breaks the constraint
        direction = out[0] - mean
        if np.linalg.norm(direction) > 1e-9:
            assert not ok(mean + 1.05 * direction + 1e-6 * np.sign(direction)), type(attack).__name__


def test_omniscient_attacks_fall_back_to_own_updates():
    honest = _benign(4, 10)
    out = IPM(epsilon=1.0)(honest, context=_ctx(None, 4))
    torch.testing.assert_close(out[0], -honest.double().mean(0).float())


def _ds(n=40):
    texts = [f"message number {i} about things" for i in range(n)]
    return make_dataset(texts, [i % 3 for i in range(n)], names=["a", "b", "c"], source="test")


def test_label_flip():
    ds = _ds()
    flipped = LabelFlip(source=1, target=2)(ds, client_id=0, seed=0, attackers=[0])
    old, new = ds["label"][:], flipped["label"][:]
    assert [y2 for y, y2 in zip(old, new) if y == 1] == [2] * old.count(1)
    assert all(y2 == y for y, y2 in zip(old, new) if y != 1)
    rand = LabelFlip(mode="random", num_classes=3)(ds, client_id=0, seed=0, attackers=[0])["label"][:]
    assert all(a != b for a, b in zip(old, rand))
    with pytest.raises(ValueError, match="distinct source and target"):
        LabelFlip(source=1, target=1)


def test_backdoor_poisons_exact_fraction_and_success_set():
    ds = _ds(40)
    attack = TextBackdoor(trigger="cf", target=0, poison_fraction=0.25)
    out = attack(ds, client_id=3, seed=0, attackers=[3])
    poisoned = [i for i, t in enumerate(out["text"][:]) if "cf" in t.split()]
    assert len(poisoned) == 10 and all(out["label"][i] == 0 for i in poisoned)
    assert attack(ds, client_id=3, seed=0, attackers=[3])["text"][:] == out["text"][:]  # seeded
    success, target = attack.success_set(ds)
    assert target == 0 and len(success) == sum(1 for y in ds["label"][:] if y != 0)
    assert all("cf" in t.split() for t in success["text"][:]) and 0 not in success["label"][:]


def test_dba_splits_the_trigger_among_attackers():
    attack = DistributedBackdoor(pieces=["cf", "mn"], poison_fraction=1.0)
    a = attack(_ds(10), client_id=4, seed=0, attackers=[4, 7])["text"][:]
    b = attack(_ds(10), client_id=7, seed=0, attackers=[4, 7])["text"][:]
    assert all("cf" in t.split() and "mn" not in t.split() for t in a)
    assert all("mn" in t.split() and "cf" not in t.split() for t in b)
    success, _ = attack.success_set(_ds(10))
    assert all("cf mn" in t for t in success["text"][:])


def test_registry():
    assert set(available_attacks("update")) >= {"alie", "ipm", "min_max", "min_sum", "scaling", "sign_flip"}
    assert set(available_attacks("data")) >= {"label_flip", "backdoor", "dba"}
    assert isinstance(make_attack("update", {"name": "ALIE", "z": 1.0}), ALIE)
    with pytest.raises(ValueError, match="valid names"):
        make_attack("update", {"name": "nope"})
    with pytest.raises(ValueError, match="bad options"):
        make_attack("update", {"name": "ipm", "eps": 1})


def test_configured_backdoor_with_scaling_reports_asr_and_detection(tiny_bert_dir, tmp_path):
    from trustfl.config import RunConfig
    from trustfl.federation import Federation
    from trustfl.rundir import RunDir

    cfg = RunConfig.from_dict({
        "model": {"name": tiny_bert_dir, "max_length": 24}, "lora": {"r": 2, "top_layers": 1},
        "data": {"name": "sms_spam", "max_records": 200}, "partition": {"num_clients": 4},
        "client": {"max_steps": 2}, "federation": {"rounds": 1},
        "attack": {"data": {"name": "backdoor", "target": 1}, "update": {"name": "scaling", "factor": 4.0},
                   "fraction": 0.25}})
    fed = Federation(cfg, out_dir=tmp_path / "bd", progress=False)
    fed.run()
    assert len(fed.malicious) == 1 and fed.attackers == fed.malicious
    m = RunDir(tmp_path / "bd").metrics()[0]
    assert 0.0 <= m["eval"]["attack_success_rate"] <= 1.0
    assert sum(m["detection"].values()) == len(m["clients"])
