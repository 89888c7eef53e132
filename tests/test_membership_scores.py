"""Reference, zlib, Min-K%, Min-K%++ against hand computations; LiRA and RMIA math against scipy / a loop."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
from scipy import stats

from trustfl.attacks.membership import (LiRA, LiRAOnline, MembershipError, MinKPlusPlusAttack, MinKProbAttack,
                                        ReferenceAttack, RMIA, ZlibAttack, lira_scores, lira_statistic,
                                        per_record_loss, rmia_scores)

from membership_models import TEXTS, hand_lm_tokens  # tiny_lm / tiny_clf fixtures: tests/conftest.py

RECS = [{"text": t} for t in TEXTS]


def test_zlib_matches_hand(tiny_lm):
    model, tok = tiny_lm
    got = ZlibAttack().score(model, RECS, tokenizer=tok, task="causal_lm")
    want = [hand_lm_tokens(model, tok, t)[0].mean() / len(zlib.compress(t.encode())) for t in TEXTS]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("k", [0.2, 0.5, 1.0])
def test_min_k_matches_hand(tiny_lm, k):
    model, tok = tiny_lm
    got = MinKProbAttack(k=k).score(model, RECS, tokenizer=tok, task="causal_lm", batch_size=2)
    want = []
    for t in TEXTS:
        lp = np.sort(hand_lm_tokens(model, tok, t)[0])
        want.append(lp[:max(1, int(k * len(lp)))].mean())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_min_k_plus_plus_matches_hand(tiny_lm):
    model, tok = tiny_lm
    got = MinKPlusPlusAttack(k=0.5).score(model, RECS, tokenizer=tok, task="causal_lm", batch_size=3)
    want = []
    for t in TEXTS:
        tgt_lp, all_lp = hand_lm_tokens(model, tok, t)
        p = np.exp(all_lp)
        mu = (p * all_lp).sum(1)
        sd = np.sqrt((p * all_lp ** 2).sum(1) - mu ** 2)
        z = np.sort((tgt_lp - mu) / sd)
        want.append(z[:max(1, int(0.5 * len(z)))].mean())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-8)


def test_reference_base_is_loss_difference_to_disabled_adapter(tiny_lm):
    model, tok = tiny_lm
    got = ReferenceAttack().fit(reference="base").score(model, RECS, tokenizer=tok, task="causal_lm")
    target = np.array([-hand_lm_tokens(model, tok, t)[0].mean() for t in TEXTS])
    with model.disable_adapter():
        base = np.array([-hand_lm_tokens(model, tok, t)[0].mean() for t in TEXTS])
    np.testing.assert_allclose(got.numpy(), base - target, rtol=1e-5, atol=1e-9)
    assert not np.allclose(base, target)  # the adapter matters, so the reference is not the target
    # a model as reference, and precomputed reference losses, give the same numbers
    same = ReferenceAttack().fit(reference=model).score(model, RECS, tokenizer=tok, task="causal_lm")
    assert torch.allclose(same, torch.zeros(len(TEXTS), dtype=torch.float64))
    pre = ReferenceAttack().fit(reference_losses=torch.tensor(base)).score(model, RECS, tokenizer=tok,
                                                                           task="causal_lm")
    np.testing.assert_allclose(pre.numpy(), got.numpy(), rtol=1e-6)


def test_reference_hostile(tiny_lm, tiny_clf):
    model, tok = tiny_lm
    with pytest.raises(MembershipError, match="call fit"):
        ReferenceAttack().score(model, RECS, tokenizer=tok, task="causal_lm")
    with pytest.raises(MembershipError, match="same records"):
        ReferenceAttack().fit(reference_losses=[1.0, 2.0]).score(model, RECS, tokenizer=tok, task="causal_lm")
    with pytest.raises(MembershipError, match="NaN"):
        ReferenceAttack().fit(reference_losses=[float("nan")])
    with pytest.raises(MembershipError, match="not both"):
        ReferenceAttack().fit(reference="base", reference_losses=[1.0])
    clf, ctok = tiny_clf
    with pytest.raises(MembershipError, match="PeftModel|causal_lm"):
        ReferenceAttack().fit().score(clf, [{"text": "a b", "label": 0}], tokenizer=ctok, task="classification")
    with pytest.raises(MembershipError, match="task="):
        ZlibAttack().score(clf, [{"text": "a b", "label": 0}], tokenizer=ctok, task="classification")
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(MembershipError, match="k="):
            MinKProbAttack(k=bad)
    assert MinKPlusPlusAttack(k=0.3).get_config() == {"name": "min_k_pp", "k": 0.3}


# ---------------------------------------------------------------------- LiRA math
def test_lira_statistic_is_logit_confidence():
    p = np.array([0.1, 0.5, 0.9, 0.999999])
    got = lira_statistic(torch.tensor(-np.log(p)), task="classification").numpy()
    np.testing.assert_allclose(got, np.log(p / (1 - p)), rtol=1e-9)
    assert torch.equal(lira_statistic([0.3, 1.2], task="causal_lm"), -torch.tensor([0.3, 1.2], dtype=torch.float64))
    assert torch.isfinite(lira_statistic([0.0], task="classification")).all()  # p = 1 exactly stays finite


def test_lira_offline_and_online_match_scipy():
    rng = np.random.default_rng(0)
    m, n = 8, 6
    shadow = rng.normal(size=(m, n))
    keep = rng.random((m, n)) < 0.5
    keep[0], keep[1] = True, False  # every record has IN and OUT shadows
    keep[2], keep[3] = True, False
    target = rng.normal(size=n)
    off = lira_scores(target, shadow, keep, online=False, fix_variance=False).numpy()
    on = lira_scores(target, shadow, keep, online=True, fix_variance=False).numpy()
    for j in range(n):
        out, inn = shadow[~keep[:, j], j], shadow[keep[:, j], j]
        assert off[j] == pytest.approx(stats.norm.logcdf(target[j], out.mean(), out.std()), rel=1e-9)
        want = stats.norm.logpdf(target[j], inn.mean(), inn.std()) - stats.norm.logpdf(target[j], out.mean(), out.std())
        assert on[j] == pytest.approx(want, rel=1e-9)
    # global variance: one pooled std over all OUT deviations
    fixed = lira_scores(target, shadow, keep, online=False, fix_variance=True).numpy()
    dev = np.concatenate([shadow[~keep[:, j], j] - shadow[~keep[:, j], j].mean() for j in range(n)])
    sd = np.sqrt((dev ** 2).mean())
    for j in range(n):
        assert fixed[j] == pytest.approx(stats.norm.logcdf(target[j], shadow[~keep[:, j], j].mean(), sd), rel=1e-9)


def test_lira_separates_synthetic_members():
    """A target statistic drawn from the IN distribution scores higher than one drawn from OUT."""
    rng = np.random.default_rng(1)
    m, n = 16, 400
    mu_out, mu_in = rng.normal(size=n), None
    mu_in = mu_out + 1.0
    keep = np.zeros((m, n), dtype=bool)
    keep[: m // 2] = True
    shadow = np.where(keep, mu_in, mu_out) + 0.3 * rng.normal(size=(m, n))
    member = rng.random(n) < 0.5
    target = np.where(member, mu_in, mu_out) + 0.3 * rng.normal(size=n)
    from sklearn.metrics import roc_auc_score

    for online in (False, True):
        s = lira_scores(target, shadow, keep, online=online, fix_variance=True).numpy()
        assert roc_auc_score(member, s) > 0.95


def test_lira_fill_missing_matches_hand():
    """Few shadows: a record IN no shadow (or in all) gets the other side's mean + / - the mean IN - OUT gap of the
    records with both sides; one pooled std per side around those means (Carlini et al. 2022, global variance)."""
    rng = np.random.default_rng(3)
    m, n = 6, 7
    shadow = rng.normal(size=(m, n))
    keep = rng.random((m, n)) < 0.5
    keep[:, 0] = False   # record 0: IN no shadow
    keep[:, 1] = True    # record 1: IN every shadow
    keep[0, 2:], keep[1, 2:] = True, False  # the others have both sides
    target = rng.normal(size=n)
    both = list(range(2, n))
    mi = np.array([shadow[keep[:, j], j].mean() if keep[:, j].any() else np.nan for j in range(n)])
    mo = np.array([shadow[~keep[:, j], j].mean() if (~keep[:, j]).any() else np.nan for j in range(n)])
    gap = np.mean([mi[j] - mo[j] for j in both])
    mi[0], mo[1] = mo[0] + gap, mi[1] - gap
    sd_in = np.sqrt(np.sum([(shadow[i, j] - mi[j]) ** 2 for i in range(m) for j in range(n) if keep[i, j]])
                    / keep.sum())
    sd_out = np.sqrt(np.sum([(shadow[i, j] - mo[j]) ** 2 for i in range(m) for j in range(n) if not keep[i, j]])
                     / (~keep).sum())
    on = lira_scores(target, shadow, keep, online=True, fix_variance=True, fill_missing=True).numpy()
    off = lira_scores(target, shadow, keep, online=False, fix_variance=True, fill_missing=True).numpy()
    for j in range(n):
        want = stats.norm.logpdf(target[j], mi[j], sd_in) - stats.norm.logpdf(target[j], mo[j], sd_out)
        assert on[j] == pytest.approx(want, rel=1e-9)
        assert off[j] == pytest.approx(stats.norm.logcdf(target[j], mo[j], sd_out), rel=1e-9)
    # records with both sides: filling changes nothing but the (pooled, per side) variance
    with pytest.raises(MembershipError, match="has no (IN|OUT) shadow"):
        lira_scores(target, shadow, keep, online=True, fix_variance=True)
    with pytest.raises(MembershipError, match="needs fix_variance"):
        lira_scores(target, shadow, keep, online=True, fix_variance=False, fill_missing=True)
    with pytest.raises(MembershipError, match="both IN and OUT"):
        lira_scores(target, shadow, np.zeros_like(keep), online=True, fix_variance=True, fill_missing=True)
    with pytest.raises(MembershipError, match="fill_missing"):
        LiRA(fill_missing="yes")  # type: ignore[arg-type]
    with pytest.raises(MembershipError, match="pooled variance"):
        LiRAOnline(fix_variance=False)
    with pytest.raises(MembershipError, match="shadow_in is required"):
        LiRAOnline().fit(shadow_losses=[[1.0]])
    assert LiRAOnline().online and LiRAOnline.name == "lira_online"


def test_lira_hostile():
    with pytest.raises(MembershipError, match="same records"):
        lira_scores([1.0, 2.0], [[1.0, 2.0, 3.0]], online=False, fix_variance=True)
    with pytest.raises(MembershipError, match="no IN shadow"):
        lira_scores([1.0], [[1.0], [2.0]], [[False], [False]], online=True, fix_variance=True)
    with pytest.raises(MembershipError, match="fewer than 2"):
        lira_scores([1.0], [[1.0]], online=False, fix_variance=False)
    with pytest.raises(MembershipError, match="NaN"):
        lira_scores([1.0], [[float("nan")]], online=False, fix_variance=True)
    with pytest.raises(MembershipError, match="shadow_in is required"):
        LiRA(online=True).fit(shadow_losses=[[1.0]])
    with pytest.raises(MembershipError, match="online="):
        LiRA(online="yes")  # type: ignore[arg-type]
    with pytest.raises(MembershipError, match="shape"):
        LiRA().fit(shadow_losses=[[1.0, 2.0]], shadow_in=[[True]])


def test_lira_end_to_end_on_tiny_model(tiny_clf):
    """Shadows = the target itself (IN) and perturbed copies; the fitted attack scores the target's own losses."""
    model, tok = tiny_clf
    recs = [{"text": t, "label": i % 3} for i, t in enumerate(TEXTS)]
    base = per_record_loss(model, recs, tokenizer=tok, task="classification")
    shadow = torch.stack([base + d for d in (0.5, 0.7, 0.9, 1.1)])  # OUT shadows: higher loss
    s = LiRA(online=False).fit(shadow_losses=shadow).score(model, recs, tokenizer=tok, task="classification")
    want = lira_scores(lira_statistic(base, task="classification"), lira_statistic(shadow, task="classification"),
                       online=False, fix_variance=True)
    assert torch.allclose(s, want) and (s > math.log(0.5)).all()  # target fits better than every OUT shadow
    with pytest.raises(MembershipError, match="same records"):
        LiRA().fit(shadow_losses=shadow[:, :2]).score(model, recs, tokenizer=tok, task="classification")


