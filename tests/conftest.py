"""Shared fixtures: tiny models built from configs (fast unit tests) with a real tokenizer."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core; one intra-op thread each avoids oversubscription.
    import torch

    torch.set_num_threads(1)

# Modules whose tests take minutes (`make test --durations`, fresh clone 2026-11-30: the Flower fault test alone
# 538 s). They are collected first so `-n 2` starts them at once instead of leaving one worker on them at the end.
# Ordering only: every test still runs, each module's tests keep their order.
_LONG_MODULES = ("test_flower_faults.py", "test_packaging.py", "test_flower_dedup_deployment.py",
                 "test_flower_deployment.py", "test_flower_secaggplus.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep collection order


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from trustfl.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("minilm"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_tokenizer):
    """A 4-block, 32-wide BERT with MiniLM's real tokenizer, saved as a local model folder."""
    import torch
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, minilm_tokenizer):
    """A 3-block, 32-wide Llama (causal LM) with a real tokenizer, saved as a local model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                         max_position_embeddings=128, pad_token_id=minilm_tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return str(path)


# ---------------------------------------------------------------- membership-inference tests
@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    import torch

    from trustfl.models import LoraSettings, apply_lora, load_fm

    fm = load_fm(tiny_llama_dir, task="causal_lm")
    torch.manual_seed(1)
    model = apply_lora(fm.model, LoraSettings(r=2, top_layers=1), task="causal_lm")
    with torch.no_grad():  # non-zero adapters, so the adapted model differs from the base
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return model, fm.tokenizer


@pytest.fixture(scope="module")
def tiny_clf(tiny_bert_dir):
    from trustfl.models import load_fm

    fm = load_fm(tiny_bert_dir, task="classification", num_labels=3, seed=3)
    return fm.model, fm.tokenizer
