"""Accuracy of federated near-duplicate detection on sms_spam with planted duplicates.

Ground truth: sms_spam's own exact duplicates (``natural_exact``, counted here from the raw
texts) plus planted copies of each type over 8 clients (:func:`trustfl.data.plant_duplicates`).
Predicted pairs outside that truth are adjudicated with the *true* Jaccard of character
5-gram shingle sets, computed here with Python sets (an independent reference for what the
keyed MinHash estimates): a pair at or above the threshold is a genuine near-duplicate of the
real data and not a false positive. Definitions of recall / precision per type: see
:func:`trustfl.data.score_dedup`.

Bar (issue 5): precision and recall >= 0.95 for exact and lexical types (natural_exact, exact,
cross_client, typo at ~1 edit / 100 characters, word_swap at ~1 swap / 25 words). Paraphrase-like
edits are reported, with only a sanity floor asserted.
"""

from __future__ import annotations

import collections
import json
import time

import numpy as np
import pytest

from trustfl.data import load_dataset_source
from trustfl.defenses.dedup import DedupKey, DedupResult, KeyedMinHash, deduplicate
from trustfl.defenses.dedup.planted import (EditRates, PlantedCorpus, adjudicate_pairs, labels_from_clusters,
                                            plant_duplicates, score_dedup)
from trustfl.text import normalize_for_matching

THRESHOLD = 0.7
SEMANTIC_THRESHOLD = 0.9
PER_TYPE = 200
RATES = EditRates(typo_rate=0.01, swap_rate=0.04)
KEY = DedupKey.from_passphrase("accuracy test key")
LEXICAL_TYPES = ("natural_exact", "exact", "cross_client", "typo", "word_swap")


def ref_shingles(text: str, n: int = 5) -> set[str]:
    """Character n-grams of the normalised text (the whole text if shorter): the set MinHash estimates on."""
    t = normalize_for_matching(text)
    return {t} if len(t) < n else {t[i:i + n] for i in range(len(t) - n + 1)}


@pytest.fixture(scope="module")
def sms() -> list[str]:
    return load_dataset_source("sms_spam")["text"][:]


@pytest.fixture(scope="module")
def corpus(sms) -> PlantedCorpus:
    counts = {t: PER_TYPE for t in ("exact", "typo", "word_swap", "paraphrase", "cross_client")}
    return plant_duplicates(sms, counts=counts, n_clients=8, seed=0, rates=RATES)  # ground truth: the matching rule


def evaluate(corpus: PlantedCorpus, result: DedupResult, embeddings: np.ndarray | None = None) -> dict:
    """Score a dedup result: map clusters to global ids, adjudicate extra pairs, score per type."""
    ids = corpus.client_global_ids()
    clusters = [[int(ids[c][i]) for c, i in members] for members in result.clusters]
    pred = labels_from_clusters(len(corpus), clusters)
    a = corpus.to_global(result.pairs.client_a, result.pairs.index_a)
    b = corpus.to_global(result.pairs.client_b, result.pairs.index_b)
    jac, genuine = adjudicate_pairs(corpus.texts, a, b, ref_shingles, THRESHOLD)
    if embeddings is not None:  # semantic pairs: genuine when the true embedding cosine reaches the threshold
        genuine |= np.einsum("ij,ij->i", embeddings[a], embeddings[b]) >= SEMANTIC_THRESHOLD - 1e-6
    scores = score_dedup(corpus, pred, extra_true_edges=(a[genuine], b[genuine]))
    scores["adjudication"] = {"pairs": int(len(a)), "genuine": int(genuine.sum())}
    return scores


def report(title: str, scores: dict) -> None:
    rows = {k: {m: (round(v[m], 4) if isinstance(v[m], float) else v[m]) for m in v}
            for k, v in scores["per_type"].items()}
    print(f"\n{title}\n" + json.dumps({"per_type": rows, "pairwise": scores["pairwise"],
                                      "adjudication": scores["adjudication"]}, indent=1))


def test_sms_spam_exact_duplicates_are_in_the_ground_truth(sms, corpus):
    raw = collections.Counter(sms)
    norm = collections.Counter(normalize_for_matching(t) for t in sms)
    # the corpus' own duplicates, counted here from the texts: at least the 315 the issue cites
    assert sum(v - 1 for v in raw.values()) >= 315
    assert corpus.type_counts()["natural_exact"] == sum(v - 1 for v in norm.values())
    print(f"\nsms_spam: {len(sms)} texts; raw: {sum(v > 1 for v in raw.values())} texts occur more than once "
          f"({sum(v - 1 for v in raw.values())} extra copies); after normalisation: "
          f"{sum(v > 1 for v in norm.values())} texts, {sum(v - 1 for v in norm.values())} extra copies")


