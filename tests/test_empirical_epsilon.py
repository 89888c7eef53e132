"""The one-run empirical ε (Steinke, Nasr & Jagielski 2023) against a closed-form mechanism, and canary exposure.

Randomized response with known ε is the mechanism whose guess accuracy is exactly e^ε / (1 + e^ε): the bound
must stay below ε with the stated confidence, and approach ε with many canaries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustfl.audits.privacy import (EmpiricalEpsilonError, canary_epsilon, canary_guesses, empirical_epsilon,
                                    exposure, p_value)


def _binom_tail(r: int, v: int, p: float) -> float:
    """P[Binomial(r, p) >= v] by the sum of the pmf (slow, obviously correct)."""
    return sum(math.comb(r, w) * p**w * (1 - p) ** (r - w) for w in range(v, r + 1))


def _reference_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Theorem 5.2 written out term by term: f(v) + 2 m δ max_i (f(v - i) - f(v)) / i."""
    p = math.exp(eps) / (1 + math.exp(eps))
    f = lambda x: _binom_tail(r, x, p)  # noqa: E731
    if v == 0 or delta == 0:
        return min(1.0, f(v))
    return min(1.0, f(v) + 2 * m * delta * max((f(v - i) - f(v)) / i for i in range(1, v + 1)))


