"""`trustfl dedup` hardening: outputs never overwrite inputs or the key, unique 0600 kept-record
files, clean one-line errors, readable examples, mismatched client parameters refused, and a
semantic cluster rule that does not chain (issue 10 items 4, 5, 5b, 10; issue 16 items 10, 11)."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from trustfl.defenses.dedup import DedupError, DedupKey, deduplicate
from trustfl.defenses.dedup.client import DedupClient
from trustfl.defenses.dedup.server import DedupServer, ServerView
from trustfl.text import KeyedMinHash

KEY = DedupKey(b"cli-test-key-0123456789abcdef")


def _dedup(argv, capsys):
    from trustfl.cli import main

    rc = main(["dedup", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def files(tmp_path):
    (tmp_path / "sub").mkdir()
    a, b = tmp_path / "a.csv", tmp_path / "sub" / "a.csv"
    a.write_text('text\n"Free entry now!! Win a prize today"\nhello there friend\nunique to the first client\n',
                 encoding="utf-8")
    b.write_text('text\n"free ENTRY now!! win a prize today"\nhello there friendd\nonly the second client has this\n',
                 encoding="utf-8")
    return a, b


def test_write_dedup_names_are_unique_per_input_and_private(tmp_path, files, capsys):
    a, b = files
    kept, key = tmp_path / "kept", tmp_path / "k.key"
    rc, out, err = _dedup([a, b, "--key-file", key, "--out", tmp_path / "r.json", "--write-dedup", kept, "-q"], capsys)
    assert rc == 0, err
    written = sorted(p.name for p in kept.iterdir())
    assert written == ["a.dedup.jsonl", "sub__a.dedup.jsonl"]  # before: both wrote a.dedup.jsonl
    first = [json.loads(x)["text"] for x in (kept / "a.dedup.jsonl").read_text().splitlines()]
    second = [json.loads(x)["text"] for x in (kept / "sub__a.dedup.jsonl").read_text().splitlines()]
    assert len(first) == 3 and second == ["only the second client has this"]
    for p in kept.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["outputs"] == {"0": str(kept / "a.dedup.jsonl"), "1": str(kept / "sub__a.dedup.jsonl")}
    assert f"{b}: kept 1 of 3 -> {kept / 'sub__a.dedup.jsonl'}" in out


def test_output_names_tiers():
    from trustfl.defenses.dedup.command import output_names

    assert output_names(["x/a.csv", "x/b.csv"]) == ["a.dedup.jsonl", "b.dedup.jsonl"]
    assert output_names(["x/a.csv", "x/a.jsonl"]) == ["a.csv.dedup.jsonl", "a.jsonl.dedup.jsonl"]
    assert output_names(["x/a.csv", "x/a.csv"]) == ["a.csv.0.dedup.jsonl", "a.csv.1.dedup.jsonl"]


@pytest.mark.parametrize("case, match", [
    ("out-is-input", "--out '{a}' is an input file"),
    ("out-is-key", "is the key file given to --key-file"),
    ("out-is-dir", "is a directory; give a file path"),
    ("out-exists", "exists; pass --overwrite"),
    ("write-dedup-is-file", "is an existing file, not a directory"),
    ("write-dedup-target-exists", "a.dedup.jsonl' exists; pass --overwrite"),
    ("key-is-dir", "--key-file '{d}' is a directory"),
    ("key-is-input", "is also an input file"),
])
def test_bad_output_paths_are_refused_before_any_work(tmp_path, files, capsys, case, match):
    a, b = files
    key, d = tmp_path / "k.key", tmp_path / "somedir"
    d.mkdir()
    existing = tmp_path / "existing.json"
    existing.write_text("{}")
    args = {"out-is-input": ["--out", a], "out-is-key": ["--out", key], "out-is-dir": ["--out", d],
            "out-exists": ["--out", existing], "write-dedup-is-file": ["--write-dedup", existing],
            "write-dedup-target-exists": ["--write-dedup", d], "key-is-dir": ["--key-file", d],
            "key-is-input": ["--key-file", b]}[case]
    if case == "write-dedup-target-exists":
        (d / "a.dedup.jsonl").write_text("keep me")
    if case == "out-is-key":
        key.write_text("ab" * 32 + "\n")
    argv = [a, b, *args] + ([] if "--key-file" in args else ["--key-file", key])
    argv += [] if "--out" in args else ["--out", tmp_path / "report.json"]
    before = {p: p.read_bytes() for p in (a, b, existing)}
    rc, _, err = _dedup([*argv, "-q"], capsys)
    assert rc == 2 and match.format(a=a, d=d) in err and "Traceback" not in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in before} == before  # nothing overwritten
    assert not (tmp_path / "report.json").exists()
    if case not in ("out-is-key", "key-is-dir", "key-is-input"):
        assert not key.exists()  # refused before the key was generated
    if case == "write-dedup-target-exists":
        assert (d / "a.dedup.jsonl").read_text() == "keep me"


def test_overwrite_replaces_an_old_report_but_never_an_input(tmp_path, files, capsys):
    a, b = files
    old = tmp_path / "r.json"
    old.write_text("old")
    rc, _, err = _dedup([a, b, "--key-file", tmp_path / "k", "--out", old, "--overwrite", "-q"], capsys)
    assert rc == 0 and json.loads(old.read_text())["format"] == "trustfl-dedup-report/1"
    rc, _, err = _dedup([a, b, "--key-file", tmp_path / "k", "--out", a, "--overwrite", "-q"], capsys)
    assert rc == 2 and "is an input file" in err


@pytest.mark.parametrize("content, match", [
    (bytes(range(256)) * 8, "is not a text file"),
    (b"text\n\xff\xfe\xc3\x28 not utf8\n", "is not UTF-8 text"),
    (b"", "is empty"),
    (b"text,label\n", "has a header (columns ['text', 'label']) but no data rows"),
    (b'text\n"  "\n"\t"\n', "no non-empty texts"),
])
def test_unusable_input_files_give_one_clear_line(tmp_path, capsys, content, match):
    bad = tmp_path / "client.csv"
    bad.write_bytes(content)
    good = tmp_path / "good.csv"
    good.write_text("text\nhello\n")
    rc, _, err = _dedup([good, bad, "--key-file", tmp_path / "k", "--out", tmp_path / "r.json", "-q"], capsys)
    assert rc == 2 and match in err and "client.csv" in err
    assert err.startswith("trustfl dedup: error: ") and err.count("\n") == 1
    empty_jsonl = tmp_path / "e.jsonl"
    empty_jsonl.write_text("")
    rc, _, err = _dedup([good, empty_jsonl, "--key-file", tmp_path / "k", "--out", tmp_path / "r.json", "-q"], capsys)
    assert rc == 2 and "e.jsonl' is empty" in err


def test_examples_name_the_files_and_cut_long_texts_with_an_ellipsis(tmp_path, capsys):
    long = "Congratulations you have won a holiday " * 6
    a, b = tmp_path / "alice.csv", tmp_path / "bob.csv"
    a.write_text(f'text\n"{long}"\nfirst\n')
    b.write_text(f'text\n"{long.upper()}"\nsecond\n')
    rc, out, err = _dedup([a, b, "--key-file", tmp_path / "k", "--out", tmp_path / "r.json", "-q"], capsys)
    assert rc == 0, err
    line = next(x for x in out.splitlines() if x.startswith("exact "))
    assert f"{a} #0" in line and f"{b} #0" in line and "\u2026" in line  # files named, cut with an ellipsis
    assert f"  {a}: 2 records, 0 dropped" in out and f"  {b}: 2 records, 1 dropped" in out
    assert "Generating train split" not in out + err and "Creating json" not in out + err


def test_server_refuses_clients_with_different_code_parameters():
    texts = ["the cat sat on the mat today", "a dog ran in the park"]
    c0 = DedupClient(0, texts, KEY, methods=("lexical",), minhash=KeyedMinHash(KEY, ngram=5)).encode()
    c1 = DedupClient(1, texts, KEY, methods=("lexical",), minhash=KeyedMinHash(KEY, ngram=3)).encode()
    c2 = DedupClient(2, texts, KEY, methods=("lexical",), minhash=KeyedMinHash(KEY, shingle="word", ngram=5)).encode()
    with pytest.raises(DedupError, match=r"ngram: 5 \(clients 0, 2\), 3 \(client 1\)") as info:
        DedupServer().find(ServerView(codes=(c0, c1, c2), thresholds={}), ("lexical",))
    assert "shingle: 'char' (clients 0, 1), 'word' (client 2)" in str(info.value)
    # same parameters: the copies are found
    same = DedupClient(1, texts, KEY, methods=("lexical",), minhash=KeyedMinHash(KEY, ngram=5)).encode()
    found = DedupServer().find(ServerView(codes=(c0, same), thresholds={}), ("lexical",))
    assert len(found["lexical"]) == 2


def test_semantic_links_do_not_chain_into_one_cluster():
    """Records on an arc, neighbours at cosine 0.92, two apart at 0.70: a chain, not one topic cluster."""
    angles = np.arange(6) * 0.4
    emb = np.zeros((6, 8), dtype=np.float32)
    emb[:, 0], emb[:, 1] = np.cos(angles), np.sin(angles)
    texts = ["alpha apples", "bravo boats", "charlie cheese", "delta drums", "echo eagles", "foxtrot forks"]
    r = deduplicate({0: texts}, KEY, methods=["semantic"], embeddings={0: emb})
    assert len(r.pairs) == 5  # every neighbour pair is found and confirmed
    cos = emb @ emb.T
    for members in r.clusters:  # no cluster holds two records that are not duplicates of each other's centre
        idx = [i for _, i in members]
        assert len(idx) <= 3 and min(cos[np.ix_(idx, idx)].ravel()) >= 0.69
    assert r.num_dropped < 5  # components would keep 1 of 6


def test_exact_and_lexical_links_still_chain():
    r = deduplicate({0: ["free entry now", "Free entry now!"], 1: ["FREE ENTRY NOW"]}, KEY, methods=["exact"])
    assert r.clusters == [[(0, 0), (0, 1), (1, 0)]]


def test_key_file_that_is_a_directory_is_named_as_such(tmp_path):
    from trustfl.text import TextError, TextKey

    with pytest.raises(TextError, match="is a directory, not a key file"):
        TextKey.load(tmp_path)
    with pytest.raises(TextError, match="is a directory"):
        TextKey.load_or_create(tmp_path)
