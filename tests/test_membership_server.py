"""Server-side attacks on stored updates and global adapters, where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustfl.attacks.membership import (GradientAlignmentAttack, MembershipError, client_membership_scores,
                                        gradient_alignment_scores, record_gradients)


@pytest.fixture()
def lora_clf(tiny_bert_dir):
    from trustfl.models import LoraSettings, ParamLayout, apply_lora, load_fm

    fm = load_fm(tiny_bert_dir, task="classification", num_labels=2, seed=0)
    torch.manual_seed(0)
    model = apply_lora(fm.model, LoraSettings(r=2, top_layers=2), task="classification")
    for m in model.modules():  # no dropout: local training's gradient = the eval-mode gradient
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model, fm.tokenizer, ParamLayout.from_model(model)


def _trainer(model, layout, tok, **kw):
    from trustfl.federation import Batcher, LocalTrainer

    return LocalTrainer(model, layout, Batcher(pad_token_id=tok.pad_token_id, task="classification"),
                        optimizer="sgd", max_grad_norm=None, **kw)


def _examples(recs, tok):
    from trustfl.federation.clients import tokenize_examples
    from datasets import Dataset

    return tokenize_examples(Dataset.from_list(recs), tok, max_length=128, task="classification")


def _recs(start, n):
    from trustfl.data import load_dataset_source

    ds = load_dataset_source("sms_spam").select(range(start, start + n))
    return [{"text": t, "label": y} for t, y in zip(ds["text"], ds["label"])]


def test_record_gradient_matches_autograd_and_one_step_sgd_aligns_exactly(lora_clf):
    model, tok, layout = lora_clf
    rec = _recs(0, 1)
    g = record_gradients(model, rec, tokenizer=tok, task="classification")
    assert g.shape == (1, layout.size)
    # one SGD step on the single record: delta = -lr * grad, so the alignment is exactly 1
    start = layout.flatten(model)
    result = _trainer(model, layout, tok, lr=0.1, max_steps=1, batch_size=1).train(
        0, _examples(rec, tok), start, round=1, seed=0)
    torch.testing.assert_close(result.delta, -0.1 * g[0], rtol=1e-4, atol=1e-7)
    layout.load_into(model, start)
    s = GradientAlignmentAttack().fit(updates=result.delta).score(model, rec, tokenizer=tok, task="classification")
    assert s.item() == pytest.approx(1.0, abs=1e-4)


def test_members_align_better_than_nonmembers(lora_clf):
    """One SGD step on 6 members; 24 non-members. The tiny random model pushes every record of a class the
    same way, so raw alignment barely ranks; projecting out the population's 2 common directions does."""
    from sklearn.metrics import roc_auc_score

    model, tok, layout = lora_clf
    members, nonmembers, population = _recs(0, 6), _recs(100, 24), _recs(300, 40)
    start = layout.flatten(model)
    result = _trainer(model, layout, tok, lr=0.05, max_steps=1, batch_size=6).train(
        3, _examples(members, tok), start, round=1, seed=0)
    attack = GradientAlignmentAttack(remove_components=2).fit(updates=[result.delta], global_vectors=[start],
                                                              population=population)
    layout.load_into(model, torch.zeros(layout.size))  # score() loads the round's start itself and restores
    s = attack.score(model, members + nonmembers, tokenizer=tok, task="classification")
    assert torch.equal(layout.flatten(model), torch.zeros(layout.size))  # restored
    assert roc_auc_score([1] * 6 + [0] * 24, s.numpy()) > 0.75
    with pytest.raises(MembershipError, match="population"):
        GradientAlignmentAttack(remove_components=2).fit(updates=result.delta)
    with pytest.raises(MembershipError, match="remove_components"):
        GradientAlignmentAttack(remove_components=-1)


