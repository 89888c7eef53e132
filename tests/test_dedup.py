"""Dedup: normalisation, codes vs slow references and theory, FAISS search vs brute force,
clusters and the keep rule, the protocol, the loop switch and the CLI."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustfl.defenses.dedup import (DedupError, DedupKey, DedupResult, KeyedMinHash, SimHasher, cosine_to_hamming,
                                    deduplicate, equal_code_pairs, exact_codes, hamming, hamming_range_pairs,
                                    keep_mask, minhash_jaccard, minhash_pairs)
from trustfl.defenses.dedup.clusters import cluster_members, component_labels
from trustfl.errors import ConfigError
from trustfl.text import TextError, lsh_bands, normalize_for_matching

KEY = DedupKey(b"test-key-0123456789abcdef")


def test_public_api_star_import():
    import trustfl.defenses.dedup as dd

    namespace: dict = {}
    exec("from trustfl.defenses.dedup import *", namespace)
    assert set(dd.__all__) <= set(namespace) and dd.__all__ == sorted(dd.__all__)


# ---------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("raw, norm", [
    ("  Hello,  WORLD!! :)", "hello world"),
    ("ＦＵＬＬ width", "full width"),           # NFKC
    ("Straße", "strasse"),                     # casefold
    ("don't stop 3.5", "don't stop 3.5"),      # inner punctuation stays
    ("hello-world", "hello-world"),
    ("...", ""),
    ("a\t\nb", "a b"),
])
def test_normalize_for_matching_rule(raw, norm):
    assert normalize_for_matching(raw) == norm


def test_normalize_for_matching_rejects_non_str():
    with pytest.raises(TypeError, match="expects str"):
        normalize_for_matching(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- keys
def test_key_save_load_roundtrip_mode_0600(tmp_path):
    key = DedupKey.generate()
    path = key.save(tmp_path / "k" / "dedup.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert DedupKey.load(path) == key and key.key_id in repr(key) and key.derive("x") != key.derive("y")
    assert DedupKey.from_passphrase("pw") == DedupKey.from_passphrase("pw") != DedupKey.from_passphrase("pw2")
    made, created = DedupKey.load_or_create(tmp_path / "new.key")
    again, created_again = DedupKey.load_or_create(tmp_path / "new.key")
    assert created and not created_again and again == made != key
    assert stat.S_IMODE(os.stat(tmp_path / "new.key").st_mode) == 0o600


def test_key_errors(tmp_path):
    with pytest.raises(TextError, match=">= 16 bytes"):
        DedupKey(b"short")
    with pytest.raises(TextError, match="does not exist"):
        DedupKey.load(tmp_path / "missing.key")
    (tmp_path / "bad.key").write_text("not hex")
    with pytest.raises(TextError, match="hex"):
        DedupKey.load(tmp_path / "bad.key")


# ---------------------------------------------------------------------- exact codes
def test_exact_codes_match_iff_normalized_equal():
    texts = ["Win a prize!", "win a PRIZE", "win a prize now", "", " "]
    c = exact_codes(texts, KEY)
    assert c.shape == (5, 16) and c.dtype == np.uint8
    same = (c[:, None, :] == c[None, :, :]).all(-1)
    norm = [normalize_for_matching(t) for t in texts]
    assert (same == np.array([[a == b for b in norm] for a in norm])).all()


# ---------------------------------------------------------------------- MinHash
def test_shingles_reference():
    mh = KeyedMinHash(KEY, num_perm=16, ngram=3)
    assert mh.shingles("Abcd!") == {"abc", "bcd"}
    assert mh.shingles("ab") == {"ab"}
    assert KeyedMinHash(KEY, num_perm=16, shingle="word", ngram=2).shingles("a b c") == {"a b", "b c"}


def test_signatures_shape_dtype_and_determinism():
    mh = KeyedMinHash(KEY, num_perm=32)
    s = mh.signatures(["hello world", "", "x"])
    assert s.shape == (3, 32) and s.dtype == np.uint32
    np.testing.assert_array_equal(s, KeyedMinHash(KEY, num_perm=32).signatures(["hello world", "", "x"]))
    # a batch boundary does not change a signature
    np.testing.assert_array_equal(mh.signatures(["hello world", "", "x"], batch_size=1), s)


words = st.lists(st.sampled_from(["spam", "ham", "free", "call", "now", "win", "a", "prize", "txt", "ok", "lol"]),
                 min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(a=words, b=words, shingle=st.sampled_from([("char", 4), ("word", 2)]))
def test_minhash_estimates_true_jaccard_within_binomial_tolerance(a, b, shingle):
    """The fraction of equal slots is Binomial(k, J) / k (Broder 1997): within 5 sigma + 2/k of J."""
    k = 256
    mh = KeyedMinHash(KEY, num_perm=k, shingle=shingle[0], ngram=shingle[1])
    ta, tb = " ".join(a), " ".join(b)
    j = mh.jaccard(ta, tb)
    sig = mh.signatures([ta, tb])
    est = float(minhash_jaccard(sig[0], sig[1]))
    assert abs(est - j) <= 5 * math.sqrt(j * (1 - j) / k) + 2 / k


def test_vectorised_true_jaccard_equals_set_reference():
    from trustfl.defenses.dedup import DedupClient

    texts = ["free entry in a weekly comp", "free entry in a weekly competition", "ok lar", "", "ok lar!", "abc"]
    client = DedupClient(0, texts, KEY, methods=["lexical"])
    i, j = np.array([0, 0, 2, 3, 5, 1]), np.array([1, 2, 4, 3, 3, 1])
    ref = [client.minhash.jaccard(texts[x], texts[y]) for x, y in zip(i, j)]
    np.testing.assert_allclose(client.local_scores("lexical", i, j), ref)


# ---------------------------------------------------------------------- SimHash
def test_simhash_hamming_tracks_angle():
    """E[hamming] = bits * theta / pi (Charikar 2002): check over many pairs at known angles."""
    rng = np.random.default_rng(0)
    dim, bits = 64, 256
    hasher = SimHasher(KEY, dim=dim, bits=bits)
    for theta in (0.1, 0.5, 1.0, 2.0):
        x = rng.standard_normal((200, dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        u = rng.standard_normal((200, dim))
        u -= (u * x).sum(1, keepdims=True) * x
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        y = np.cos(theta) * x + np.sin(theta) * u
        h = hamming(hasher.codes(x), hasher.codes(y))
        p = theta / math.pi
        assert abs(h.mean() - bits * p) < 4 * math.sqrt(bits * p * (1 - p) / 200) + 0.5
    assert cosine_to_hamming(1.0, bits) == 0.0


def test_simhash_input_errors():
    with pytest.raises(TextError, match="multiple of 8"):
        SimHasher(KEY, dim=4, bits=12)
    with pytest.raises(TextError, match=r"shape \[n, 4\]"):
        SimHasher(KEY, dim=4, bits=8).codes(np.zeros((2, 5)))


# ---------------------------------------------------------------------- FAISS search vs brute force
@pytest.mark.parametrize("index, shard_size", [("flat", None), ("flat", 37), ("auto", 100)])
def test_hamming_range_search_equals_brute_force(index, shard_size):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (300, 4), dtype=np.uint8)
    codes[150:] = codes[:150] ^ (rng.random((150, 4)) < 0.05).astype(np.uint8)  # near neighbours
    a, b, d = hamming_range_pairs(codes, 6, index=index, shard_size=shard_size)
    dist = hamming(codes[:, None], codes[None])
    ii, jj = np.nonzero(np.triu(dist <= 6, 1))
    assert sorted(zip(a.tolist(), b.tolist())) == sorted(zip(ii.tolist(), jj.tolist()))
    np.testing.assert_array_equal(d, dist[a, b])


def test_ivf_range_search_finds_the_near_pairs():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    near = base ^ (rng.random((2000, 32)) < 0.01).astype(np.uint8)  # ~2.5 bits flipped of 256
    codes = np.concatenate([base, near])
    a, b, _ = hamming_range_pairs(codes, 10, index="ivf", nprobe=8)
    found = set(zip(a.tolist(), b.tolist()))
    truth = {(i, i + 2000) for i in range(2000) if hamming(base[i], near[i]) <= 10}
    assert len(found & truth) / len(truth) > 0.95


@pytest.mark.parametrize("shard_size", [None, 64])
def test_minhash_pairs_equal_brute_force_on_banded_candidates(shard_size):
    """With rows=1 every pair sharing a slot is a candidate, so the result is the exact brute force
    (up to identical signatures, which are searched through one representative: same components)."""
    rng = np.random.default_rng(3)
    sig = rng.integers(0, 6, (200, 16), dtype=np.uint32)
    sig[100:] = np.where(rng.random((100, 16)) < 0.2, rng.integers(0, 6, (100, 16)), sig[:100])
    sig[5] = sig[7]  # identical signatures
    a, b, s = minhash_pairs(sig, 0.6, bands=16, rows=1, shard_size=shard_size)
    est = (sig[:, None, :] == sig[None, :, :]).mean(-1)
    ii, jj = np.nonzero(np.triu(est >= 0.6, 1))
    truth = set(zip(ii.tolist(), jj.tolist()))
    found = set(zip(a.tolist(), b.tolist()))
    assert found <= truth and truth - found == {p for p in truth if 7 in p and (5, p[1] if p[0] == 7 else p[0]) in
                                                found or (p[0], 5) in found and 7 in p}
    np.testing.assert_array_equal(component_labels(200, a, b), component_labels(200, ii, jj))
    np.testing.assert_allclose(s, est[a, b])


def test_equal_code_pairs_are_stars_and_lsh_bands_fit_faiss():
    a, b = equal_code_pairs(np.array([[3], [1], [3], [3], [1], [2]], dtype=np.uint8))
    assert sorted(zip(a.tolist(), b.tolist())) == [(0, 2), (0, 3), (1, 4)]
    for t in (0.5, 0.7, 0.9):
        bands, rows = lsh_bands(t, 128)
        assert rows <= 7 and bands * rows <= 128
    with pytest.raises(TextError, match="rows <= 7"):
        minhash_pairs(np.zeros((3, 16), np.uint32), 0.5, bands=2, rows=8)


# ---------------------------------------------------------------------- clusters, keep rule
def test_components_and_keep_rule():
    labels = component_labels(7, np.array([0, 1, 4]), np.array([1, 3, 6]))
    groups = [g.tolist() for g in cluster_members(labels)]
    assert groups == [[0, 1, 3], [4, 6]]
    keep = keep_mask(labels)
    assert keep.tolist() == [True, False, True, False, True, True, False]


def test_deduplicate_clusters_keep_smallest_client_then_index():
    texts = {
        2: ["hello there", "Free entry now!!", "unique two"],
        0: ["nothing alike", "free entry NOW"],
        1: ["Hello there.", "free entry now", "free entry now"],
    }
    r = deduplicate(texts, KEY, methods=["exact"])
    assert isinstance(r, DedupResult)
    assert r.clusters == [[(0, 1), (1, 1), (1, 2), (2, 1)], [(1, 0), (2, 0)]]
    assert r.keep[0].tolist() == [True, True]
    assert r.keep[1].tolist() == [True, False, False]
    assert r.keep[2].tolist() == [False, False, True]
    assert r.num_dropped == 4 and r.counts()["cross_client_clusters"] == 2
    # groups of equal codes are reported as stars from their smallest member
    assert r.pair_counts() == {"0-1": {"exact": 2}, "0-2": {"exact": 1}, "1-2": {"exact": 1}}


def test_lexical_finds_typos_and_rejects_unrelated_texts():
    base = ["Congratulations you have won a 1000 pound prize call now to claim",
            "Are you coming to the party at the beach house tonight or not",
            "The meeting has been moved to thursday afternoon at three pm"]
    edited = ["Congratulations you have won a 1000 pound prise call now to claim",
              "Are you coming to the party at the beach house tonite or not"]
    r = deduplicate({0: base, 1: edited}, KEY, methods=["lexical"], jaccard_threshold=0.7)
    assert sorted(map(sorted, r.clusters)) == [[(0, 0), (1, 0)], [(0, 1), (1, 1)]]
    assert r.keep[1].tolist() == [False, False]


def test_within_client_candidates_are_confirmed_with_true_jaccard():
    mh = KeyedMinHash(KEY)
    a = "please call me back when you get this message thanks a lot"
    b = "please call me back when you get this message thanks"
    j = mh.jaccard(a, b)
    r = deduplicate([a, b, "something else"], KEY, methods=["lexical"], jaccard_threshold=min(0.99, j + 0.01))
    assert r.candidates["lexical"]["within_client"] >= 1 and r.candidates["lexical"]["rejected_by_client"] >= 1
    assert len(r.clusters) == 0
    r2 = deduplicate([a, b], KEY, methods=["lexical"], jaccard_threshold=j - 0.01)
    assert len(r2.pairs) == 1 and abs(r2.pairs[0].local_score - j) < 1e-12


def test_report_json_and_client_examples(tmp_path):
    r = deduplicate({0: ["Call me now!", "bye"], 1: ["call me now"]}, KEY, methods=["exact", "lexical"])
    path = r.write_json(tmp_path / "r.json")
    doc = json.loads(path.read_text())
    assert doc["counts"]["dropped"] == 1 and doc["clusters"] == [[[0, 0], [1, 0]]]
    assert "call me" not in path.read_text().lower()  # ids and scores only
    ex = r.client_examples(1, ["call me now"])
    assert ex[0]["b"] == {"client": 1, "index": 0, "text": "call me now"} and "text" not in ex[0]["a"]
    assert "records" in r.summary()
    with pytest.raises(DedupError, match="records"):
        r.client_examples(1, ["a", "b"])


@pytest.mark.parametrize("kwargs, match", [
    ({"methods": ["fuzzy"]}, r"dedup\.methods: must be a non-empty subset"),
    ({"methods": []}, r"dedup\.methods: must be a non-empty subset"),
    ({"jaccard_threshold": 0.0}, r"dedup\.jaccard_threshold: must be in \(0, 1\]"),
    ({"semantic_threshold": 1.5}, r"dedup\.semantic_threshold"),
    ({"rows": 8}, r"dedup\.rows"),
    ({"treshold": 0.5}, r"dedup: unknown key\(s\) \['treshold'\]"),
])
def test_deduplicate_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        deduplicate(["a", "b"], KEY, **kwargs)


def test_deduplicate_bad_inputs():
    with pytest.raises(DedupError, match="single str"):
        deduplicate("just one string", KEY)
    with pytest.raises(DedupError, match="not str"):
        deduplicate({0: ["ok", None]}, KEY, methods=["exact"])  # type: ignore[list-item]
    with pytest.raises(DedupError, match="client ids must be ints"):
        deduplicate({"a": ["x"]}, KEY, methods=["exact"])  # type: ignore[dict-item]


def test_semantic_with_precomputed_embeddings_and_confirmation():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((6, 32)).astype(np.float32)
    e[3] = e[0] + 0.05 * rng.standard_normal(32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    texts = [f"t{i}" for i in range(6)]
    r = deduplicate({0: texts[:3], 1: texts[3:]}, KEY, methods=["semantic"], semantic_threshold=0.95,
                    embeddings={0: e[:3], 1: e[3:]})
    assert r.clusters == [[(0, 0), (1, 0)]]
    assert r.params["semantic"]["radius"] == math.floor(256 * math.acos(0.85) / math.pi)


# ---------------------------------------------------------------------- real corpus, real MiniLM
@pytest.mark.integration
def test_sms_spam_exact_duplicates_all_found():
    from collections import Counter

    from trustfl.data import load_dataset_source

    texts = load_dataset_source("sms_spam")["text"][:]
    clients = {c: texts[c::3] for c in range(3)}
    r = deduplicate(clients, KEY, methods=["exact"])
    expected = sum(v - 1 for v in Counter(normalize_for_matching(t) for t in texts).values())
    assert r.num_dropped == expected


@pytest.mark.integration
def test_semantic_minilm_paraphrase_found():
    from trustfl.defenses.dedup import embed_texts

    texts = ["The meeting is moved to Thursday afternoon.", "The meeting has been moved to Thursday afternoon.",
             "I love pizza with extra cheese."]
    e = embed_texts(texts, progress=False)
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    r = deduplicate({0: texts[:1] + texts[2:], 1: texts[1:2]}, KEY, methods=["semantic"], semantic_threshold=0.85)
    assert r.clusters == [[(0, 0), (1, 0)]]


# ---------------------------------------------------------------------- loop switch
def test_loop_switch_drops_duplicates_and_records_counts(tiny_bert_dir, tmp_path):
    from trustfl.config import RunConfig
    from trustfl.federation import Federation
    from trustfl.rundir import RunDir

    cfg = RunConfig.from_dict({
        "name": "dd", "seed": 0, "model": {"name": tiny_bert_dir, "max_length": 24},
        "lora": {"r": 2, "top_layers": 2}, "data": {"name": "sms_spam", "max_records": 600},
        "partition": {"num_clients": 3, "scheme": "iid"}, "client": {"batch_size": 8, "max_steps": 1},
        "federation": {"rounds": 1}, "dedup": {"enabled": True, "methods": ["exact", "lexical"]}})
    fed = Federation(cfg, out_dir=tmp_path / "run", progress=False)
    fed.setup()
    train = {c: [normalize_for_matching(t) for t in d["text"][:]] for c, d in fed.client_train.items()}
    flat = [t for ts in train.values() for t in ts]
    assert len(flat) == len(set(flat))  # no exact duplicates left, within or across clients
    info = RunDir(tmp_path / "run").manifest["extra"]["dedup"]
    assert info["dropped"] > 0 and info["records_after"] == len(flat)
    assert info["records_before"] - info["dropped"] == info["records_after"]
    assert sum(len(v) for v in info["dropped_rows"].values()) == info["dropped"]


def test_loop_switch_refuses_a_client_left_without_records():
    from datasets import Dataset

    from trustfl.config import RunConfig
    from trustfl.defenses.dedup import DedupError
    from trustfl.defenses.dedup.wiring import deduplicate_clients

    cfg = RunConfig.from_dict({"name": "dd", "seed": 0, "dedup": {"enabled": True, "methods": ["exact"]}})
    a = Dataset.from_dict({"text": ["free prize now", "see you at noon"], "row_id": [0, 1]})
    b = Dataset.from_dict({"text": ["Free prize now!", "see you at noon"], "row_id": [2, 3]})
    with pytest.raises(DedupError, match="client 1's 2 training records"):
        deduplicate_clients({0: a, 1: b}, cfg)


def test_dedup_settings_validation():
    from trustfl.config import RunConfig
    from trustfl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"dedup.methods"):
        RunConfig.from_dict({"dedup": {"methods": ["fuzzy"]}})
    with pytest.raises(ConfigError, match=r"dedup.jaccard_threshold"):
        RunConfig.from_dict({"dedup": {"jaccard_threshold": 0}})
    with pytest.raises(ConfigError, match=r"unknown key"):
        RunConfig.from_dict({"dedup": {"treshold": 0.5}})


# ---------------------------------------------------------------------- settings: one source of defaults
def test_deduplicate_takes_every_protocol_default_from_dedup_settings():
    """deduplicate() declares no protocol-parameter defaults of its own: they are DedupSettings fields."""
    import dataclasses
    import inspect

    from trustfl.defenses.dedup import DedupSettings

    params = inspect.signature(deduplicate).parameters
    assert set(params) == {"client_texts", "key", "settings", "embeddings", "keep_server_view", "progress",
                           "overrides"}
    assert params["settings"].default is None
    fields = {f.name for f in dataclasses.fields(DedupSettings)}
    assert not (set(params) - {"settings", "overrides"}) & fields


def test_deduplicate_defaults_behave_as_dedup_settings_defaults():
    from trustfl.defenses.dedup import DedupSettings

    texts = {0: ["Call me now!", "the quick brown fox jumps over the lazy dog", "bye"],
             1: ["call me now", "the quick brown fox jumps over the lazy dog!!", "the quick brown fox jumped over"]}
    d = DedupSettings()
    implicit = deduplicate(texts, KEY)
    explicit = deduplicate(texts, KEY, d)
    spelled = deduplicate(texts, KEY, methods=d.methods, jaccard_threshold=d.jaccard_threshold, num_perm=d.num_perm,
                          shingle=d.shingle, ngram=d.ngram, confirm=d.confirm, confirm_margin=d.confirm_margin)
    for r in (explicit, spelled):
        assert r.clusters == implicit.clusters and r.thresholds == implicit.thresholds
        assert {k: v for k, v in r.params.items() if k != "lexical"} == \
            {k: v for k, v in implicit.params.items() if k != "lexical"}
    assert implicit.params["methods"] == d.methods and implicit.params["confirm"] is d.confirm
    assert implicit.params["confirm_margin"] == d.confirm_margin and implicit.params["shard_size"] == d.shard_size
    lex = implicit.params["lexical"]
    assert (lex["num_perm"], lex["shingle"], lex["ngram"]) == (d.num_perm, d.shingle, d.ngram)
    assert implicit.thresholds == {"exact": 1.0, "jaccard": d.jaccard_threshold}
    # overrides replace single fields of the given settings
    r = deduplicate(texts, KEY, DedupSettings(methods=["exact"]), jaccard_threshold=0.9)
    assert r.params["methods"] == ["exact"] and r.thresholds == {"exact": 1.0}


def test_cli_defaults_are_dedup_settings_defaults(tmp_path):
    from trustfl.cli import build_parser
    from trustfl.defenses.dedup import DedupSettings
    from trustfl.defenses.dedup.command import _FLAGS, settings_from_args

    args = build_parser().parse_args(["dedup", "x.csv", "--key-file", str(tmp_path / "k")])
    d = DedupSettings()
    assert settings_from_args(args) == d
    assert args.confirm is d.confirm
    for flag, field in _FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        assert (value.split(",") if field == "methods" else value) == getattr(d, field), flag
    args = build_parser().parse_args(["dedup", "x.csv", "--key-file", "k", "--methods", "lexical", "--ngram", "3",
                                      "--no-confirm"])
    assert settings_from_args(args) == DedupSettings(methods=["lexical"], ngram=3, confirm=False)


@pytest.mark.parametrize("field, value, match", [
    ("methods", ["fuzzy"], "must be a non-empty subset"),
    ("methods", ["exact", "exact"], "repeated entries"),
    ("jaccard_threshold", 0, r"must be in \(0, 1\]"),
    ("jaccard_threshold", "high", "must be a number"),
    ("semantic_threshold", -1.0, r"must be in \(-1, 1\]"),
    ("num_perm", 4, "must be >= 8"),
    ("num_perm", 64.0, "must be an int"),
    ("shingle", "byte", "must be 'char' or 'word'"),
    ("ngram", 0, "must be >= 1"),
    ("simhash_bits", 12, "multiple of 8"),
    ("confirm", "yes", "true or false"),
    ("confirm_margin", 1.0, r"must be in \[0, 1\)"),
    ("embed_model", "", "non-empty str"),
    ("embed_batch_size", 0, "must be >= 1"),
    ("max_length", 1, "must be >= 2"),
    ("bands", 0, "must be >= 1 or unset"),
    ("rows", 8, r"must be in \[1, 7\]"),
    ("index", "hnsw", "must be one of"),
    ("shard_size", 0, "must be >= 1 or unset"),
    ("nprobe", 0, "must be >= 1"),
])
def test_bad_dedup_settings_raise_config_error_with_the_field_path(field, value, match):
    from trustfl.defenses.dedup import DedupSettings

    with pytest.raises(ConfigError, match=rf"^dedup\.{field}: .*{match}"):
        DedupSettings(**{field: value})
    with pytest.raises(ConfigError, match=rf"^dedup\.{field}: "):
        deduplicate(["a", "b"], KEY, **{field: value})


def test_dedup_settings_bands_times_rows_fit_num_perm():
    from trustfl.defenses.dedup import DedupSettings

    with pytest.raises(ConfigError, match=r"dedup\.bands: bands \* rows must be <= num_perm = 16"):
        DedupSettings(num_perm=16, bands=5, rows=4)
    assert DedupSettings(methods="exact, lexical").methods == ["exact", "lexical"]  # CLI-style string accepted


# ---------------------------------------------------------------------- CLI
def test_cli_end_to_end_on_csv(tmp_path, capsys):
    from trustfl.cli import main

    csv = tmp_path / "msgs.csv"
    csv.write_text('text,client\n"Free entry now!!",a\nhello there friend,a\n"free ENTRY now",b\n'
                   "hello there friendd,b\nsomething else entirely,b\n", encoding="utf-8")
    out, key = tmp_path / "report.json", tmp_path / "dedup.key"
    rc = main(["dedup", str(csv), "--client-column", "client", "--key-file", str(key), "--out", str(out),
               "--write-dedup", str(tmp_path / "kept"), "-q"])
    assert rc == 0 and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    doc = json.loads(out.read_text())
    assert doc["counts"]["dropped"] == 2 and doc["counts"]["cross_client_clusters"] == 2
    kept = (tmp_path / "kept" / "msgs.1.dedup.jsonl").read_text().splitlines()
    assert [json.loads(x)["text"] for x in kept] == ["something else entirely"]
    assert stat.S_IMODE(os.stat(tmp_path / "kept" / "msgs.1.dedup.jsonl").st_mode) == 0o600
    # the same key file is reused: same key id in the next report (an existing --out needs --overwrite)
    assert main(["dedup", str(csv), "--client-column", "client", "--key-file", str(key), "--out", str(out), "-q"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["dedup", str(csv), "--client-column", "client", "--key-file", str(key), "--out", str(out), "-q",
                 "--overwrite"]) == 0
    assert json.loads(out.read_text())["params"]["key_id"] == doc["params"]["key_id"]


@pytest.mark.parametrize("args, match", [
    (["missing.csv"], "does not exist"),
    (["{csv}", "--jaccard-threshold", "1.5"], "jaccard-threshold"),
    (["{csv}", "--methods", "exact,fuzzy"], "--methods: must be a non-empty subset"),
    (["{csv}", "--num-perm", "4"], "--num-perm: must be >= 8"),
    (["{csv}", "--text-column", "body"], "text_column='body' is not a column"),
    (["{csv}", "--client-column", "nope"], "--client-column 'nope' is not a column"),
    (["{empty}"], "no non-empty texts"),
])
def test_cli_bad_input_gives_clear_error(tmp_path, capsys, args, match):
    from trustfl.cli import main

    csv = tmp_path / "m.csv"
    csv.write_text("text,client\nhello,a\n", encoding="utf-8")
    empty = tmp_path / "e.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    argv = ["dedup", *[a.format(csv=csv, empty=empty) for a in args], "--key-file", str(tmp_path / "k"), "-q"]
    assert main(argv) == 2
    assert match in capsys.readouterr().err