def _randomized_response(m: int, eps: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coins S (in/out) and an ε-DP release of each: the true bit with probability e^ε/(1+e^ε), else flipped."""
    included = rng.random(m) < 0.5
    keep = rng.random(m) < math.exp(eps) / (1 + math.exp(eps))
    return np.where(keep, included, ~included).astype(float), included


@pytest.mark.parametrize("m,r,v,eps,delta", [(50, 20, 15, 0.5, 0.0), (50, 20, 15, 0.5, 1e-3), (10, 10, 10, 2.0, 0.0),
                                             (30, 12, 0, 1.0, 1e-2), (40, 40, 23, 0.0, 1e-4), (5, 3, 2, 3.0, 0.1)])
def test_p_value_matches_the_theorem_term_by_term(m, r, v, eps, delta):
    assert p_value(m, r, v, eps, delta) == pytest.approx(_reference_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-12)


def test_empirical_epsilon_is_the_largest_rejected_epsilon():
    eps = empirical_epsilon(200, 100, 80, confidence=0.95)
    assert p_value(200, 100, 80, eps, 0.0) <= 0.05 + 1e-9
    assert p_value(200, 100, 80, eps * 1.001 + 1e-6, 0.0) > 0.05
    # all of 10 guesses right: p^10 <= 0.05 exactly at p = 0.05 ** 0.1
    q = 0.05 ** 0.1
    assert empirical_epsilon(10, 10, 10, confidence=0.95) == pytest.approx(math.log(q / (1 - q)), abs=1e-5)
    assert empirical_epsilon(100, 0, 0) == 0.0 and empirical_epsilon(100, 50, 25) == 0.0  # chance: nothing rejected


def test_delta_only_lowers_the_bound():
    assert empirical_epsilon(1000, 400, 320, delta=1e-3) < empirical_epsilon(1000, 400, 320, delta=0.0)


@settings(max_examples=40, deadline=None)
@given(r=st.integers(1, 60), data=st.data())
def test_bound_grows_with_correct_guesses_and_p_value_with_epsilon(r, data):
    v = data.draw(st.integers(0, r - 1))
    assert empirical_epsilon(r, r, v) <= empirical_epsilon(r, r, v + 1)
    e1, e2 = sorted(data.draw(st.tuples(st.floats(0, 5), st.floats(0, 5))))
    assert p_value(r, r, v, e1, 1e-5) <= p_value(r, r, v, e2, 1e-5) + 1e-12


def test_randomized_response_bound_holds_with_the_stated_confidence():
    """P[bound > ε] <= 1 - confidence for an ε-DP mechanism: count exceedances over 200 seeded audits."""
    eps, confidence, trials, m = 1.0, 0.9, 200, 400
    rng = np.random.default_rng(0)
    over = 0
    bounds = []
    for _ in range(trials):
        scores, included = _randomized_response(m, eps, rng)
        b = canary_epsilon(scores, included, confidence=confidence, ks=[(m // 2, m // 2)], seed=1).epsilon
        bounds.append(b)
        over += b > eps
    beta = 1 - confidence
    assert over <= trials * beta + 3 * math.sqrt(trials * beta * (1 - beta)), over
    assert 0.2 < float(np.median(bounds)) < eps  # it does detect the leakage, and stays below ε


@pytest.mark.parametrize("eps", [0.5, 2.0, 4.0])
def test_randomized_response_bound_approaches_epsilon_with_many_canaries(eps):
    scores, included = _randomized_response(100_000, eps, np.random.default_rng(1))
    bound = canary_epsilon(scores, included, confidence=0.95, ks=[(50_000, 50_000)])
    assert 0.9 * eps < bound.epsilon <= eps
    assert bound.guesses == 100_000 and bound.m == 100_000


def test_no_leakage_gives_zero_and_an_abstaining_guesser_is_valid():
    rng = np.random.default_rng(2)
    included = rng.random(1000) < 0.5
    scores = rng.normal(size=1000)  # independent of membership: ε = 0 is the truth
    assert canary_epsilon(scores, included, confidence=0.95).epsilon < 0.3
    g = canary_guesses(np.arange(10.0), 3, 2)
    assert g.tolist() == [-1, -1, 0, 0, 0, 0, 0, 1, 1, 1]


def test_bonferroni_over_ks_never_beats_the_single_best_k():
    scores, included = _randomized_response(2000, 2.0, np.random.default_rng(3))
    many = canary_epsilon(scores, included, confidence=0.95)
    one = canary_epsilon(scores, included, confidence=0.95, ks=[(many.k_plus, many.k_minus)])
    assert many.epsilon <= one.epsilon and len(many.tried) > 1


@pytest.mark.parametrize("call,match", [
    (lambda: p_value(10, 11, 3, 1.0), "v <= r <= m"),
    (lambda: p_value(10, 5, 6, 1.0), "v <= r <= m"),
    (lambda: p_value(-1, 0, 0, 1.0), "m=-1"),
    (lambda: p_value(10, 5, 3, float("nan")), "epsilon"),
    (lambda: p_value(10, 5, 3, float("inf")), "epsilon"),
    (lambda: p_value(10, 5, 3, 1.0, 1.0), "delta"),
    (lambda: p_value(10, 5, 3, 1.0, float("nan")), "delta"),
    (lambda: p_value(10.5, 5, 3, 1.0), "m=10.5"),
    (lambda: empirical_epsilon(10, 5, 3, confidence=1.0), "confidence"),
    (lambda: empirical_epsilon(10, 5, 3, confidence=float("nan")), "confidence"),
    (lambda: canary_epsilon([1.0, float("nan")], [True, False]), "NaN"),
    (lambda: canary_epsilon([1.0, np.finfo(np.float64).max, -np.inf], [True, False, True]), "NaN/Inf"),
    (lambda: canary_epsilon([], []), "non-empty"),
    (lambda: canary_epsilon([[1.0, 2.0]], [[True, False]]), "1-D"),
    (lambda: canary_epsilon([1.0, 2.0], [True]), "shape"),
    (lambda: canary_epsilon([1.0, 2.0], [3, 0]), "booleans"),
    (lambda: canary_epsilon([1.0, 2.0], [True, False], ks=[(2, 1)]), "exceeds"),
    (lambda: canary_epsilon([1.0, 2.0], [True, False], ks=[]), "at least one"),
    (lambda: canary_guesses([1.0, 2.0], -1, 0), "k_plus"),
    (lambda: exposure([1.0], []), "non-empty"),
    (lambda: exposure([float("nan")], [1.0]), "NaN"),
])
def test_bad_input_is_one_clear_error(call, match):
    with pytest.raises(EmpiricalEpsilonError, match=match):
        call()


def test_float32_max_scores_still_rank():
    scores = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max, 0.0, 1.0])
    bound = canary_epsilon(scores, [True, False, False, True], ks=[(1, 1)])
    assert bound.correct == 2 and bound.guesses == 2


def test_exposure_against_a_hand_computation():
    # canary loss 0.5 among candidates 1, 2, 3 (rank 1 of 4): log2 4 - log2 1 = 2 bits; loss 2.5: rank 3 -> 2 - log2 3
    got = exposure([0.5, 2.5, 9.0], [3.0, 1.0, 2.0])
    assert got.tolist() == pytest.approx([2.0, 2.0 - math.log2(3), 0.0])
    # an untrained canary is exchangeable with the candidates: mean exposure about 1/ln 2 - small-sample terms
    rng = np.random.default_rng(0)
    mean = float(np.mean([exposure(rng.normal(size=1), rng.normal(size=255))[0] for _ in range(2000)]))
    assert 1.0 < mean < 1.6


def test_one_canary_is_a_clear_error_not_an_empty_ks():
    """One canary cannot be guessed both 'in' and 'out': the default guesses need at least 2 canaries."""
    with pytest.raises(EmpiricalEpsilonError, match=r"scores: 1 canary; the default guesses need at least 2"):
        canary_epsilon([0.3], [True])
    assert canary_epsilon([0.3], [True], ks=[(1, 0)]).guesses == 1  # explicit guesses still work
    assert canary_epsilon([0.3, 0.1], [True, False]).k_plus == 1
