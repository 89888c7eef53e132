"""Synthetic-data origin checks (trustfl.audits.origin): copies, LCS, DCR, attribution, report, CLI.

Fast tests use tiny models built from configs (conftest) and small real corpora; the one
integration test uses the real MiniLM encoder.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trustfl.audits.origin import (CopyThresholds, OriginError, OriginReport, TextCorpus, attribute, binomial_sf,
                                   dcr_from_distances, dcr_test, detect_copies, likelihood_ratio_scores,
                                   load_corpus, load_origin_config, longest_common_substring, mann_whitney_less,
                                   nearest_cosine, nearest_minhash, roc_auc, sample_texts, youden_threshold)
from trustfl.audits.origin.lcs import NgramIndex
from trustfl.text import KeyedMinHash, TextKey, normalize_for_matching
from trustfl.errors import ConfigError

KEY = TextKey(b"origin-test-key-0123456789abcdef")


# ---------------------------------------------------------------------------- references
def lcs_bruteforce(a: str, b: str) -> int:
    """Obviously-correct longest common substring length: try every substring of a."""
    best = 0
    for i in range(len(a)):
        for j in range(i + best + 1, len(a) + 1):
            if a[i:j] in b:
                best = j - i
            else:
                break
    return best


def lcs_dp_reference(a: str, b: str) -> int:
    """The textbook O(|a| |b|) dynamic programme in plain Python (L[i][j] = L[i-1][j-1] + 1 on a match)."""
    best = 0
    prev = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


@pytest.fixture(scope="module")
def sms_texts() -> list[str]:
    from trustfl.data import sms_spam

    texts = sms_spam()["text"][:]
    seen, out = set(), []
    for t in texts:  # distinct normalised texts, so "unrelated" really is unrelated
        n = normalize_for_matching(t)
        if n not in seen and len(n) >= 20:
            seen.add(n)
            out.append(t)
    return out


# ---------------------------------------------------------------------------- public API
def test_star_import_and_sorted_all():
    import trustfl.audits.origin as origin

    assert origin.__all__ == sorted(origin.__all__)
    ns: dict = {}
    exec("from trustfl.audits.origin import *", ns)
    assert all(name in ns for name in origin.__all__)


# ---------------------------------------------------------------------------- LCS
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abc ", max_size=30), st.text(alphabet="abc ", max_size=30))
def test_lcs_matches_bruteforce(a, b):
    length, sa, sb = longest_common_substring(a, b)
    assert length == lcs_bruteforce(a, b) == lcs_dp_reference(a, b)
    assert a[sa:sa + length] == b[sb:sb + length]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="abcd ", min_size=0, max_size=40), min_size=1, max_size=8),
       st.text(alphabet="abcd ", max_size=40), st.integers(min_value=8, max_value=14))
def test_ngram_index_has_no_false_negatives(refs, query, n):
    """The index flags a query iff brute force over all references finds an LCS >= n (raw text)."""
    idx = NgramIndex(refs, min_chars=n, key=KEY, normalize=False, max_verify=1000)
    match = idx.query([query])[0]
    brute = max(lcs_bruteforce(query, r) for r in refs)
    assert (match is not None) == (brute >= n)
    if match is not None:
        assert match.length == brute


def test_planted_copies_found_and_nothing_on_unrelated_text(sms_texts):
    rng = np.random.default_rng(0)
    refs = sms_texts[:400]
    long_refs = [i for i, t in enumerate(refs) if len(normalize_for_matching(t)) >= 80][:10]
    filler = ["zebra quantum fjord " * 2, "lorem ipsum dolor sit amet "]
    synthetic, truth_exact, truth_lcs = [], {}, {}
    for k, i in enumerate(long_refs[:4]):  # exact copies up to case / punctuation / spacing
        truth_exact[len(synthetic)] = i
        synthetic.append("  " + refs[i].upper() + " !!")
    for k, i in enumerate(long_refs[4:8]):  # a 60-char substring inside new text
        s = int(rng.integers(0, len(normalize_for_matching(refs[i])) - 60))
        truth_lcs[len(synthetic)] = i
        synthetic.append(filler[k % 2] + normalize_for_matching(refs[i])[s:s + 60] + " qwxz")
    near_miss = len(synthetic)  # 49 characters shared: below the 50-char criterion
    synthetic.append("xylophone " + normalize_for_matching(refs[long_refs[8]])[:49] + " vvv")
    other_start = len(synthetic)
    synthetic += sms_texts[2000:2030]  # other real messages: spam templates may share long substrings
    unrelated_start = len(synthetic)
    from trustfl.data import trec

    synthetic += trec()["text"][:30]  # another corpus altogether: questions
    res = detect_copies(synthetic, refs, methods="exact,lcs,minhash", key=KEY)
    flagged = {f.index: f for f in res.flagged}
    for q, i in truth_exact.items():
        assert {"exact", "lcs", "minhash"} <= set(flagged[q].criteria)
        assert flagged[q].nearest["exact"]["reference"]["index"] == i and flagged[q].reference["index"] == i
    for q, i in truth_lcs.items():
        assert "lcs" in flagged[q].criteria and "exact" not in flagged[q].criteria
        assert flagged[q].nearest["lcs"]["reference"]["index"] == i
        assert flagged[q].nearest["lcs"]["score"] >= 60
    assert near_miss not in flagged
    assert res.findings[near_miss].nearest["lcs"]["score"] == 0.0
    # other real messages: LCS flags exactly what brute force over all pairs says
    for q in range(other_start, len(synthetic)):
        brute = max(lcs_bruteforce(normalize_for_matching(synthetic[q]), normalize_for_matching(r)) for r in refs)
        assert (q in flagged and "lcs" in flagged[q].criteria) == (brute >= 50)
    assert not any(q >= unrelated_start for q in flagged)  # unrelated text: nothing flagged by any method


def test_embedding_criterion_uses_nearest_cosine():
    rng = np.random.default_rng(1)
    ref_emb = rng.normal(size=(20, 16)).astype(np.float32)
    syn_emb = np.stack([ref_emb[7] * 3.0, rng.normal(size=16), ref_emb[3] + 0.01 * rng.normal(size=16)])
    res = detect_copies(["a b c", "d e f", "g h i"], TextCorpus.from_texts([f"r{i}" for i in range(20)],
                                                                           clients=[i % 4 for i in range(20)]),
                        methods=["embedding"], synthetic_embeddings=syn_emb, reference_embeddings=ref_emb)
    assert [f.criteria for f in res.findings] == [("embedding",), (), ("embedding",)]
    assert res.findings[0].reference == {"index": 7, "client": "3", "record": 1}
    assert res.findings[2].nearest["embedding"]["reference"]["index"] == 3


def test_nearest_neighbours_match_bruteforce():
    rng = np.random.default_rng(2)
    q, r = rng.normal(size=(30, 8)), rng.normal(size=(50, 8))
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (r / np.linalg.norm(r, axis=1, keepdims=True)).T
    idx, sim = nearest_cosine(q, r)
    assert (idx == cos.argmax(1)).all() and np.allclose(sim, cos.max(1), atol=1e-5)
    idx, _ = nearest_cosine(r, r, exclude_self=True)
    self_cos = (r / np.linalg.norm(r, axis=1, keepdims=True))
    self_cos = self_cos @ self_cos.T
    np.fill_diagonal(self_cos, -2)
    assert (idx == self_cos.argmax(1)).all()
    sq, sr = rng.integers(0, 3, size=(20, 16)), rng.integers(0, 3, size=(40, 16))
    jac = (sq[:, None, :] == sr[None, :, :]).mean(2)
    idx, j = nearest_minhash(sq, sr, chunk_pairs=100)
    assert np.allclose(j, jac.max(1)) and (idx == jac.argmax(1)).all()


# ---------------------------------------------------------------------------- statistics
def test_binomial_tail_against_exact_fractions_and_scipy():
    from scipy.stats import binomtest

    for n, x, p in [(10, 8, 0.5), (37, 30, 2 / 3), (200, 112, 0.5), (5, 0, 0.3), (12, 12, 0.9)]:
        exact = sum(Fraction(math.comb(n, k)) * Fraction(p) ** k * (1 - Fraction(p)) ** (n - k)
                    for k in range(x, n + 1))
        assert binomial_sf(x, n, p) == pytest.approx(float(exact), rel=1e-9, abs=1e-300)
        assert binomial_sf(x, n, p) == pytest.approx(binomtest(x, n, p, alternative="greater").pvalue, rel=1e-9)


def test_dcr_fraction_and_tests_against_independent_computation():
    from scipy.stats import binomtest

    rng = np.random.default_rng(3)
    st_, sh = rng.random(60).round(1), rng.random(60).round(1)  # coarse: some ties
    ht = rng.random(40)
    r = dcr_from_distances(st_, sh, ht, n_train=300, n_holdout=100)
    closer, further = int(sum(a < b for a, b in zip(st_, sh))), int(sum(a > b for a, b in zip(st_, sh)))
    assert (r.closer_to_train, r.closer_to_holdout, r.ties) == (closer, further, 60 - closer - further)
    assert r.ties > 0 and r.fraction_closer_to_train == closer / (closer + further)
    assert r.expected_fraction == 0.75
    assert r.binomial_p == pytest.approx(binomtest(closer, closer + further, 0.75, alternative="greater").pvalue)
    u_brute = sum((a > b) + 0.5 * (a == b) for a in st_ for b in ht)
    assert r.mannwhitney_u == pytest.approx(u_brute)


def test_dcr_calibrated_under_null_and_detects_memorisation():
    """Synthetic = fresh draws: p-values ~ uniform (few rejections); synthetic = noisy train copies: tiny p."""
    rng = np.random.default_rng(4)
    rejections_binom = rejections_mw = 0
    reps = 60
    for _ in range(reps):
        train, hold, syn = rng.normal(size=(60, 6)), rng.normal(size=(20, 6)), rng.normal(size=(40, 6))
        r = dcr_test(syn, train, hold)
        assert r.expected_fraction == 0.75
        rejections_binom += r.binomial_p < 0.05
        rejections_mw += r.mannwhitney_p < 0.05
    assert rejections_binom <= 0.15 * reps and rejections_mw <= 0.15 * reps
    train, hold = rng.normal(size=(60, 6)), rng.normal(size=(20, 6))
    r = dcr_test(train[:40] + 0.05 * rng.normal(size=(40, 6)), train, hold)
    assert r.fraction_closer_to_train == 1.0 and r.binomial_p < 1e-4 and r.mannwhitney_p < 1e-6
    mh = KeyedMinHash(KEY, num_perm=64)
    texts = [f"message number {i} about topic {i * 7 % 13} and more words {i * i}" for i in range(60)]
    r = dcr_test(mh.signatures(texts[:20]), mh.signatures(texts[:40]), mh.signatures(texts[40:]), space="minhash")
    assert r.closer_to_train == 20 and r.median_dcr_synthetic == 0.0


def test_roc_auc_hand_computed_and_against_sklearn():
    # pairs (pos > neg): 0.9 beats 3, 0.7 beats 2, 0.4 beats 1 and ties 1 -> (6 + 0.5) / 9
    assert roc_auc(np.array([0.9, 0.4, 0.7]), np.array([0.1, 0.4, 0.8])) == pytest.approx(6.5 / 9)
    assert roc_auc(np.array([1.0, 2.0]), np.array([0.0, -1.0])) == 1.0
    assert roc_auc(np.array([0.0]), np.array([1.0])) == 0.0
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    pos, neg = rng.integers(0, 6, 40).astype(float), rng.integers(0, 5, 30).astype(float)  # many ties
    ref = roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[pos, neg])
    assert roc_auc(pos, neg) == pytest.approx(ref)


def test_youden_threshold_and_attribution_split():
    assert youden_threshold(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0, 5.5])) == pytest.approx(3.5)
    r = attribute(np.arange(20, 30, dtype=float), np.arange(0, 10, dtype=float), seed=1)
    assert r.auc == r.auc_all == 1.0 and r.tpr == 1.0 and r.fpr == 0.0 and 9 < r.threshold < 20
    assert r.n_calibration + r.n_evaluation == 20
    with pytest.raises(OriginError, match="calibration_fraction"):
        attribute(np.ones(4), np.zeros(4), calibration_fraction=1.0)


def test_mann_whitney_statistic_is_brute_force_u():
    a, b = np.array([0.1, 0.2, 0.5, 0.5]), np.array([0.5, 0.6, 0.9])
    u, p = mann_whitney_less(a, b)
    assert u == sum((x > y) + 0.5 * (x == y) for x in a for y in b) and 0 < p < 0.1


# ---------------------------------------------------------------------------- attribution with tiny LMs
def _train_lm(model: torch.nn.Module, tokenizer, texts: list[str], steps: int, seed: int) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    cls = tokenizer.cls_token_id
    enc = [[cls] + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, enc))
    ids = torch.tensor([e + [tokenizer.pad_token_id] * (width - len(e)) for e in enc])
    mask = (torch.arange(width)[None, :] < torch.tensor([len(e) for e in enc])[:, None]).long()
    labels = ids.masked_fill(mask == 0, -100)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
    model.eval()


def _weather_and_sports(rng: np.random.Generator, n_weather: int, n_sports: int) -> tuple[list[str], list[str]]:
    """Two small templated corpora: G is trained on the first, the second is "human text" of another kind."""
    weather = [f"the weather today is {rng.choice(['sunny', 'cloudy', 'rainy', 'windy'])} and "
               f"{rng.choice(['warm', 'cold', 'mild'])} in the {rng.choice(['north', 'south', 'east'])}"
               for _ in range(n_weather)]
    sports = [f"the {rng.choice(['home', 'away'])} team scored {rng.integers(1, 5)} goals against "
              f"{rng.choice(['city', 'united', 'rovers'])} last {rng.choice(['night', 'week'])}" for _ in range(n_sports)]
    return weather, sports


def test_attribution_separates_samples_of_g_from_other_text(tiny_llama_dir):
    """G is trained on weather sentences; its samples score higher under log p_G - log p_ref than
    human text of another distribution (sports), so the AUC is clearly above 0.5."""
    from trustfl.models import load_fm

    weather, sports = _weather_and_sports(np.random.default_rng(6), 32, 24)
    g = load_fm(tiny_llama_dir, task="causal_lm")
    ref = load_fm(tiny_llama_dir, task="causal_lm")
    _train_lm(g.model, g.tokenizer, weather, steps=40, seed=0)
    generated = sample_texts(g.model, g.tokenizer, num_samples=24, max_new_tokens=16, temperature=0.8, seed=0,
                             progress=False)
    again = sample_texts(g.model, g.tokenizer, num_samples=24, max_new_tokens=16, temperature=0.8, seed=0,
                         progress=False)
    assert generated == again and len(generated) == 24 and all(generated)
    scores = likelihood_ratio_scores(g.model, g.tokenizer, generated + sports, reference_model=ref.model)
    res = attribute(scores[:24], scores[24:], seed=0)
    assert res.auc_all > 0.9 and res.mean_score_generated > res.mean_score_human
    # the score is a difference of mean log-likelihoods: ref vs itself gives exactly 0
    same = likelihood_ratio_scores(ref.model, ref.tokenizer, sports[:4], reference_model=ref.model)
    assert np.allclose(same, 0.0)


def test_token_statistics_equal_a_per_token_reference(tiny_llama_dir):
    """Batched, padded TokenStats equal a one-text-at-a-time numpy computation from the logits."""
    from trustfl.audits.origin import start_token_id, token_statistics
    from trustfl.models import load_fm

    fm = load_fm(tiny_llama_dir, task="causal_lm")
    fm.model.eval()
    texts = ["the weather today is sunny", "two goals", "the away team scored three goals against city last night"]
    for skip in (0, 1):
        got = token_statistics(fm.model, fm.tokenizer, texts, skip_first=skip, batch_size=2)
        for k, t in enumerate(texts):
            ids = [start_token_id(fm.tokenizer)] + fm.tokenizer(t, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                z = fm.model(input_ids=torch.tensor([ids])).logits[0, :-1].double().numpy()
            logp = z - z.max(1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(1, keepdims=True))
            p = np.exp(logp)
            rows = range(skip, len(ids) - 1)
            ll = sum(logp[r, ids[r + 1]] for r in rows)
            mu = [(p[r] * logp[r]).sum() for r in rows]
            var = sum((p[r] * logp[r] ** 2).sum() - m ** 2 for r, m in zip(rows, mu))
            assert got.tokens[k] == len(ids) - 1 - skip
            assert got.loglik[k] == pytest.approx(ll, rel=1e-4, abs=1e-4)
            assert got.curvature[k] == pytest.approx((ll - sum(mu)) / np.sqrt(var), rel=1e-3, abs=1e-3)
    with pytest.raises(OriginError, match="nothing to"):
        token_statistics(fm.model, fm.tokenizer, ["goals"], skip_first=1)


def test_curvature_is_standardised_on_the_models_own_samples(tiny_llama_dir):
    """Fast-DetectGPT's analytic curvature has mean ~0, sd ~1 on texts G sampled itself (temperature 1,
    no truncation) and is far lower on human text of another distribution: AUC > 0.9 with G alone."""
    from trustfl.audits.origin import attribution_scores
    from trustfl.models import load_fm

    weather, sports = _weather_and_sports(np.random.default_rng(7), 32, 32)
    g = load_fm(tiny_llama_dir, task="causal_lm")
    _train_lm(g.model, g.tokenizer, weather, steps=40, seed=1)
    generated = sample_texts(g.model, g.tokenizer, num_samples=64, max_new_tokens=16, temperature=1.0, seed=3,
                             progress=False)
    scores = attribution_scores(g.model, g.tokenizer, generated + sports, scores=["curvature"])["curvature"]
    own = scores[:64]
    # mean 0 / sd 1 hold exactly for G's token ids; decoding and re-tokenising (WordPiece here) changes a
    # few samples' tokens, which widens the spread (measured sd 1.59 for this seed)
    assert abs(own.mean()) < 0.5 and 0.5 < own.std() < 2.5 and scores[64:].mean() < -5
    res = attribute(own, scores[64:], score="curvature", seed=0)
    assert res.auc_all > 0.9 and res.score == "curvature"
    with pytest.raises(OriginError, match="attribution scores must be"):
        attribution_scores(g.model, g.tokenizer, sports[:2], scores=["perplexity"])


def test_sampling_from_given_first_tokens(tiny_llama_dir):
    from trustfl.models import load_fm

    fm = load_fm(tiny_llama_dir, task="causal_lm")
    word = fm.tokenizer("weather", add_special_tokens=False)["input_ids"]
    assert len(word) == 1
    out = sample_texts(fm.model, fm.tokenizer, num_samples=6, max_new_tokens=4, first_tokens=word, seed=1,
                       progress=False)
    assert len(out) == 6 and all(t.startswith("weather") for t in out)
    with pytest.raises(OriginError, match="temperature must be > 0"):
        sample_texts(fm.model, fm.tokenizer, num_samples=2, temperature=0.0, progress=False)


def test_load_run_model_rebuilds_the_final_global_model(tiny_llama_dir, tmp_path):
    from trustfl.audits.origin import client_records, load_run_model
    from trustfl.config import RunConfig
    from trustfl.federation import Federation

    cfg = RunConfig.from_dict({
        "name": "o", "seed": 0, "model": {"name": tiny_llama_dir, "task": "causal_lm", "max_length": 24},
        "lora": {"r": 2, "top_layers": 1}, "data": {"name": "health_tweets", "max_records": 300,
                                                    "holdout_fraction": 0.5},
        "partition": {"scheme": "key", "key_column": "account", "num_clients": 4},
        "client": {"batch_size": 8, "max_steps": 2, "lr": 5e-3},
        "federation": {"rounds": 1, "save_client_updates": False}})
    fed = Federation(cfg, out_dir=tmp_path / "run", progress=False)
    fed.run()
    model, tok, _ = load_run_model(tmp_path / "run")
    ids = tok(["flu season is here"], return_tensors="pt")["input_ids"]
    fed.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, fed.model(input_ids=ids).logits)
    train, hold, test = client_records(tmp_path / "run")
    assert len(train) == sum(len(d) for d in fed.client_train.values())
    assert sorted(train.texts) == sorted(t for d in fed.client_train.values() for t in d["text"][:])
    assert sorted(hold.texts) == sorted(t for d in fed.client_holdout.values() for t in d["text"][:])
    assert len(test) == len(fed.test)
    # file mode with attribution against the run's model (reference: its base, adapters disabled)
    from trustfl.cli import main

    (tmp_path / "syn.txt").write_text("\n".join(sample_texts(model, tok, num_samples=6, max_new_tokens=6,
                                                              progress=False)) + "\n")
    (tmp_path / "human.txt").write_text("\n".join(test[:6]) + "\n")
    (tmp_path / "ref.txt").write_text("\n".join(train.texts[:20]) + "\n")
    assert main(["origin", "--synthetic", str(tmp_path / "syn.txt"), "--reference", str(tmp_path / "ref.txt"),
                 "--methods", "exact,lcs", "--model-run", str(tmp_path / "run"), "--human",
                 str(tmp_path / "human.txt"), "--out", str(tmp_path / "rep"), "-q"]) == 0
    attr = json.loads((tmp_path / "rep" / "report.json").read_text())["attribution"]
    assert [a["score"] for a in attr] == ["curvature", "likelihood_ratio"]
    assert all(a["n_generated"] == 6 and a["n_human"] == 6 and 0.0 <= a["auc_all"] <= 1.0 for a in attr)


# ---------------------------------------------------------------------------- report, settings, errors
def test_report_written_atomically_and_kept_on_error(tmp_path):
    res = detect_copies(["copy this sentence right here please", "other"],
                        ["copy this sentence right here please"], methods="exact,minhash", key=KEY)
    rep = OriginReport(inputs={"synthetic": 2}, copies=res,
                       dcr=[dcr_from_distances(np.array([0.1, 0.2]), np.array([0.1, 0.1]), np.array([0.3]),
                                               n_train=1, n_holdout=1)])
    paths = rep.write(tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["copies"]["counts"]["flagged"] == 1 and data["dcr"][0]["ties"] == 1
    assert data["dcr"][0]["fraction_closer_to_train"] == 0.0
    assert "Copy detection" in paths["md"].read_text()
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}

    class Boom(OriginReport):
        def markdown(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Boom(inputs={"x": 1}).write(tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before  # untouched, no temp files
    nan = dcr_from_distances(np.array([0.1]), np.array([0.1]), np.array([0.3]), n_train=1, n_holdout=1)
    out = OriginReport(dcr=[nan]).write(tmp_path / "nan")
    assert json.loads(out["json"].read_text())["dcr"][0]["fraction_closer_to_train"] is None  # strict JSON


def test_bad_inputs_raise_named_errors(tmp_path):
    with pytest.raises(OriginError, match="does not exist"):
        load_corpus(tmp_path / "missing.csv")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(OriginError, match="holds no records|no non-empty texts"):  # trustfl.data names it first
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "a.csv").write_text("body,who\nhello there,1\n")
    with pytest.raises(OriginError, match=r"text_column='text' is not a column; available columns: \['body', 'who'\]"):
        load_corpus(tmp_path / "a.csv")
    with pytest.raises(OriginError, match="unsupported file type"):
        load_corpus(tmp_path / "a.parquet")
    with pytest.raises(OriginError, match="lcs_chars"):
        CopyThresholds(lcs_chars=3)
    with pytest.raises(OriginError, match="jaccard"):
        CopyThresholds(jaccard=1.5)
    with pytest.raises(OriginError, match="unknown: \\['fuzzy'\\]"):
        detect_copies(["a"], ["b"], methods="exact,fuzzy")
    with pytest.raises(OriginError, match="reference: the corpus is empty"):
        detect_copies(["a"], [], methods="exact")
    with pytest.raises(OriginError, match="is empty"):
        TextCorpus.from_texts(["ok", "  "])
    with pytest.raises(OriginError, match="train set is empty"):
        dcr_test(np.ones((2, 3)), np.zeros((0, 3)), np.ones((2, 3)))


def test_origin_settings_validated_and_example_config_loads(tmp_path):
    run, origin = load_origin_config("examples/synthetic_origin.toml")
    assert run.model.task == "causal_lm" and run.partition.scheme == "key" and origin.lcs_chars == 50
    run, origin = load_origin_config("examples/synthetic_origin.toml", {"origin.num_samples": 10})
    assert origin.num_samples == 10
    with pytest.raises(ConfigError, match=r"origin.lcs_chars: must be >= 8, got 3"):
        load_origin_config("examples/synthetic_origin.toml", {"origin.lcs_chars": 3})
    with pytest.raises(ConfigError, match=r"origin: unknown key\(s\) \['lcs_char'\]"):
        load_origin_config("examples/synthetic_origin.toml", {"origin.lcs_char": 30})
    with pytest.raises(ConfigError, match="origin.dcr_spaces"):
        load_origin_config("examples/synthetic_origin.toml", {"origin.dcr_spaces": ["l2"]})
    with pytest.raises(ConfigError, match="data.holdout_fraction: the DCR test"):
        load_origin_config("examples/synthetic_origin.toml", {"data.holdout_fraction": 0.0})
    with pytest.raises(ConfigError, match="model.task: origin checks sample synthetic text"):
        load_origin_config("examples/synthetic_origin.toml", {"model.task": "classification",
                                                               "model.name": "minilm"})


# ---------------------------------------------------------------------------- CLI
def test_cli_end_to_end_on_small_files(tmp_path, sms_texts, tiny_bert_dir, capsys):
    from trustfl.cli import main

    refs, hold = sms_texts[:120], sms_texts[120:240]
    lines = ["text,client"] + [f'"{t.replace(chr(34), chr(39))}",{i % 3}' for i, t in enumerate(refs)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "hold.txt").write_text("\n".join(t.replace("\n", " ") for t in hold) + "\n")
    long_ref = next(i for i, t in enumerate(refs) if len(normalize_for_matching(t)) >= 70)
    syn = [refs[5].replace(chr(34), chr(39)), "blah " + normalize_for_matching(refs[long_ref])[:60] + " blah"] + \
        sms_texts[500:510]
    (tmp_path / "syn.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in syn))
    out = tmp_path / "report"
    code = main(["origin", "--synthetic", str(tmp_path / "syn.jsonl"), "--reference", str(tmp_path / "train.csv"),
                 "--client-column", "client", "--holdout", str(tmp_path / "hold.txt"), "--methods",
                 "exact,lcs,minhash,embedding", "--embed-model", tiny_bert_dir, "--dcr-space", "embedding,minhash",
                 "--key-file", str(tmp_path / "k.key"), "--out", str(out), "-q"])
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    assert data["status"] == "complete"
    flagged = {f["index"]: f for f in data["copies"]["findings"]}
    assert "exact" in flagged[0]["criteria"] and flagged[0]["reference"] == {"index": 5, "client": "2",
                                                                            "record": 5}
    assert "lcs" in flagged[1]["criteria"] and flagged[1]["nearest"]["lcs"]["reference"]["index"] == long_ref
    assert not any(i >= 2 and ("exact" in f["criteria"] or "lcs" in f["criteria"]) for i, f in flagged.items())
    assert [d["space"] for d in data["dcr"]] == ["embedding", "minhash"]
    assert data["dcr"][0]["n_train"] == 120 and data["dcr"][0]["n_holdout"] == 120
    assert (out / "report.md").is_file() and (tmp_path / "k.key").is_file()
    assert (out / "dcr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report:" in capsys.readouterr().out
    # bad input: a clear error and exit code 2, nothing half-written
    code = main(["origin", "--synthetic", str(tmp_path / "nope.jsonl"), "--reference", str(tmp_path / "train.csv"),
                 "--out", str(tmp_path / "bad"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "nope.jsonl' does not exist" in err and not (tmp_path / "bad").exists()
    code = main(["origin", "--synthetic", str(tmp_path / "syn.jsonl"), "--reference", str(tmp_path / "train.csv"),
                 "--lcs-chars", "4", "--out", str(tmp_path / "bad"), "-q"])
    assert code == 2 and "lcs_chars (--lcs-chars) must be an integer >= 8, got 4" in capsys.readouterr().err
    code = main(["origin", "--synthetic", str(tmp_path / "syn.jsonl"), "--reference", str(tmp_path / "train.csv"),
                 "--text-column", "body", "--out", str(tmp_path / "bad"), "-q"])
    assert code == 2 and "text_column='body' is not a column" in capsys.readouterr().err


def test_cli_config_mode_end_to_end_on_tiny_models(tiny_llama_dir, tiny_bert_dir, tmp_path, capsys):
    """`trustfl origin --config`: train, sample, all checks, a complete report; a rerun reuses the run."""
    from trustfl.cli import main

    cfg = tmp_path / "o.toml"
    cfg.write_text(f"""
