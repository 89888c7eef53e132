"""Local data files: read in memory (never copied to the `datasets` cache), clean one-line errors
for files that cannot be training data (issue 10 items 3 and the data "clean errors")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from trustfl.data import DataSourceError, load_dataset_source, tokenize_dataset

SECRET = "zq-private-client-record-7731"


@pytest.fixture(scope="module")
def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate("the a cat dog sat on mat".split())}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """Point every `datasets` cache location at an empty tmp folder."""
    import datasets

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(cache / "home"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def _files_holding(folder: Path, needle: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".txt"])
def test_local_files_are_loaded_and_tokenized_without_cache_files(tmp_path, hf_cache, word_tokenizer, suffix):
    rows = [{"text": f"the cat sat {SECRET} {i}", "label": i % 2} for i in range(6)]
    path = tmp_path / f"client{suffix}"
    if suffix == ".csv":
        path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        path.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    labelled = suffix != ".txt"
    ds = load_dataset_source(str(path), label_column="label" if labelled else None)
    assert len(ds) == 6 and ds["text"][0] == rows[0]["text"] and ds.cache_files == []
    if labelled:
        assert ds["label"][:] == [r["label"] for r in rows]
    tok = tokenize_dataset(ds, word_tokenizer, max_length=8, task="classification" if labelled else "causal_lm")
    assert tok.cache_files == [] and len(tok) == 6
    assert _files_holding(hf_cache, SECRET) == []
    assert [p for p in hf_cache.rglob("*.arrow")] == []


def test_tokenize_never_writes_cache_files_next_to_a_cached_dataset(tmp_path, word_tokenizer):
    """A dataset backed by an Arrow file (e.g. from the hub): `.map` would write cache-*.arrow next to it."""
    folder = tmp_path / "saved"
    Dataset.from_dict({"text": [f"the cat {SECRET}"] * 4, "label": [0, 1, 0, 1]}).save_to_disk(str(folder))
    from datasets import load_from_disk

    ds = load_from_disk(str(folder))
    assert ds.cache_files  # file-backed
    before = sorted(p.name for p in folder.rglob("*"))
    tokenize_dataset(ds, word_tokenizer, max_length=8, task="classification")
    assert sorted(p.name for p in folder.rglob("*")) == before


def test_file_reader_keeps_types_missing_texts_and_options(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text;y;n\n"a; b";x;1\n;y;2\nc;x;3\n', encoding="utf-8")
    ds = load_dataset_source(str(path), label_column="y", sep=";")
    assert ds["text"][:] == ["a; b", "c"] and ds["label"][:] == [0, 0] and ds["n"][:] == [1, 3]
    with pytest.raises(DataSourceError, match=r"unknown option\(s\) \['bogus'\]"):
        load_dataset_source(str(path), label_column=None, bogus=1)
    doc = tmp_path / "d.json"
    doc.write_text(json.dumps({"data": [{"text": "x", "label": 1}]}), encoding="utf-8")
    assert load_dataset_source(str(doc), field="data")["label"][:] == [1]


def _write(path: Path, content: bytes | str) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


@pytest.mark.parametrize("name, content, match", [
    ("garbage.csv", bytes(range(256)) * 4, "is not a text file"),
    ("garbage.jsonl", b"\xff\xfe\x93 binary \xc3\x28 stuff", "is not UTF-8 text"),
    ("garbage.txt", b"ok\n\xc3\x28\n", "is not UTF-8 text"),
    ("empty.csv", "", "is empty"),
    ("empty.jsonl", "\n\n", "is empty"),
    ("empty.txt", "", "is empty"),
    ("header.csv", "text,label\n", r"has a header \(columns \['text', 'label'\]\) but no data rows"),
    ("blank.csv", 'text,label\n"  ",0\n,1\n', "no non-empty texts: all 2 values of column 'text'"),
    ("blank.jsonl", '{"text": " ", "label": 0}\n{"text": null, "label": 1}\n', "no non-empty texts"),
    ("blank.txt", "  \n\t\n", "no non-empty texts: all 2 lines are blank"),
    ("list.json", "[]", "holds no records"),
    ("bad.jsonl", '{"text": "a", "label": 0}\n{"text": \n', r"bad.jsonl:2: not valid JSON"),
])
def test_unusable_files_give_one_clear_error(tmp_path, name, content, match):
    path = _write(tmp_path / name, content)
    label = None if name.endswith(".txt") else "label"
    with pytest.raises(DataSourceError, match=match) as info:
        load_dataset_source(path, label_column=label)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_directory_given_as_data_file(tmp_path):
    folder = tmp_path / "data.csv"
    folder.mkdir()
    with pytest.raises(DataSourceError, match="is a directory"):
        load_dataset_source(str(folder))


@pytest.mark.parametrize("content, match", [
    ("", "is empty"),
    ("text,label\n", "but no data rows"),
    ('text,label\n" ",0\n" ",1\n', "no non-empty texts"),
    (bytes(range(256)), "is not a text file"),
])
def test_trustfl_run_with_an_unusable_data_file_gives_one_line(tmp_path, capsys, content, match):
    from trustfl.cli import main

    data = _write(tmp_path / "train.csv", content)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'name = "bad-data"\n[model]\nname = "minilm"\n[data]\nname = "{data}"\n'
                   "[partition]\nnum_clients = 2\n[federation]\nrounds = 1\n", encoding="utf-8")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err
    assert match in err and "train.csv" in err and "Traceback" not in err
    assert err.startswith("trustfl run: error: ") and err.count("\n") == 1

