"""Membership-inference library: losses and scores against hand computations, metrics against scikit-learn,
hostile input. Tiny models from configs (tests/conftest.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustfl.attacks.membership import (LossAttack, MembershipAttack, MembershipError, membership_metrics,
                                        per_record_loss, roc_plot)

from membership_models import TEXTS, hand_lm_tokens  # tiny_lm / tiny_clf fixtures: tests/conftest.py


def test_causal_lm_loss_matches_hand_computation(tiny_lm):
    model, tok = tiny_lm
    got = per_record_loss(model, [{"text": t} for t in TEXTS], tokenizer=tok, task="causal_lm", batch_size=2)
    assert got.dtype == torch.float64 and got.shape == (len(TEXTS),)
    want = [-hand_lm_tokens(model, tok, t)[0].mean() for t in TEXTS]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)  # batched + padded == one record at a time
    scores = LossAttack().score(model, [{"text": t} for t in TEXTS], tokenizer=tok, task="causal_lm")
    np.testing.assert_allclose(scores.numpy(), -np.array(want), rtol=1e-5)


def test_truncation_follows_max_length(tiny_lm):
    model, tok = tiny_lm
    got = per_record_loss(model, [{"text": TEXTS[3]}], tokenizer=tok, task="causal_lm", max_length=4)
    want = -hand_lm_tokens(model, tok, TEXTS[3], max_length=4)[0].mean()
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_classification_loss_matches_hand_computation(tiny_clf):
    model, tok = tiny_clf
    recs = [{"text": t, "label": i % 3} for i, t in enumerate(TEXTS)]
    got = per_record_loss(model, recs, tokenizer=tok, task="classification", batch_size=3)
    model.eval()
    want = []
    for r in recs:
        enc = tok(r["text"], return_tensors="pt")
        with torch.no_grad():
            z = model(**enc).logits[0].double().numpy()
        want.append(math.log(np.exp(z).sum()) - z[r["label"]])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_dataset_and_list_inputs_agree_and_model_mode_restored(tiny_clf):
    from datasets import Dataset

    model, tok = tiny_clf
    recs = [{"text": t, "label": 1} for t in TEXTS]
    model.train()
    a = per_record_loss(model, recs, tokenizer=tok, task="classification")
    assert model.training  # eval during scoring, training mode restored
    b = per_record_loss(model, Dataset.from_list(recs), tokenizer=tok, task="classification")
    assert torch.equal(a, b)


# ---------------------------------------------------------------------- hostile input
def test_bad_records_give_clear_errors(tiny_lm, tiny_clf):
    model, tok = tiny_lm
    clf, ctok = tiny_clf
    with pytest.raises(MembershipError, match="empty"):
        per_record_loss(model, [], tokenizer=tok, task="causal_lm")
    with pytest.raises(MembershipError, match="lacks"):
        per_record_loss(model, [{"txt": "x"}], tokenizer=tok, task="causal_lm")
    with pytest.raises(MembershipError, match="label"):
        per_record_loss(clf, [{"text": "a b c"}], tokenizer=ctok, task="classification")
    with pytest.raises(MembershipError, match="outside the model's 3 classes"):
        per_record_loss(clf, [{"text": "a b c", "label": 7}], tokenizer=ctok, task="classification")
    with pytest.raises(MembershipError, match="label"):
        per_record_loss(clf, [{"text": "a b c", "label": -1}], tokenizer=ctok, task="classification")
    with pytest.raises(MembershipError, match="task="):
        LossAttack().score(model, [{"text": "a b"}], tokenizer=tok, task="embedding")
    with pytest.raises(MembershipError, match="not a string"):
        per_record_loss(model, [{"text": 3}], tokenizer=tok, task="causal_lm")
    with pytest.raises(MembershipError, match="max_length"):
        per_record_loss(model, [{"text": "a b"}], tokenizer=tok, task="causal_lm", max_length=0)
    with pytest.raises(MembershipError, match="batch_size"):
        per_record_loss(model, [{"text": "a b"}], tokenizer=tok, task="causal_lm", batch_size=0)
    with pytest.raises(MembershipError, match="torch.nn.Module"):
        per_record_loss("gpt", [{"text": "a b"}], tokenizer=tok, task="causal_lm")
    with pytest.raises(MembershipError, match="list of dicts"):
        per_record_loss(model, "just a string", tokenizer=tok, task="causal_lm")


def test_one_token_record_is_refused_for_causal_lm(tiny_lm):
    """A causal-LM loss needs a token to predict: a record of one token is a clear error, not a NaN."""
    model, _ = tiny_lm

    class OneToken:  # a tokenizer that (like a BOS-less one on a one-word text) yields a single token
        pad_token_id = 0

        def __call__(self, texts, **kw):
            return {"input_ids": [[5] for _ in texts], "attention_mask": [[1] for _ in texts]}

    with pytest.raises(MembershipError, match="fewer than 2"):
        per_record_loss(model, [{"text": "x"}], tokenizer=OneToken(), task="causal_lm")
    with pytest.raises(MembershipError, match="max_length"):
        per_record_loss(model, [{"text": "x y"}], tokenizer=OneToken(), task="causal_lm", max_length=1)


def test_non_finite_model_is_reported(tiny_clf):
    import copy

    model, tok = tiny_clf
    broken = copy.deepcopy(model)
    with torch.no_grad():
        next(p for n, p in broken.named_parameters() if "classifier" in n and "weight" in n).fill_(float("nan"))
    with pytest.raises(MembershipError, match="NaN"):
        per_record_loss(broken, [{"text": "a b", "label": 0}], tokenizer=tok, task="classification")


def test_reference_free_fit_rejects_arguments_and_config():
    assert LossAttack().fit() is not None
    with pytest.raises(MembershipError, match="takes no arguments"):
        LossAttack().fit(reference=1)
    assert LossAttack().get_config() == {"name": "loss"}
    assert isinstance(LossAttack(), MembershipAttack)


# ---------------------------------------------------------------------- metrics
def test_metrics_match_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    m, nm = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 700)
    res = membership_metrics(m, nm, fprs=(0.01, 0.1), bootstrap=200, seed=1)
    y = np.r_[np.ones(300), np.zeros(700)]
    s = np.r_[m, nm]
    assert res.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    for t in (0.01, 0.1):
        assert res.tpr_at_fpr[t] == pytest.approx(tpr[fpr <= t].max(), abs=1e-12)
        lo, hi = res.tpr_at_fpr_ci[t]
        assert lo <= res.tpr_at_fpr[t] <= hi
    assert res.auc_ci[0] < res.auc < res.auc_ci[1]
    # theory: AUC of N(1,1) vs N(0,1) is Phi(1/sqrt 2) = 0.760; the 95% CI should cover it
    assert res.auc_ci[0] < 0.7602 < res.auc_ci[1]
    d = res.to_dict()
    assert d["tpr_at_fpr"]["0.01"] == res.tpr_at_fpr[0.01] and d["min_fpr"] == 1 / 700
    import json

    json.dumps(d)


def test_metrics_perfect_and_chance_and_ties():
    perfect = membership_metrics([5.0, 6.0], [1.0, 2.0, 3.0], bootstrap=20)
    assert perfect.auc == 1.0 and perfect.tpr_at_fpr[0.01] == 1.0
    ties = membership_metrics([1.0] * 50, [1.0] * 50, bootstrap=20)
    assert ties.auc == 0.5 and ties.tpr_at_fpr[0.01] == 0.0  # all tied: no threshold separates anything
    rng = np.random.default_rng(3)
    chance = membership_metrics(rng.normal(size=2000), rng.normal(size=2000), bootstrap=100)
    assert abs(chance.auc - 0.5) < 0.03 and chance.auc_ci[0] < 0.5 < chance.auc_ci[1]


def test_metrics_accept_tensors_lists_and_one_element():
    a = membership_metrics(torch.tensor([2.0, 3.0]), [0.5], bootstrap=10)
    assert a.n_members == 2 and a.n_nonmembers == 1 and a.auc == 1.0
    big = np.finfo(np.float32).max
    b = membership_metrics([big, big / 2], [-big, 0.0], bootstrap=10)
    assert b.auc == 1.0


@pytest.mark.parametrize("members, nonmembers, match", [
    ([], [1.0], "member_scores: empty"),
    ([1.0], [], "nonmember_scores: empty"),
    ([float("nan")], [1.0], "NaN/Inf"),
    ([1.0], [float("inf")], "NaN/Inf"),
    ([[1.0, 2.0]], [1.0], "1-D"),
    (["a"], [1.0], "not an array"),
])
def test_metrics_hostile(members, nonmembers, match):
    with pytest.raises(MembershipError, match=match):
        membership_metrics(members, nonmembers, bootstrap=5)


def test_metrics_bad_settings():
    with pytest.raises(MembershipError, match="fprs"):
        membership_metrics([1.0], [0.0], fprs=(0.0,))
    with pytest.raises(MembershipError, match="fprs"):
        membership_metrics([1.0], [0.0], fprs=(float("nan"),))
    with pytest.raises(MembershipError, match="bootstrap"):
        membership_metrics([1.0], [0.0], bootstrap=0)
    with pytest.raises(MembershipError, match="confidence"):
        membership_metrics([1.0], [0.0], confidence=1.0)


def test_roc_plot_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    out = roc_plot({"loss": (rng.normal(1, 1, 50), rng.normal(0, 1, 50)), "zlib": ([1.0, 2.0], [0.0, 3.0])},
                   tmp_path / "sub" / "roc.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(MembershipError, match=".png"):
        roc_plot({"a": ([1.0], [0.0])}, tmp_path / "roc.txt")
    with pytest.raises(MembershipError, match="no curves"):
        roc_plot({}, tmp_path / "r.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(MembershipError, match="directory"):
        roc_plot({"a": ([1.0], [0.0])}, tmp_path / "dir.png")
    with pytest.raises(MembershipError, match="NaN"):
        roc_plot({"a": ([float("nan")], [0.0])}, tmp_path / "r.png")


def test_star_import_and_reexports():
    import trustfl.attacks as attacks
    import trustfl.attacks.membership as mia

    ns: dict = {}
    exec("from trustfl.attacks.membership import *", ns)
    assert set(mia.__all__) <= set(ns)
    assert mia.__all__ == sorted(mia.__all__)
    for name in ("LossAttack", "membership_metrics", "per_record_loss", "roc_plot", "MembershipError"):
        assert getattr(attacks, name) is getattr(mia, name)


# ---------------------------------------------------------------------- properties and the contract suite
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=20, deadline=None)
@given(st.lists(_finite, min_size=1, max_size=30), st.lists(_finite, min_size=1, max_size=30))
def test_metric_properties(members, nonmembers):
    a = membership_metrics(members, nonmembers, bootstrap=5)
    b = membership_metrics(nonmembers, members, bootstrap=5)
    assert a.auc + b.auc == pytest.approx(1.0, abs=1e-9)  # swapping the roles mirrors the AUC
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[members, nonmembers]) ** 3  # a strictly increasing map of the scores, ties kept
    c = membership_metrics(ranks[:len(members)], ranks[len(members):], bootstrap=5)
    assert c.auc == pytest.approx(a.auc, abs=1e-9)  # only the ranking matters (strictly increasing map)
    for t in a.tpr_at_fpr:
        assert 0.0 <= a.tpr_at_fpr[t] <= 1.0
        lo, hi = a.tpr_at_fpr_ci[t]
        assert 0.0 <= lo <= hi <= 1.0


def _fitted_attacks(n: int, task: str):
    """One fitted instance of every exported scorer that applies to ``task`` (with references sized for n)."""
    import trustfl.attacks.membership as mia

    made = []
    for name in mia.__all__:
        cls = getattr(mia, name)
        if not (isinstance(cls, type) and issubclass(cls, MembershipAttack)) or cls is MembershipAttack:
            continue
        if task not in cls.tasks:
            continue
        if cls.calibration == "reference_model":
            attack = cls().fit(reference_losses=torch.full((n,), 3.0))
        elif cls.calibration == "shadow_models":  # what the audit calls, by the declaration alone
            keep = torch.zeros(4, n, dtype=torch.bool)
            keep[:2, 1:] = True  # record 0 is IN no shadow: filled by the mean IN - OUT gap
            attack = cls.from_shadow_models(shadow_losses=torch.rand(4, n) + 1, shadow_in=keep,
                                            population=[{"text": "z one", "label": 0}] * 3,
                                            population_losses=torch.rand(4, 3) + 1)
        elif cls.calibration == "client_updates":
            continue  # needs the model's own update size; covered in test_membership_server.py
        elif cls.calibration == "none":
            assert not cls.needs_reference, cls
            attack = cls()
        else:
            raise AssertionError(f"{cls.__name__}: calibration {cls.calibration!r} unknown to the contract suite")
        assert attack.is_fitted
        made.append(attack)
    return made


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_every_scorer_meets_the_contract(task, tiny_lm, tiny_clf):
    model, tok = tiny_lm if task == "causal_lm" else tiny_clf
    recs = [{"text": t, "label": i % 2} for i, t in enumerate(TEXTS)]
    attacks = _fitted_attacks(len(recs), task)
    assert len(attacks) >= (6 if task == "causal_lm" else 4)
    for attack in attacks:
        s = attack.score(model, recs, tokenizer=tok, task=task, batch_size=2)
        assert s.dtype == torch.float64 and s.shape == (len(recs),) and torch.isfinite(s).all(), attack
        cfg = attack.get_config()
        assert cfg["name"] == attack.name
        clone = type(attack)(**{k: v for k, v in cfg.items() if k != "name"})
        assert clone.get_config() == cfg and repr(clone) == repr(attack)
        with pytest.raises(MembershipError, match="empty"):
            attack.score(model, [], tokenizer=tok, task=task)
        with pytest.raises(MembershipError, match="task="):
            attack.score(model, recs, tokenizer=tok, task="embedding")
        if attack.needs_reference:
            with pytest.raises(MembershipError, match="call fit"):
                type(attack)().score(model, recs, tokenizer=tok, task=task)


# ---------------------------------------------------------------------- RMIA's public functions
_RMIA_PROBS = ([0.5, 0.2], [[0.4, 0.3]], [0.6, 0.1, 0.3], [[0.5, 0.2, 0.3]])


@pytest.mark.parametrize("log_space", [False, True])
@pytest.mark.parametrize("params,match", [({"gamma": 0}, "gamma=0 must be a finite number > 0"),
                                          ({"gamma": -1.0}, "gamma"), ({"gamma": float("nan")}, "gamma"),
                                          ({"gamma": float("inf")}, "gamma"), ({"gamma": True}, "gamma"),
                                          ({"offline_a": 1.5}, "offline_a=1.5 must be in"),
                                          ({"offline_a": "x"}, "offline_a"), ({"offline_a": False}, "offline_a")])
def test_rmia_functions_check_parameters_like_the_class(log_space, params, match):
    """rmia_scores / rmia_log_scores refuse what RMIA(...) refuses, with the same one-line message."""
    from trustfl.attacks.membership import RMIA, rmia_log_scores, rmia_scores

    with pytest.raises(MembershipError, match=match) as from_class:
        RMIA(**params)
    args = [np.log(np.asarray(a)) for a in _RMIA_PROBS] if log_space else _RMIA_PROBS
    fn = rmia_log_scores if log_space else rmia_scores
    with pytest.raises(MembershipError, match=match) as from_fn:
        fn(*args, **params)
    assert str(from_fn.value) == str(from_class.value) and "\n" not in str(from_fn.value)


def test_rmia_log_scores_checks_shapes_and_values():
    from trustfl.attacks.membership import rmia_log_scores

    lx, rx, lz, rz = (torch.log(torch.tensor(a, dtype=torch.float64)) for a in _RMIA_PROBS)
    assert rmia_log_scores(lx, rx, lz, rz).shape == (2,)
    with pytest.raises(MembershipError, match=r"shapes disagree .*log_reference_x \(1, 2\).*need \[n\], \[m, n\]"):
        rmia_log_scores(lx[:1], rx, lz, rz)
    with pytest.raises(MembershipError, match="shapes disagree"):
        rmia_log_scores(lx, rx, lz, torch.cat([rz, rz]))  # 1 reference model for x, 2 for z
    with pytest.raises(MembershipError, match="log_target_z: expected a non-empty 1-D"):
        rmia_log_scores(lx, rx, lz[:0], rz[:, :0])
    with pytest.raises(MembershipError, match="log_reference_z: 1 values are NaN/Inf"):
        rmia_log_scores(lx, rx, lz, torch.tensor([[-1.0, float("nan"), -2.0]]))
    with pytest.raises(MembershipError, match=r"log_target_x must hold log-probabilities \(<= 0\); 1 are > 0"):
        rmia_log_scores(torch.tensor([0.5, -1.0]), rx, lz, rz)  # a probability above 1


def test_attacks_declare_their_calibration_and_the_audit_reads_only_that():
    from trustfl.attacks.membership import LiRA, LiRAOnline, RMIA
    from trustfl.audits.privacy.membership import shadow_attacks

    assert shadow_attacks(["loss", "reference", "rmia", "lira", "lira_online", "gradient_alignment", "nope"]) == \
        ["rmia", "lira", "lira_online"]
    assert {c.calibration for c in (LiRA, LiRAOnline, RMIA)} == {"shadow_models"}
    with pytest.raises(MembershipError, match="not calibrated by shadow models"):
        LossAttack.from_shadow_models(shadow_losses=torch.ones(2, 3), shadow_in=None, population=None,
                                      population_losses=None)