def test_alignment_math_and_hostile():
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [-3.0, 0.0]])
    s = gradient_alignment_scores(g, torch.tensor([-1.0, 0.0]))
    assert s.tolist() == [1.0, 0.0, 0.0, -1.0]
    with pytest.raises(MembershipError, match="all zeros"):
        gradient_alignment_scores(g, torch.zeros(2))
    with pytest.raises(MembershipError, match="shape"):
        gradient_alignment_scores(g, torch.zeros(3))
    with pytest.raises(MembershipError, match="NaN"):
        gradient_alignment_scores(g, torch.tensor([float("nan"), 1.0]))
    with pytest.raises(MembershipError, match="global_vectors"):
        GradientAlignmentAttack().fit(updates=[torch.ones(2), torch.ones(2)])
    with pytest.raises(MembershipError, match="sizes"):
        GradientAlignmentAttack().fit(updates=[torch.ones(2)], global_vectors=[torch.ones(3)])
    with pytest.raises(MembershipError, match="empty"):
        GradientAlignmentAttack().fit(updates=[])


def test_update_of_wrong_size_is_refused(lora_clf):
    model, tok, layout = lora_clf
    with pytest.raises(MembershipError, match="layout"):
        GradientAlignmentAttack().fit(updates=torch.ones(5)).score(model, _recs(0, 1), tokenizer=tok,
                                                                   task="classification")


def test_client_level_known_answer(lora_clf):
    """theta_1 = theta_0 - lr * (mean gradient of client A): A aligns exactly (cos 1), B less; A's loss drops."""
    model, tok, layout = lora_clf
    a, b = _recs(0, 6), _recs(200, 6)
    theta0 = layout.flatten(model)
    mean_grad = record_gradients(model, a, tokenizer=tok, task="classification").mean(0)
    theta1 = theta0 - 0.5 * mean_grad
    globals_ = torch.stack([theta0, theta1])
    s = client_membership_scores(model, [a, b], globals_, tokenizer=tok, task="classification")
    assert s[0].item() == pytest.approx(1.0, abs=1e-5) and s[1] < s[0]
    # loss_drop to first order: L(theta - eta g_A) = L - eta g_A . g_X for client X's mean gradient g_X
    eta = 1e-3
    grad_b = record_gradients(model, b, tokenizer=tok, task="classification").mean(0)
    small = torch.stack([theta0, theta0 - eta * mean_grad])
    drop = client_membership_scores(model, [a, b], small, tokenizer=tok, task="classification", method="loss_drop")
    g_a, g_b = mean_grad.double(), grad_b.double()
    assert drop[0].item() == pytest.approx(eta * float(g_a @ g_a), rel=0.05)
    assert drop[1].item() == pytest.approx(eta * float(g_b @ g_a), rel=0.05)
    assert torch.equal(layout.flatten(model), theta0)  # restored
    # an empty round (no movement) adds no evidence
    s3 = client_membership_scores(model, [a], torch.stack([theta0, theta0, theta1]), tokenizer=tok,
                                  task="classification", reduce="max")
    assert s3[0].item() == pytest.approx(1.0, abs=1e-5)


def test_client_level_hostile(lora_clf):
    model, tok, layout = lora_clf
    v = layout.flatten(model)
    with pytest.raises(MembershipError, match="clients: empty"):
        client_membership_scores(model, [], torch.stack([v, v]), tokenizer=tok, task="classification")
    with pytest.raises(MembershipError, match="at least one round"):
        client_membership_scores(model, [_recs(0, 2)], v[None], tokenizer=tok, task="classification")
    with pytest.raises(MembershipError, match="layout"):
        client_membership_scores(model, [_recs(0, 2)], torch.ones(2, 3), tokenizer=tok, task="classification")
    with pytest.raises(MembershipError, match="method"):
        client_membership_scores(model, [_recs(0, 2)], torch.stack([v, v]), tokenizer=tok, task="classification",
                                 method="oracle")  # type: ignore[arg-type]
    with pytest.raises(MembershipError, match="NaN"):
        client_membership_scores(model, [_recs(0, 2)], torch.full((2, layout.size), float("inf")), tokenizer=tok,
                                 task="classification")
