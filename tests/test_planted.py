"""Planted-duplicate generator and scorer: edits checked against independent references
(edit distance, word multisets, brute-force pair counting), ground truth checked against
counts computed here from the raw texts."""

from __future__ import annotations

import collections
import itertools
import random

import numpy as np
import pytest

from trustfl.data import load_dataset_source
from trustfl.defenses.dedup.planted import (DUP_TYPES, EditRates, PlantedCorpus, adjudicate_pairs, benchmark_corpus,
                                            case_whitespace_variant, labels_from_clusters, paraphrase_edit,
                                            plant_duplicates, score_dedup, typo_edit, word_swap_edit)
from trustfl.defenses.dedup.planted.edits import _clause_swap
from trustfl.text import normalize_for_matching  # the ground truth's default exact-duplicate rule

TYPES5 = {t: 60 for t in DUP_TYPES}


@pytest.fixture(scope="module")
def sms_texts() -> list[str]:
    return load_dataset_source("sms_spam")["text"][:]


def osa_distance(a: str, b: str) -> int:
    """Optimal-string-alignment (restricted Damerau-Levenshtein) distance, plain dynamic programming."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


# ---------------------------------------------------------------------- edits
def test_typo_edit_distance_is_bounded_by_edit_count(sms_texts):
    rng = random.Random(1)
    for text in sms_texts[:300]:
        new, k = typo_edit(text, 0.02, rng)
        if not any(c.isalpha() for c in text):
            assert k == 0 and new == text
            continue
        assert k == max(1, round(0.02 * len(text)))
        assert 1 <= osa_distance(text, new) <= k


def test_word_swap_keeps_the_words_and_moves_each_by_at_most_one(sms_texts):
    rng = random.Random(2)
    changed = 0
    for text in sms_texts[:300]:
        new, k = word_swap_edit(text, 0.1, rng)
        old_w, new_w = text.split(), new.split()
        assert collections.Counter(old_w) == collections.Counter(new_w)
        moved = [i for i in range(len(old_w)) if old_w[i] != new_w[i]]
        assert len(moved) == 2 * k  # k disjoint swaps of distinct words
        assert all(new_w[i] in (old_w[max(i - 1, 0)], old_w[min(i + 1, len(old_w) - 1)]) for i in moved)
        changed += k > 0
    assert changed > 250


def test_paraphrase_edit_changes_text_and_uses_the_word_list():
    rng = random.Random(3)
    src = "Please call me now, I need help with the money because the doctor is very famous."
    outs = [paraphrase_edit(src, 1.0, rng, filler_prob=0.0, drop_prob=0.0, reorder_prob=0.0) for _ in range(20)]
    for new, k in outs:
        assert new != src and k >= 6  # call, need, help, money, because, doctor, very, famous: all in SYNONYMS
        assert "call" not in new.split() and "phone" in new
    src2 = "I went home early, and then I slept all day long."
    swaps = {_clause_swap(src2, random.Random(seed)) for seed in range(20)}
    assert swaps == {"and then I slept all day long, I went home early.",
                     "then I slept all day long and I went home early."}
    assert _clause_swap("no separators here at all", random.Random(0)) is None


def test_case_whitespace_variant_is_an_exact_duplicate(sms_texts):
    rng = random.Random(4)
    for text in sms_texts[:500]:
        assert normalize_for_matching(case_whitespace_variant(text, rng)) == normalize_for_matching(text)


# ---------------------------------------------------------------------- planting
def test_plant_duplicates_ground_truth_matches_independent_counts(sms_texts):
    corpus = plant_duplicates(sms_texts, counts=TYPES5, n_clients=8, seed=0)
    n = len(sms_texts)
    assert len(corpus) == n + sum(TYPES5.values())
    counts = corpus.type_counts()
    for t in DUP_TYPES:
        assert counts[t] == TYPES5[t]
    # duplicates already in the corpus: records beyond the first of each normalised text, counted here
    by_text = collections.Counter(normalize_for_matching(t) for t in sms_texts)
    assert counts["natural_exact"] == sum(v - 1 for v in by_text.values()) > 300
    assert counts["original"] == len(by_text)
    # every copy points at an original (never at a copy); exact-type copies equal it after normalisation
    src = corpus.source_id
    copies = np.flatnonzero(src >= 0)
    assert set(corpus.dup_type[src[copies]].tolist()) == {"original"}
    for i in copies:
        same = normalize_for_matching(corpus.texts[i]) == normalize_for_matching(corpus.texts[src[i]])
        kind = corpus.dup_type[i]
        if kind in ("exact", "natural_exact") or (kind == "cross_client" and corpus.edits[i] == 0):
            assert same
        else:
            assert not same and corpus.edits[i] >= 1
    # ground-truth clusters: a copy and its source share a cluster; originals without copies are alone
    assert np.all(corpus.cluster[copies] == corpus.cluster[src[copies]])
    sizes = np.bincount(corpus.cluster)
    linked = np.zeros(len(corpus), dtype=bool)
    linked[copies] = linked[src[copies]] = True
    assert np.all((sizes[corpus.cluster] > 1) == linked)
    # cross-client flags and placement
    assert np.array_equal(corpus.cross_client[copies], corpus.client_id[copies] != corpus.client_id[src[copies]])
    assert corpus.cross_client[corpus.dup_type == "cross_client"].all()
    others = np.isin(corpus.dup_type, ["exact", "typo", "word_swap", "paraphrase"])
    frac = corpus.cross_client[others].mean()
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / others.sum())  # same_client_prob = 0.5
    # client views reassemble the corpus
    views = corpus.client_texts()
    assert sum(len(v) for v in views.values()) == len(corpus) and sorted(views) == list(range(8))
    g = corpus.to_global(corpus.client_id, corpus.local_index)
    assert np.array_equal(g, np.arange(len(corpus)))


def test_plant_duplicates_is_deterministic_and_seed_dependent(sms_texts):
    a = plant_duplicates(sms_texts[:2000], counts=TYPES5, seed=7)
    b = plant_duplicates(sms_texts[:2000], counts=TYPES5, seed=7)
    c = plant_duplicates(sms_texts[:2000], counts=TYPES5, seed=8)
    assert a.texts == b.texts and np.array_equal(a.source_id, b.source_id)
    assert np.array_equal(a.client_id, b.client_id)
    assert a.texts != c.texts


def test_rate_sets_the_planted_share_of_the_final_corpus(sms_texts):
    corpus = plant_duplicates(sms_texts, rate=0.1, mix={"typo": 3, "exact": 1}, seed=0)
    planted = np.isin(corpus.dup_type, list(DUP_TYPES)).sum()
    assert abs(planted / len(corpus) - 0.1) < 1 / len(corpus)
    counts = corpus.type_counts()
    assert abs(counts["typo"] - 3 * counts["exact"]) <= 3 and "paraphrase" not in counts


def test_sources_respect_minimum_length(sms_texts):
    rates = EditRates(min_source_chars=100, min_source_words=10)
    corpus = plant_duplicates(sms_texts, counts=TYPES5, rates=rates, seed=1)
    src = corpus.source_id[np.isin(corpus.dup_type, list(DUP_TYPES))]
    assert all(len(normalize_for_matching(corpus.texts[s])) >= 100 for s in src)


@pytest.mark.parametrize("kwargs, match", [
    ({"counts": {"typos": 3}}, "unknown duplicate types"),
    ({"rate": 1.5}, "rate"),
    ({"rate": 0.1, "mix": {"typo": -1}}, "mix"),
    ({"counts": {"typo": 2}, "client_of": [0, 1]}, "client_of"),
    ({"counts": {"cross_client": 2}, "n_clients": 1}, "n_clients >= 2"),
    ({"counts": {"typo": 2}, "min_source_chars": 10_000}, "no source text"),
])
def test_plant_duplicates_rejects_bad_arguments(sms_texts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plant_duplicates(sms_texts[:50], **kwargs)


def test_edit_rates_are_validated():
    with pytest.raises(ValueError, match="typo_rate"):
        EditRates(typo_rate=2.0)


def test_save_load_roundtrip(sms_texts, tmp_path):
    corpus = plant_duplicates(sms_texts[:500], counts={"typo": 5, "exact": 5}, seed=0, min_source_chars=20)
    back = PlantedCorpus.load(corpus.save(tmp_path / "c"))
    assert back.texts == corpus.texts and back.meta == corpus.meta
    for col in ("client_id", "source_id", "edits", "cross_client", "cluster"):
        assert np.array_equal(getattr(back, col), getattr(corpus, col)), col
    assert back.dup_type.tolist() == corpus.dup_type.tolist()


def test_benchmark_corpus_from_the_real_corpora():
    n = 100_000
    corpus = benchmark_corpus(n, dup_rate=0.1, n_clients=8, seed=0)
    assert len(corpus) == n
    planted = np.isin(corpus.dup_type, list(DUP_TYPES))
    assert planted.sum() == n // 10
    # joined records add distinct texts: the only exact duplicates among base records are the real corpora's own
    real = [*load_dataset_source("sms_spam")["text"][:], *load_dataset_source("trec")["text"][:],
            *load_dataset_source("health_tweets")["text"][:]]
    by_text = collections.Counter(normalize_for_matching(t) for t in real)
    assert corpus.type_counts()["natural_exact"] == sum(v - 1 for v in by_text.values())
    assert corpus.meta["joined"] == n - n // 10 - len(real)
    # a joined record is two real texts: spot-check that both halves are real texts of similar length
    real_set = set(real)
    base = np.flatnonzero(~planted)
    joined = [corpus.texts[i] for i in base if corpus.texts[i] not in real_set][:200]
    assert len(joined) == 200
    for t in joined:
        splits = [(t[:k], t[k + 1:]) for k in range(len(t)) if t[k] == " " and t[:k] in real_set
                  and t[k + 1:] in real_set]
        assert splits, t
        left, right = splits[0]
        assert max(len(left), len(right)) <= 2 * min(len(left), len(right)) + 2


# ---------------------------------------------------------------------- scoring
def _brute_force_scores(corpus: PlantedCorpus, pred: np.ndarray) -> dict:
    gt = corpus.cluster
    tp = pp = tt = 0
    for i, j in itertools.combinations(range(len(corpus)), 2):
        p, t = pred[i] == pred[j], gt[i] == gt[j]
        tp += p and t
        pp += p
        tt += t
    per_type = {}
    for kind in set(corpus.dup_type.tolist()) - {"original"}:
        recs = [i for i in range(len(corpus)) if corpus.dup_type[i] == kind]
        rec = np.mean([pred[i] == pred[corpus.source_id[i]] for i in recs])
        partners = [(j, i) for i in recs for j in range(len(corpus)) if j != i and pred[j] == pred[i]]
        prec = np.mean([gt[i] == gt[j] for j, i in partners]) if partners else 1.0
        per_type[kind] = (rec, prec)
    return {"precision": tp / pp if pp else 1.0, "recall": tp / tt, "per_type": per_type}


def test_score_dedup_matches_brute_force_pair_counting(sms_texts):
    corpus = plant_duplicates(sms_texts[:60], counts={"typo": 4, "exact": 4, "cross_client": 3}, seed=3,
                              rates=EditRates(min_source_chars=20, min_source_words=3))
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred = corpus.cluster.copy()
        flip = rng.random(len(corpus)) < 0.2  # perturb: move 20 % of records into random clusters
        pred[flip] = rng.integers(0, len(corpus) // 3, flip.sum())
        s = score_dedup(corpus, pred)
        ref = _brute_force_scores(corpus, pred)
        assert s["pairwise"]["precision"] == pytest.approx(ref["precision"])
        assert s["pairwise"]["recall"] == pytest.approx(ref["recall"])
        for kind, (rec, prec) in ref["per_type"].items():
            assert s["per_type"][kind]["recall"] == pytest.approx(rec), kind
            assert s["per_type"][kind]["precision"] == pytest.approx(prec), kind
    perfect = score_dedup(corpus, corpus.cluster)
    assert perfect["pairwise"]["f1"] == 1.0
    assert all(v["precision"] == 1.0 and v.get("recall", 1.0) == 1.0 for v in perfect["per_type"].values())


def test_extra_true_edges_turn_false_positives_into_true_pairs(sms_texts):
    corpus = plant_duplicates(sms_texts[:200], counts={"typo": 5}, seed=0, rates=EditRates(min_source_chars=20))
    singles = np.flatnonzero(np.bincount(corpus.cluster)[corpus.cluster] == 1)[:2]
    pred = corpus.cluster.copy()
    pred[singles[1]] = pred[singles[0]]
    assert score_dedup(corpus, pred)["pairwise"]["precision"] < 1.0
    assert score_dedup(corpus, pred, extra_true_edges=(singles[:1], singles[1:]))["pairwise"]["precision"] == 1.0


def test_adjudicate_pairs_and_labels_from_clusters():
    texts = ["abcdefgh", "abcdefgx", "zzzzzzzz", "abcdefgh"]

    def shingles(t: str) -> set[str]:
        return {t[i:i + 3] for i in range(len(t) - 2)}

    jac, ok = adjudicate_pairs(texts, np.array([0, 0, 0]), np.array([1, 2, 3]), shingles, 0.6)
    assert jac.tolist() == pytest.approx([5 / 7, 0.0, 1.0]) and ok.tolist() == [True, False, True]
    lab = labels_from_clusters(5, [[0, 3], [1, 4]])
    assert lab[0] == lab[3] and lab[1] == lab[4] and len(set(lab.tolist())) == 3
