"""Foundation model loading, LoRA placement, ParamLayout exactness and the frozen-prefix cache."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trustfl.errors import ConfigError, ModelLoadError, UpdateError
from trustfl.models import (FrozenPrefix, LoraSettings, ParamLayout, adapted_layer_indices, apply_lora,
                            find_layer_stack, load_fm, pad_hidden)


def _lora_model(path, task="classification", **lora):
    fm = load_fm(path, task=task, num_labels=3 if task == "classification" else None, seed=1)
    torch.manual_seed(0)
    model = apply_lora(fm.model, LoraSettings(**lora), task=task)
    with torch.no_grad():  # make adapters non-trivial (peft initialises B = 0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    return fm, model


# ---------------------------------------------------------------------- ParamLayout
@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3), min_size=1, max_size=6), st.integers(0, 99))
def test_layout_roundtrip_is_exact(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    params = {f"p{i}": torch.randn(*s, generator=g) for i, s in enumerate(shapes)}
    layout = ParamLayout(tuple(params), tuple(tuple(s) for s in shapes))
    vec = layout.flatten(params)
    assert vec.dtype == torch.float32 and vec.numel() == layout.size == sum(p.numel() for p in params.values())
    back = layout.unflatten(vec)
    for name, p in params.items():
        assert torch.equal(back[name], p)
        assert torch.equal(vec[layout.slice(name)], p.reshape(-1))
    assert ParamLayout.from_dict(layout.to_dict()) == layout


def test_layout_rejects_bad_vectors():
    layout = ParamLayout(("a",), ((2, 2),))
    with pytest.raises(UpdateError, match=r"expected shape \(4,\)"):
        layout.unflatten(torch.zeros(5))
    with pytest.raises(UpdateError, match="non-finite"):
        layout.unflatten(torch.tensor([0.0, float("nan"), 0.0, float("inf")]))
    with pytest.raises(ValueError, match="shape"):
        layout.flatten({"a": torch.zeros(3)})


def test_layout_load_into_model_roundtrip(tiny_bert_dir):
    _, model = _lora_model(tiny_bert_dir, r=2)
    layout = ParamLayout.from_model(model)
    before = layout.flatten(model)
    target = torch.randn(layout.size)
    layout.load_into(model, target)
    assert torch.equal(layout.flatten(model), target)
    assert not torch.equal(before, target)


# ---------------------------------------------------------------------- LoRA placement
def test_only_adapters_and_head_train(tiny_bert_dir):
    _, model = _lora_model(tiny_bert_dir, r=4)
    names = ParamLayout.from_model(model).names
    assert all("lora_" in n or "classifier" in n for n in names)
    assert any("classifier" in n for n in names)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("embeddings" in n for n in frozen)


def test_top_layers_restricts_adapters(tiny_bert_dir):
    _, model = _lora_model(tiny_bert_dir, r=2, top_layers=1)
    lora_names = [n for n in ParamLayout.from_model(model).names if "lora_" in n]
    assert lora_names and all(".layer.3." in n for n in lora_names)


def test_adapted_layer_indices_validation():
    assert adapted_layer_indices(6, LoraSettings(top_layers=2)) == [4, 5]
    assert adapted_layer_indices(6, LoraSettings(layers=[3, 1, 1])) == [1, 3]
    with pytest.raises(ConfigError, match="top_layers"):
        adapted_layer_indices(2, LoraSettings(top_layers=3))
    with pytest.raises(ConfigError, match="out of range"):
        adapted_layer_indices(2, LoraSettings(layers=[5]))
    with pytest.raises(ConfigError, match="lora.r"):
        LoraSettings(r=0)


def test_unknown_target_module_is_an_error(tiny_bert_dir):
    fm = load_fm(tiny_bert_dir, task="classification", num_labels=2)
    with pytest.raises(ConfigError, match=r"matched no module.*query"):
        apply_lora(fm.model, LoraSettings(target_modules=["nonexistent_proj"]), task="classification")


def test_load_fm_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="num_labels"):
        load_fm("minilm", task="classification")
    with pytest.raises(ModelLoadError, match="valid tasks"):
        load_fm("minilm", task="translation")  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="could not load"):
        load_fm(str(tmp_path / "missing"), task="causal_lm")


def test_head_init_is_seeded(tiny_bert_dir):
    a = load_fm(tiny_bert_dir, num_labels=2, seed=3).model.classifier.weight
    b = load_fm(tiny_bert_dir, num_labels=2, seed=3).model.classifier.weight
    c = load_fm(tiny_bert_dir, num_labels=2, seed=4).model.classifier.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------------- frozen prefix
TEXTS = ["free entry to win a prize now", "ok", "see you at the station at five then", "call me"]


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_prefix_replay_equals_full_forward(tiny_bert_dir, tiny_llama_dir, task):
    path = tiny_bert_dir if task == "classification" else tiny_llama_dir
    fm, model = _lora_model(path, task=task, r=2, top_layers=1)
    _, stack = find_layer_stack(model)
    batch = fm.tokenizer(TEXTS, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        full = model(**batch).logits
        prefix = FrozenPrefix(model, first_trainable=len(stack) - 1)
        cached = prefix.compute(batch["input_ids"], batch["attention_mask"])
        assert [c.shape[0] for c in cached] == batch["attention_mask"].sum(1).tolist()
        with prefix.replay(pad_hidden(cached, batch["input_ids"].shape[1])):
            replayed = model(**batch).logits
    mask = batch["attention_mask"].bool()
    if task == "causal_lm":  # compare real positions only
        full, replayed = full[mask], replayed[mask]
    torch.testing.assert_close(replayed, full, atol=1e-5, rtol=1e-4)
    # the original blocks are back after replay
    assert all(type(b).__name__ != "_Replay" for b in stack)


def test_prefix_gradients_match_full_model(tiny_bert_dir):
    """Training through the replayed prefix gives the same adapter gradients (eval-mode prefix)."""
    fm, model = _lora_model(tiny_bert_dir, r=2, top_layers=2, dropout=0.0)
    _, stack = find_layer_stack(model)
    batch = fm.tokenizer(TEXTS, padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 2, 1])
    model.eval()  # no dropout anywhere, so both paths are deterministic
    layout = ParamLayout.from_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = model(**batch, labels=labels).loss
    full = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    prefix = FrozenPrefix(model, first_trainable=len(stack) - 2)
    hidden = pad_hidden(prefix.compute(batch["input_ids"], batch["attention_mask"]), batch["input_ids"].shape[1])
    with prefix.replay(hidden):
        loss2 = model(**batch, labels=labels).loss
    cached = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss2, params)])
    assert full.numel() == layout.size
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)


def test_prefix_rejects_trainable_bottom(tiny_bert_dir):
    _, model = _lora_model(tiny_bert_dir, r=2)  # adapters on all blocks
    with pytest.raises(ValueError, match="trainable parameters"):
        FrozenPrefix(model, first_trainable=2)
    with pytest.raises(ValueError, match="first_trainable"):
        FrozenPrefix(model, first_trainable=0)


def test_replay_shape_mismatch_is_clear(tiny_bert_dir):
    fm, model = _lora_model(tiny_bert_dir, r=2, top_layers=1)
    prefix = FrozenPrefix(model, first_trainable=3)
    batch = fm.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="pad_hidden"):
        with torch.no_grad(), prefix.replay(torch.zeros(1, 2, 32)):
            model(**batch)


@pytest.mark.integration
def test_minilm_offline_loads_real_weights():
    fm = load_fm("minilm", task="embedding")
    batch = fm.tokenizer(["a real sentence"], return_tensors="pt")
    with torch.no_grad():
        out = fm.model(**batch).last_hidden_state
    assert out.shape[-1] == 384
    assert sum(p.numel() for p in fm.model.parameters()) == pytest.approx(22.7e6, rel=0.01)


@pytest.mark.integration
def test_smollm2_offline_converts_and_generates():
    fm = load_fm("smollm2-135m", task="causal_lm")
    assert sum(p.numel() for p in fm.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    ids = fm.tokenizer("The capital of France is", return_tensors="pt")
    out = fm.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in fm.tokenizer.decode(out[0])


def test_prefix_store_roundtrip_and_keys(tiny_bert_dir, tmp_path):
    from trustfl.models import PrefixStore

    fm, model = _lora_model(tiny_bert_dir, r=2, top_layers=1)
    prefix = FrozenPrefix(model, first_trainable=3)
    batch = fm.tokenizer(TEXTS, padding=True, return_tensors="pt")
    cached = prefix.compute(batch["input_ids"], batch["attention_mask"])
    ids = [batch["input_ids"][i, : c.shape[0]] for i, c in enumerate(cached)]
    store = PrefixStore(tmp_path, prefix)
    key = store.key(ids)
    assert store.load(key) is None
    store.save(key, cached)
    assert all(torch.equal(a, b) for a, b in zip(store.load(key), cached))
    assert store.key(ids[::-1]) != key and store.key(ids[:-1]) != key
    with torch.no_grad():  # different frozen weights -> different key space
        model.base_model.model.bert.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert PrefixStore(tmp_path, prefix).key(ids) != key
    path = next(tmp_path.rglob("*.safetensors"))
    path.write_bytes(path.read_bytes()[:20])  # torn file -> recomputed, not trusted
    assert store.load(key) is None


# ---------------------------------------------------------------------- mean pooling
def test_mean_pooling_equals_masked_mean_and_ignores_padding(tiny_bert_dir):
    fm = load_fm(tiny_bert_dir, num_labels=3, seed=0, pooling="mean")
    model = fm.model.eval()
    batch = fm.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.bert(**batch)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        reference = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        torch.testing.assert_close(out.pooler_output, reference)
        # a record's logits do not depend on how much padding its batch added
        alone = model(**fm.tokenizer(TEXTS[1:2], return_tensors="pt")).logits
        torch.testing.assert_close(model(**batch).logits[1:2], alone, atol=1e-5, rtol=1e-4)


def test_mean_pooling_works_through_prefix_replay(tiny_bert_dir):
    fm = load_fm(tiny_bert_dir, num_labels=3, seed=0, pooling="mean")
    model = apply_lora(fm.model, LoraSettings(r=2, top_layers=1), task="classification").eval()
    _, stack = find_layer_stack(model)
    batch = fm.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        full = model(**batch).logits
        prefix = FrozenPrefix(model, first_trainable=len(stack) - 1)
        cached = prefix.compute(batch["input_ids"], batch["attention_mask"])
        with prefix.replay(pad_hidden(cached, batch["input_ids"].shape[1])):
            replayed = model(**batch).logits
    torch.testing.assert_close(replayed, full, atol=1e-5, rtol=1e-4)


def test_mean_pooling_errors(tiny_bert_dir, tiny_llama_dir):
    with pytest.raises(ModelLoadError, match="pooling='sum' is not supported"):
        load_fm(tiny_bert_dir, num_labels=2, pooling="sum")
    with pytest.raises(ModelLoadError, match="applies to task='classification' only"):
        load_fm(tiny_llama_dir, task="causal_lm", pooling="mean")
    from trustfl.models import use_mean_pooling
    with pytest.raises(ModelLoadError, match="needs an encoder with a `pooler`"):
        use_mean_pooling(torch.nn.Linear(2, 2))
