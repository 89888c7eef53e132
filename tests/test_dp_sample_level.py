"""Sample-level DP-SGD through Opacus on a tiny PEFT model: the private step equals a slow
per-sample reference, ε equals the accountant's, the #820 check fires, hooks never pile up."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trustfl.defenses.dp import DPCheckError, epsilon, make_private
from trustfl.federation.client import Batcher
from trustfl.models import apply_lora, load_fm
from trustfl.models.lora import LoraSettings


def _tiny_peft(model_dir: str) -> nn.Module:
    fm = load_fm(model_dir, task="classification", num_labels=2, seed=0)
    torch.manual_seed(0)
    model = apply_lora(fm.model, LoraSettings(r=2), task="classification")
    for m in model.modules():  # deterministic forward in train mode (Opacus needs train mode)
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    with torch.no_grad():  # non-zero B so every LoRA tensor has a gradient
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return model.train()


def _examples(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        length = 5 + i % 4
        ids = torch.randint(1000, 5000, (length,), generator=g)
        ids[0], ids[1] = 101, 10_000 + i  # a unique token at position 1 identifies the example
        out.append({"input_ids": ids, "labels": int(i % 2)})
    return out


def _loader(examples, batch_size: int, seed: int = 0):
    return torch.utils.data.DataLoader(examples, batch_size=batch_size, shuffle=True,
                                       collate_fn=Batcher(pad_token_id=0, task="classification"),
                                       generator=torch.Generator().manual_seed(seed))


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_private_step_equals_per_sample_clipped_reference(tiny_bert_dir, mode):
    model = _tiny_peft(tiny_bert_dir)
    examples = _examples(12)
    reference = copy.deepcopy(model)
    collate = Batcher(pad_token_id=0, task="classification")
    grads = []  # slow, obviously correct: one backward per example
    for ex in examples:
        reference.zero_grad()
        b = collate([ex])
        out = reference(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        nn.functional.cross_entropy(out.logits, b["labels"]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in _trainable(reference)]))
    norms = torch.stack([g.norm() for g in grads])
    clip = float(norms.median())
    before = torch.cat([p.detach().flatten() for p in _trainable(model)]).clone()
    opt = torch.optim.SGD(_trainable(model), lr=1.0)
    private = make_private(model, opt, _loader(examples, 4), noise_multiplier=1e-9, max_grad_norm=clip,
                           grad_sample_mode=mode, noise_generator=torch.Generator().manual_seed(0))
    batch = next(b for b in private.loader.loader if b and b["input_ids"].shape[0] > 0)
    out = private.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = private.loss(out.logits, batch["labels"])
    private.optimizer.zero_grad()
    loss.backward()
    private.optimizer.step()
    after = torch.cat([p.detach().flatten() for p in _trainable(model)])
    members = (batch["input_ids"][:, 1] - 10_000).tolist()
    summed = sum(g * min(1.0, clip / float(g.norm())) for g in (grads[i] for i in members))
    expected_batch = 12 * (1 / 3)  # Opacus divides the noisy sum by the expected Poisson batch size
    torch.testing.assert_close(after - before, -summed / expected_batch, atol=2e-6, rtol=1e-4)
    private.close()
    assert _hook_count(model) == 0


def test_epsilon_hooks_cleanup_and_rewrap(tiny_bert_dir):
    model = _tiny_peft(tiny_bert_dir)
    examples = _examples(16)
    counts = []
    for _ in range(2):  # the same model wrapped twice, as the loop does each round
        opt = torch.optim.AdamW(_trainable(model), lr=1e-2)
        private = make_private(model, opt, _loader(examples, 4), noise_multiplier=1.2, max_grad_norm=1.0)
        counts.append(_hook_count(model))
        steps = 0
        for batch in private.loader:
            out = private.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = private.loss(out.logits, batch["labels"])
            private.optimizer.zero_grad()
            loss.backward()
            private.optimizer.step()
            steps += 1
        total = steps + private.loader.noise_only_steps
        assert private.steps == total == 4  # one Poisson epoch: len(loader) draws, all accounted
        assert private.epsilon() == pytest.approx(
            epsilon(noise_multiplier=1.2, sample_rate=0.25, steps=total, delta=1e-5), rel=1e-9)
        private.close()
        assert _hook_count(model) == 0
    assert counts[0] == counts[1] > 0


def test_target_epsilon_mode_reaches_target(tiny_bert_dir):
    model = _tiny_peft(tiny_bert_dir)
    opt = torch.optim.SGD(_trainable(model), lr=0.1)
    private = make_private(model, opt, _loader(_examples(16), 4), target_epsilon=3.0, epochs=5)
    assert epsilon(noise_multiplier=private.noise_multiplier, sample_rate=0.25, steps=20, delta=1e-5) <= 3.0
    private.close()


def test_unchanged_adapter_after_first_step_fails_loudly(tiny_bert_dir):
    model = _tiny_peft(tiny_bert_dir)
    opt = torch.optim.SGD(_trainable(model), lr=0.0)  # a step that changes nothing: what #820 looks like
    private = make_private(model, opt, _loader(_examples(8), 4), noise_multiplier=1.0, max_grad_norm=1.0)
    with pytest.raises(DPCheckError, match="unchanged"):
        for batch in private.loader:
            out = private.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = private.loss(out.logits, batch["labels"])
            private.optimizer.zero_grad()
            loss.backward()
            private.optimizer.step()
    private.model._close()


def test_optimizer_over_other_tensors_is_rejected(tiny_bert_dir):
    model = _tiny_peft(tiny_bert_dir)
    stray = copy.deepcopy(model)
    opt = torch.optim.SGD(_trainable(stray), lr=0.1)
    with pytest.raises(DPCheckError, match="optimizer holds"):
        make_private(model, opt, _loader(_examples(8), 4), noise_multiplier=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        make_private(model, torch.optim.SGD(_trainable(model), lr=0.1), _loader(_examples(8), 4))


def _one_epoch(private) -> None:
    for batch in private.loader:
        out = private.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = private.loss(out.logits, batch["labels"])
        private.optimizer.zero_grad()
        loss.backward()
        private.optimizer.step()


def test_model_in_eval_mode_is_put_in_train_mode(tiny_bert_dir):
    model = _tiny_peft(tiny_bert_dir).eval()  # what from_pretrained returns
    private = make_private(model, torch.optim.SGD(_trainable(model), lr=0.1), _loader(_examples(8), 4),
                           noise_multiplier=1.0)
    assert all(m.training for m in model.modules())
    _one_epoch(private)  # Opacus: "No activations detected" at backward() if a module stayed in eval mode
    assert private.steps == 2
    private.close()


def test_sigma_search_is_solved_once_per_arguments(tiny_bert_dir, monkeypatch):
    import opacus.accountants.utils as opacus_utils

    from trustfl.defenses.dp import accounting

    calls = []
    real = opacus_utils.get_noise_multiplier
    monkeypatch.setattr(opacus_utils, "get_noise_multiplier", lambda **kw: calls.append(kw) or real(**kw))
    if hasattr(accounting, "_solve_noise_multiplier"):
        accounting._solve_noise_multiplier.cache_clear()  # the memo of σ per arguments
    model = _tiny_peft(tiny_bert_dir)
    sigmas = []
    for _ in range(3):  # per client per round, same arguments
        private = make_private(model, torch.optim.SGD(_trainable(model), lr=0.1), _loader(_examples(16), 4),
                               target_epsilon=6.5, epochs=4)
        sigmas.append(private.noise_multiplier)
        private.close()
    assert len(calls) == 1 and sigmas[0] == sigmas[1] == sigmas[2]
    private = make_private(model, torch.optim.SGD(_trainable(model), lr=0.1), _loader(_examples(16), 4),
                           target_epsilon=6.5, epochs=5)  # other arguments: solved again
    private.close()
    assert len(calls) == 2 and private.noise_multiplier > sigmas[0]


def test_epsilon_accumulates_when_the_engine_is_passed_back(tiny_bert_dir):
    model = _tiny_peft(tiny_bert_dir)
    examples = _examples(16)
    engine, eps, fresh = None, [], []
    for r in range(3):  # three rounds of one client: one accountant across them
        records = examples if r < 2 else _examples(16)  # a new list of the same records: must not matter
        private = make_private(model, torch.optim.SGD(_trainable(model), lr=0.1), _loader(records, 4),
                               noise_multiplier=1.5, engine=engine)
        engine = private.engine
        _one_epoch(private)
        private.close()
        eps.append(private.epsilon())
        alone = make_private(model, torch.optim.SGD(_trainable(model), lr=0.1), _loader(examples, 4),
                             noise_multiplier=1.5)  # a new engine each round: restarts at 0
        _one_epoch(alone)
        alone.close()
        fresh.append(alone.epsilon())
    assert private.steps == 12
    assert eps[0] < eps[1] < eps[2]
    assert eps[2] == pytest.approx(epsilon(noise_multiplier=1.5, sample_rate=0.25, steps=12, delta=1e-5), rel=1e-9)
    assert fresh[0] == fresh[1] == fresh[2] == pytest.approx(eps[0])


def test_opacus_warnings_explained_once_not_repeated_per_client(tiny_bert_dir, caplog, monkeypatch):
    import logging
    import warnings

    from trustfl.defenses.dp import sample_level

    monkeypatch.setattr(sample_level, "_explained", False, raising=False)  # "once" = once per process
    model = _tiny_peft(tiny_bert_dir)
    engines: dict[int, object] = {}
    data = {cid: _examples(8) for cid in range(2)}
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")  # every raw warning that is not silenced would be recorded
        before = list(warnings.filters)
        for _round in range(2):
            for cid in range(2):  # a 2-client DP run
                private = make_private(model, torch.optim.SGD(_trainable(model), lr=0.1),
                                       _loader(data[cid], 4, seed=cid), noise_multiplier=1.0,
                                       engine=engines.get(cid))
                engines[cid] = private.engine
                _one_epoch(private)
                private.close()
        assert warnings.filters == before  # the silencing was scoped to trustfl's calls
        warnings.warn("Full backward hook is firing (outside trustfl's calls: not silenced)", UserWarning)
    raw = [str(w.message) for w in caught]
    assert not [m for m in raw if "Secure RNG" in m]
    assert [m for m in raw if "Full backward hook" in m] == ["Full backward hook is firing (outside trustfl's "
                                                             "calls: not silenced)"]
    explained = [r for r in caplog.records if "Secure RNG turned off" in r.getMessage()]
    assert len(explained) == 1 and "Full backward hook" in explained[0].getMessage()
    assert explained[0].levelno == logging.WARNING


def test_noise_only_steps_count_towards_the_planned_steps():
    """An empty Poisson draw is a real, accounted DP step: the private loader never takes more steps (noise-only
    included) than the trainer planned, so a client's ε cannot exceed what σ was solved for."""
    from trustfl.defenses.dp.sample_level import _PrivateBatches

    class _Engine:
        class accountant:  # noqa: N801 - a stand-in for Opacus's accountant, records the steps
            history: list = []

            @staticmethod
            def step(*, noise_multiplier, sample_rate):
                _Engine.accountant.history.append((noise_multiplier, sample_rate))

    class _Opt:
        max_grad_norm, expected_batch_size, loss_reduction = 1.0, 4, "mean"
        generator = torch.Generator().manual_seed(0)

        def __init__(self, params):
            self.params = params
            self.original_optimizer = torch.optim.SGD(params, lr=0.0)

    model = torch.nn.Linear(2, 1)
    empty = {"input_ids": torch.zeros(0, 3, dtype=torch.long)}
    full = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    batches = _PrivateBatches([empty, empty, full, full, full], model, _Opt(list(model.parameters())), _Engine,
                              noise_multiplier=1.0, sample_rate=0.5)
    batches.checked = True  # the adapter check needs a real optimizer step; not what this test is about
    batches.max_steps = 3
    yielded = list(batches)
    assert len(yielded) == 1 and batches.noise_only_steps == 2
    assert len(_Engine.accountant.history) == 2  # the loader accounts its noise-only steps; Opacus the rest