name = "tiny_origin"
[model]
name = "{tiny_llama_dir}"
task = "causal_lm"
max_length = 24
[lora]
r = 2
top_layers = 1
[data]
name = "health_tweets"
max_records = 300
holdout_fraction = 0.5
[partition]
scheme = "key"
key_column = "account"
num_clients = 4
[client]
max_steps = 2
batch_size = 8
[federation]
rounds = 1
save_client_updates = false
[origin]
embed_model = "{tiny_bert_dir}"
num_samples = 8
max_new_tokens = 8
first_token = "test"
num_human = 8
""")
    out = tmp_path / "out"
    assert main(["origin", "--config", str(cfg), "--out", str(out), "-q"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["status"] == "complete" and data["inputs"]["synthetic"] == 8 and data["inputs"]["human"] == 8
    assert data["copies"]["n_synthetic"] == 8 and len(data["copies"]["findings"]) == 8  # all records listed
    assert [d["space"] for d in data["dcr"]] == ["embedding", "minhash"]
    assert [a["score"] for a in data["attribution"]] == ["curvature", "likelihood_ratio"]
    assert all(0.0 <= a["auc_all"] <= 1.0 and len(a["generated_scores"]) == 8 for a in data["attribution"])
    assert len((out / "synthetic.jsonl").read_text().splitlines()) == 8
    assert (out / "dcr.png").is_file()
    capsys.readouterr()
    assert main(["origin", "--config", str(cfg), "--out", str(out), "-q", "--set", "origin.num_samples=4"]) == 0
    assert "reusing the finished run" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["inputs"]["synthetic"] == 4
    code = main(["origin", "--config", str(cfg), "--out", str(out), "-q", "--set", "federation.rounds=2"])
    assert code == 2 and "different config" in capsys.readouterr().err


def test_failing_late_stage_keeps_earlier_results(tiny_llama_dir, tiny_bert_dir, tmp_path, monkeypatch):
    """An error in attribution leaves the report of the finished stages (status says where it stopped)."""
    import trustfl.audits.origin.experiment as experiment
    from trustfl.audits.origin import OriginSettings, run_origin_experiment
    from trustfl.config import RunConfig

    cfg = RunConfig.from_dict({
        "name": "f", "model": {"name": tiny_llama_dir, "task": "causal_lm", "max_length": 24},
        "lora": {"r": 2, "top_layers": 1}, "data": {"name": "health_tweets", "max_records": 200,
                                                    "holdout_fraction": 0.5},
        "partition": {"scheme": "key", "key_column": "account", "num_clients": 4},
        "client": {"batch_size": 8, "max_steps": 1}, "federation": {"rounds": 1, "save_client_updates": False}})
    settings = OriginSettings(embed_model=tiny_bert_dir, num_samples=4, max_new_tokens=4, num_human=4,
                              dcr_spaces=["minhash"], methods=["exact", "lcs", "minhash"])

    def boom(*args, **kwargs):
        raise OriginError("scoring failed")

    monkeypatch.setattr(experiment, "attribution_scores", boom)
    with pytest.raises(OriginError, match="scoring failed"):
        run_origin_experiment(cfg, settings, tmp_path / "out", progress=False, log=lambda m: None)
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["status"] == "partial: attribution" and data["attribution"] == []
    assert data["copies"]["n_synthetic"] == 4 and data["dcr"][0]["space"] == "minhash"
    assert (tmp_path / "out" / "synthetic.jsonl").is_file() and (tmp_path / "out" / "run" / "manifest.json").is_file()


# ---------------------------------------------------------------------------- real weights
@pytest.mark.integration
def test_real_minilm_flags_paraphrase_but_not_unrelated(sms_texts):
    refs = ["The hospital reported a sharp rise in flu cases among children this winter",
            "New study links regular exercise to lower risk of heart disease"] + sms_texts[:200]
    syn = ["The hospital reported a sharp increase in flu cases among kids this winter",
           "Are you coming to the party tonight? Bring snacks"]
    res = detect_copies(syn, refs, methods="embedding,minhash", thresholds=CopyThresholds(cosine=0.9), key=KEY)
    assert res.findings[0].criteria == ("embedding",) and res.findings[0].reference["index"] == 0
    assert res.findings[1].criteria == ()


# ---------------------------------------------------------------------------- layering
def test_origin_imports_text_primitives_from_trustfl_text_not_dedup():
    """audits.origin uses the shared text primitives through their public home (trustfl.text):
    no module of the package imports trustfl.defenses.dedup (public or private modules)."""
    import ast
    from pathlib import Path

    import trustfl.audits.origin as origin

    folder = Path(origin.__file__).parent
    offenders, text_users = [], set()
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith("trustfl.defenses.dedup") or name.startswith("defenses.dedup"):
                    offenders.append(f"{path.name}:{node.lineno}: {name}")
                if name == "trustfl.text":
                    text_users.add(path.name)
                elif name.startswith("trustfl.text."):  # a private module of trustfl.text
                    offenders.append(f"{path.name}:{node.lineno}: {name} (use the public trustfl.text API)")
    assert not offenders, offenders
    assert {"copies.py", "lcs.py", "neighbors.py"} <= text_users


# ---------------------------------------------------------------------------- issue 16: origin output and defaults
def test_help_shows_defaults_and_both_modes_share_them(capsys):
    """One source of defaults (OriginSettings): file-mode flags take them and --help shows them."""
    from trustfl.audits.origin.settings import FILE_MODE_FLAGS, OriginSettings, file_mode_default
    from trustfl.cli import build_parser, main

    args = build_parser().parse_args(["origin", "--out", "x"])
    settings = OriginSettings()
    for name, flag in FILE_MODE_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        expected = getattr(settings, name)
        assert (value.split(",") if isinstance(expected, list) else value) == expected, (name, value)
    assert args.dcr_space.split(",") == ["embedding", "minhash"]  # what docs/origin.md gives as the default
    with pytest.raises(SystemExit) as exc:
        main(["origin", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, flag in FILE_MODE_FLAGS.items():
        assert f"(default: {file_mode_default(name)}" in text.split(flag + " ", 1)[1], flag
    assert "(default: embedding,minhash)" in text and "(default: text)" in text


def test_origin_report_names_files_reads_p_values_and_warns_on_client_column(tmp_path, sms_texts, tiny_bert_dir,
                                                                           capsys, caplog):
    """Default DCR spaces in file mode, client -> file mapping, ellipsis-cut examples on one line, a
    plain-language reading of the p-values pointing to dcr.png, and a note for an unused client column."""
    import logging

    from trustfl.audits.origin.report import excerpt
    from trustfl.cli import main

    assert excerpt("a  b\nc") == "a b c" and excerpt("x" * 150, 100) == "x" * 99 + "…"
    refs = [t.replace(chr(34), chr(39)).replace("\n", " ") for t in sms_texts[:60]]
    long_ref = next(i for i, t in enumerate(refs) if len(t) > 120)
    (tmp_path / "train.csv").write_text("text,client\n" + "".join(f'"{t}",{i % 2}\n' for i, t in enumerate(refs)))
    (tmp_path / "hold.txt").write_text("\n".join(t.replace("\n", " ") for t in sms_texts[60:120]) + "\n")
    syn = [refs[long_ref]] + sms_texts[500:505]
    (tmp_path / "syn.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in syn))
    out = tmp_path / "rep"
    with caplog.at_level(logging.WARNING):
        code = main(["origin", "--synthetic", str(tmp_path / "syn.jsonl"), "--reference", str(tmp_path / "train.csv"),
                     "--holdout", str(tmp_path / "hold.txt"), "--methods", "exact,lcs", "--embed-model",
                     tiny_bert_dir, "--out", str(out), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "report.json").read_text())
    assert [d["space"] for d in data["dcr"]] == ["embedding", "minhash"]  # the documented default
    assert data["figures"] == {"dcr": "dcr.png"}
    md = (out / "report.md").read_text()
    # no --client-column: the file's client column is ignored, and the report and a log line say so
    assert "has a client-like column ['client'] but no --client-column" in md and data["notes"]
    assert any("--client-column client" in r.getMessage() for r in caplog.records)
    assert "Reading (significance level 0.05)" in md and "Binomial p = " in md and "`dcr.png`" in md
    assert ("no evidence" in md) or ("evidence that the generator memorised" in md)
    ref_file = str(tmp_path / "train.csv")
    assert f"| {ref_file} | {ref_file} | 60 |" in md  # client -> file, records
    assert f"| #0 | exact, lcs | {ref_file} | {ref_file} | {long_ref} |" in md
    # the terminal example: one unwrapped line per text, cut with an ellipsis
    line = next(ln for ln in printed.splitlines() if "synthetic #0" in ln)
    assert line.endswith("…\"") and excerpt(refs[long_ref]) in line
    assert f"~ reference {ref_file}, record {long_ref}: \"{excerpt(refs[long_ref])}\"" in printed
    # with --client-column: clients are named with their file
    out2 = tmp_path / "rep2"
    assert main(["origin", "--synthetic", str(tmp_path / "syn.jsonl"), "--reference", ref_file, "--client-column",
                 "client", "--methods", "exact", "--out", str(out2), "-q"]) == 0
    printed = capsys.readouterr().out
    md = (out2 / "report.md").read_text()
    assert f"| 0 | {ref_file} | 30 |" in md and f"| 1 | {ref_file} | 30 |" in md and "## Notes" not in md
    assert f"~ reference client {long_ref % 2} in {ref_file}, record {long_ref}:" in printed


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_binary_input_is_one_clear_error(tmp_path, capsys, suffix):
    from trustfl.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / f"junk{suffix}").write_bytes(b"\xb9\xff" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (tmp_path / "ref.txt").write_text("a reference record\n")
    code = main(["origin", "--synthetic", str(tmp_path / f"junk{suffix}"), "--reference", str(tmp_path / "ref.txt"),
                 "--methods", "exact", "--out", str(tmp_path / "rep"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "UnicodeDecodeError" not in err
    assert err.strip().splitlines() == [f"trustfl origin: error: '{tmp_path / f'junk{suffix}'}' is not a UTF-8 text "
                                        "file (binary byte 0xb9 at offset 0); origin reads UTF-8 "
                                        ".csv/.json/.jsonl/.txt files"]
    assert not (tmp_path / "rep").exists()