# ---------------------------------------------------------------------- RMIA math
def rmia_loop(px, rx, pz, rz, gamma, a):
    def prior(r):
        mean = r.mean(0)
        return mean if a is None else ((1 + a) * mean + (1 - a)) / 2

    prx, prz = prior(rx), prior(rz)
    return np.array([np.mean([(px[i] / prx[i]) / (pz[j] / prz[j]) >= gamma for j in range(len(pz))])
                     for i in range(len(px))])


@pytest.mark.parametrize("m", [1, 2, 4])
@pytest.mark.parametrize("gamma, a", [(1.0, 0.3), (2.0, None), (1.5, 0.0)])
def test_rmia_matches_pairwise_loop(m, gamma, a):
    rng = np.random.default_rng(m)
    px, pz = rng.uniform(0.01, 1, 7), rng.uniform(0.01, 1, 25)
    rx, rz = rng.uniform(0.01, 1, (m, 7)), rng.uniform(0.01, 1, (m, 25))
    got = rmia_scores(px, rx, pz, rz, gamma=gamma, offline_a=a).numpy()
    np.testing.assert_allclose(got, rmia_loop(px, rx, pz, rz, gamma, a))


def test_rmia_hostile_and_end_to_end(tiny_clf):
    with pytest.raises(MembershipError, match="shapes"):
        rmia_scores([0.5], [[0.5, 0.5]], [0.5], [[0.5]])
    with pytest.raises(MembershipError, match="probabilities"):
        rmia_scores([1.5], [[0.5]], [0.5], [[0.5]])
    with pytest.raises(MembershipError, match="gamma"):
        RMIA(gamma=0)
    with pytest.raises(MembershipError, match="offline_a"):
        RMIA(offline_a=2.0)
    model, tok = tiny_clf
    recs = [{"text": t, "label": i % 3} for i, t in enumerate(TEXTS)]
    pop = [{"text": f"population record number {i}", "label": i % 3} for i in range(6)]
    with pytest.raises(MembershipError, match="population records"):
        RMIA().fit(reference_losses=[[1.0] * 5], population=pop, population_reference_losses=[[1.0] * 4])
    lx = per_record_loss(model, recs, tokenizer=tok, task="classification")
    lz = per_record_loss(model, pop, tokenizer=tok, task="classification")
    ref_x, ref_z = torch.stack([lx + 0.2, lx + 0.4]), torch.stack([lz + 0.3, lz + 0.3])
    s = RMIA().fit(reference_losses=ref_x, population=pop, population_reference_losses=ref_z).score(
        model, recs, tokenizer=tok, task="classification")
    want = rmia_loop(np.exp(-lx.numpy()), np.exp(-ref_x.numpy()), np.exp(-lz.numpy()), np.exp(-ref_z.numpy()), 1.0, 0.3)
    np.testing.assert_allclose(s.numpy(), want)