def test_reference_shingles_are_the_sets_minhash_estimates(corpus):
    mh = KeyedMinHash(KEY, num_perm=128)
    for t in corpus.texts[:300]:
        assert ref_shingles(t) == mh.shingles(t)


def test_planted_lexical_edits_are_moderate_and_not_exact(corpus):
    """The lexical copies are genuine near-duplicates (true Jaccard mostly well above the
    threshold) and none of them is an exact duplicate: an exact-only dedup misses them all."""
    for kind in ("typo", "word_swap"):
        sel = np.flatnonzero(corpus.dup_type == kind)
        jac = np.array([len(ref_shingles(corpus.texts[i]) & ref_shingles(corpus.texts[corpus.source_id[i]]))
                        / len(ref_shingles(corpus.texts[i]) | ref_shingles(corpus.texts[corpus.source_id[i]]))
                        for i in sel])
        assert np.median(jac) < 0.95 and np.quantile(jac, 0.05) > THRESHOLD, kind
    r = deduplicate(corpus.client_texts(), KEY, methods=("exact",))
    s = evaluate(corpus, r)["per_type"]
    assert s["exact"]["recall"] == 1.0 and s["natural_exact"]["recall"] == 1.0
    assert s["typo"]["recall"] == 0.0 and s["word_swap"]["recall"] == 0.0


def test_exact_and_lexical_precision_recall_per_type(corpus):
    t0 = time.perf_counter()
    result = deduplicate(corpus.client_texts(), KEY, methods=("exact", "lexical"), jaccard_threshold=THRESHOLD)
    seconds = time.perf_counter() - t0
    scores = evaluate(corpus, result)
    report(f"exact+lexical on sms_spam + planted ({len(corpus)} records, 8 clients, {seconds:.2f} s)", scores)
    per = scores["per_type"]
    for kind in LEXICAL_TYPES:
        assert per[kind]["recall"] >= 0.95, (kind, per[kind])
        assert per[kind]["precision"] >= 0.95, (kind, per[kind])
    for kind in ("typo", "word_swap"):  # copies on other clients are decided on the server's estimate
        assert per[kind]["recall_cross_client"] >= 0.95 and per[kind]["recall_same_client"] >= 0.95
    # paraphrase-like edits are not a lexical method's target: reported, sanity floor only
    assert per["paraphrase"]["recall"] >= 0.2 and per["paraphrase"]["precision"] >= 0.8
    assert scores["pairwise"]["f1"] >= 0.9


@pytest.mark.integration
def test_semantic_method_recovers_paraphrases(corpus):
    """exact + lexical + semantic (MiniLM SimHash codes): reported honestly; floors are sanity checks."""
    from trustfl.defenses.dedup import embed_texts

    t0 = time.perf_counter()
    emb = embed_texts(corpus.texts, "minilm")
    t1 = time.perf_counter()
    embeddings = {c: emb[g] for c, g in corpus.client_global_ids().items()}
    result = deduplicate(corpus.client_texts(), KEY, methods=("exact", "lexical", "semantic"),
                         jaccard_threshold=THRESHOLD, semantic_threshold=SEMANTIC_THRESHOLD, embeddings=embeddings)
    scores = evaluate(corpus, result, embeddings=emb)
    lexical = evaluate(corpus, deduplicate(corpus.client_texts(), KEY, methods=("exact", "lexical"),
                                           jaccard_threshold=THRESHOLD))
    report(f"exact+lexical+semantic (embedding {t1 - t0:.1f} s, dedup {time.perf_counter() - t1:.1f} s)", scores)
    per, lex = scores["per_type"], lexical["per_type"]
    assert per["paraphrase"]["recall"] > lex["paraphrase"]["recall"] + 0.1
    assert per["paraphrase"]["recall"] >= 0.6 and per["paraphrase"]["precision"] >= 0.8
    for kind in LEXICAL_TYPES:  # adding the semantic method must not lose lexical recall
        assert per[kind]["recall"] >= lex[kind]["recall"] and per[kind]["precision"] >= 0.9, (kind, per[kind])
    # semantic links do not chain (star clusters): pairwise precision 0.978 at recall 0.990 (0.965 with
    # connected components at the same recall)
    assert scores["pairwise"]["precision"] >= 0.97 and scores["pairwise"]["recall"] >= 0.98, scores["pairwise"]