def test_score_attacks_shares_one_pass_and_matches_each_score(tiny_lm):
    from trustfl.attacks.membership import LossAttack, score_attacks

    model, tok = tiny_lm
    attacks = [LossAttack(), ZlibAttack(), MinKProbAttack(), MinKPlusPlusAttack(), ReferenceAttack().fit()]
    together = score_attacks(attacks, model, RECS, tokenizer=tok, task="causal_lm", batch_size=2)
    assert list(together) == ["loss", "zlib", "min_k", "min_k_pp", "reference"]
    for a in attacks:
        torch.testing.assert_close(together[a.name], a.score(model, RECS, tokenizer=tok, task="causal_lm", batch_size=2))
    with pytest.raises(MembershipError, match="unique"):
        score_attacks([LossAttack(), LossAttack()], model, RECS, tokenizer=tok, task="causal_lm")
    with pytest.raises(MembershipError, match="call fit"):
        score_attacks([ReferenceAttack()], model, RECS, tokenizer=tok, task="causal_lm")
    with pytest.raises(MembershipError, match="no attacks"):
        score_attacks([], model, RECS, tokenizer=tok, task="causal_lm")


def test_rmia_log_space_survives_huge_losses():
    """Losses of 1e4 (probability exp(-1e4) = 0 in float64) still rank: the class works in log space."""
    from trustfl.attacks.membership import rmia_log_scores

    lx = torch.tensor([-1e4, -2e4, -1.0], dtype=torch.float64)
    rx = torch.tensor([[-1.5e4, -1.5e4, -1.0]], dtype=torch.float64)
    lz = torch.tensor([-1.0, -3.0], dtype=torch.float64)
    rz = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    s = rmia_log_scores(lx, rx, lz, rz, offline_a=None)
    assert torch.isfinite(s).all() and s[0] > s[1]
    # log-space equals the probability form where probabilities are representable
    rng = np.random.default_rng(0)
    px, pz, r1, r2 = rng.uniform(0.05, 1, 5), rng.uniform(0.05, 1, 9), rng.uniform(0.05, 1, (2, 5)), \
        rng.uniform(0.05, 1, (2, 9))
    for a in (0.3, None, 1.0):
        np.testing.assert_allclose(
            rmia_log_scores(*(torch.tensor(np.log(v)) for v in (px, r1, pz, r2)), offline_a=a).numpy(),
            rmia_loop(px, r1, pz, r2, 1.0, a))
