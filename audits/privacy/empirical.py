"""An empirical lower bound on ε from ONE training run (Steinke, Nasr & Jagielski 2023).

"Privacy auditing with one (1) training run" (NeurIPS 2023, arXiv:2305.08846). ``m`` canaries are each
included in training with probability 1/2 (independent fair coins ``S``). After training, the auditor
guesses "in" for some canaries, "out" for others and abstains on the rest; ``r`` guesses are made,
``v`` of them correct. If training is (ε, δ)-DP with respect to each canary, the number of correct
guesses is (nearly) dominated by ``Binomial(r, p)`` with ``p = e^ε / (1 + e^ε)``, the accuracy of ε-DP
randomized response:

* pure DP (Theorem 3.1): ``P[V >= v] <= P[Binomial(r, p) >= v]``;
* approximate DP (Theorem 5.2): ``P[V >= v] <= f(v) + 2 m δ max_{i=1..v} (f(v-i) - f(v)) / i`` with
  ``f(v) = P[Binomial(r, p) >= v]``.

The p-value grows with ε, so the largest ε whose p-value is still below ``1 - confidence`` is rejected:
the run is NOT (ε, δ)-DP for any ε below it, with that confidence. :func:`empirical_epsilon` returns it.

Choosing the number of guesses after looking at the scores is a multiple test; :func:`canary_epsilon`
tries a fixed list of ``k`` values and divides ``1 - confidence`` among them (Bonferroni), so the
reported bound keeps its stated confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from trustfl.errors import TrustFLError

__all__ = ["CanaryBound", "EmpiricalEpsilonError", "MIN_CANARIES", "canary_epsilon", "canary_guesses",
           "empirical_epsilon", "p_value"]

MIN_CANARIES = 2
"""Fewest canaries :func:`canary_epsilon`'s default guesses work with (one "in" and one "out")."""


class EmpiricalEpsilonError(TrustFLError, ValueError):
    """Bad input to the empirical-ε computation (counts out of range, NaN scores, bad confidence)."""


def _count(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise EmpiricalEpsilonError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def _check_counts(m: Any, r: Any, v: Any) -> tuple[int, int, int]:
    m, r, v = _count("m", m), _count("r", r), _count("v", v)
    if not v <= r <= m:
        raise EmpiricalEpsilonError(f"need 0 <= v <= r <= m (correct <= guesses <= canaries), got v={v}, r={r}, m={m}")
    return m, r, v


def _check_delta(delta: Any) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating)) or not (0.0 <= delta < 1.0):
        raise EmpiricalEpsilonError(f"delta={delta!r}: must be a number in [0, 1)")
    return float(delta)


def _check_confidence(confidence: Any) -> float:
    ok = isinstance(confidence, (int, float, np.floating)) and not isinstance(confidence, bool)
    if not ok or not (0.0 < confidence < 1.0) or not math.isfinite(confidence):
        raise EmpiricalEpsilonError(f"confidence={confidence!r}: must be in (0, 1), e.g. 0.95")
    return float(confidence)


def p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """Probability of ``>= v`` correct guesses out of ``r`` if training were (ε, δ)-DP (Steinke et al. 2023,
    Theorems 3.1 and 5.2).

    Args:
        m: canaries (each included with probability 1/2).
        r: guesses made (abstentions excluded), ``<= m``.
        v: correct guesses, ``<= r``.
        epsilon: ε of the null hypothesis, ``>= 0``.
        delta: δ of the null hypothesis, in ``[0, 1)``.

    Raises:
        EmpiricalEpsilonError: counts or parameters out of range.
    """
    from scipy.stats import binom

    m, r, v = _check_counts(m, r, v)
    delta = _check_delta(delta)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating)) or not epsilon >= 0 \
            or not math.isfinite(epsilon):
        raise EmpiricalEpsilonError(f"epsilon={epsilon!r}: must be a finite number >= 0")
    p = 1.0 / (1.0 + math.exp(-float(epsilon)))  # e^ε / (1 + e^ε): accuracy of ε-DP randomized response
    tail = float(binom.sf(v - 1, r, p))  # f(v) = P[Binomial(r, p) >= v]
    if delta == 0.0 or v == 0:
        return min(tail, 1.0)
    # f(v - i) - f(v) = P[v - i <= W < v] for i = 1..v: cumulative sums of the pmf below v, from the top
    below = binom.pmf(np.arange(v - 1, -1, -1), r, p)  # P[W = v-1], P[W = v-2], ..., P[W = 0]
    ratio = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * ratio, 1.0)


def empirical_epsilon(m: int, r: int, v: int, *, delta: float = 0.0, confidence: float = 0.95,
                      tol: float = 1e-6) -> float:
    """The largest ε that ``v`` correct guesses out of ``r`` (``m`` canaries) reject at ``confidence``.

    With probability ``>= confidence`` over the canary coins, a run that is (ε, δ)-DP gives a result
    ``<= ε``: the returned value is a lower bound on the run's true ε. ``0`` when nothing is rejected.

    Raises:
        EmpiricalEpsilonError: counts or parameters out of range.

    Example:
        >>> round(empirical_epsilon(1000, 1000, 700, confidence=0.95), 2)  # 70 % right of 1000 guesses
        0.73
    """
    m, r, v = _check_counts(m, r, v)
    delta, beta = _check_delta(delta), 1.0 - _check_confidence(confidence)
    if r == 0 or p_value(m, r, v, 0.0, delta) > beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) <= beta:  # bracket: p-value -> P[W >= v] at p -> 1, reaches 1 if v <= r
        lo, hi = hi, 2.0 * hi
        if hi > 1e4:
            return lo
    while hi - lo > tol * max(1.0, lo):
        mid = 0.5 * (lo + hi)
        if p_value(m, r, v, mid, delta) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


def canary_guesses(scores: Any, k_plus: int, k_minus: int, *, seed: int = 0) -> np.ndarray:
    """Guesses ``+1`` (in) for the ``k_plus`` highest scores, ``-1`` (out) for the ``k_minus`` lowest, ``0``
    (abstain) otherwise; ties broken by a seeded random order (never by canary index).

    Raises:
        EmpiricalEpsilonError: NaN/Inf or non-1-D scores, or ``k_plus + k_minus > len(scores)``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise EmpiricalEpsilonError(f"scores: expected a non-empty 1-D array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise EmpiricalEpsilonError(f"scores: {int((~np.isfinite(s)).sum())} of {s.size} are NaN/Inf")
    k_plus, k_minus = _count("k_plus", k_plus), _count("k_minus", k_minus)
    if k_plus + k_minus > s.size:
        raise EmpiricalEpsilonError(f"k_plus + k_minus = {k_plus + k_minus} exceeds the {s.size} canaries")
    tie = np.random.default_rng(seed).permutation(s.size)
    order = np.lexsort((tie, s))  # ascending score, ties in random order
    guesses = np.zeros(s.size, dtype=np.int64)
    if k_minus:
        guesses[order[:k_minus]] = -1
    if k_plus:
        guesses[order[s.size - k_plus:]] = 1
    return guesses


@dataclass(frozen=True)
class CanaryBound:
    """The empirical ε of one run from its canaries, and how it was obtained."""

    epsilon: float                      # lower bound, valid at `confidence` (Bonferroni over the k tried)
    confidence: float
    delta: float
    m: int                              # canaries
    included: int                       # canaries the coins put in
    k_plus: int                         # the chosen guess counts
    k_minus: int
    guesses: int                        # r
    correct: int                        # v
    tried: list[dict[str, float]] = field(default_factory=list)  # every (k+, k-, r, v, ε) tried

    def to_dict(self) -> dict[str, Any]:
        return {"epsilon_lower_bound": self.epsilon, "confidence": self.confidence, "delta": self.delta,
                "canaries": self.m, "included": self.included, "k_plus": self.k_plus, "k_minus": self.k_minus,
                "guesses": self.guesses, "correct": self.correct, "tried": self.tried,
                "method": "Steinke, Nasr & Jagielski 2023, Theorem 5.2 (one run; Bonferroni over the k tried)"}


def canary_epsilon(scores: Any, included: Any, *, delta: float = 0.0, confidence: float = 0.95,
                   ks: Sequence[tuple[int, int]] | None = None, seed: int = 0) -> CanaryBound:
    """Empirical ε lower bound from canary ``scores`` (higher = more likely in) and their coins ``included``.

    Args:
        scores: ``[m]`` finite scores.
        included: ``[m]`` booleans, the recorded coins.
        delta: the δ the run claims (its accountant's); 0 for a pure-DP statement.
        confidence: the level of the bound over all ``ks`` tried together.
        ks: ``(k_plus, k_minus)`` guess counts to try; default: ``k = round(f * m / 2)`` for
            ``f`` in 0.1, 0.2, 0.5, 1.0 with ``k_plus = k_minus = k``.
        seed: tie-breaking seed.

    Raises:
        EmpiricalEpsilonError: bad scores, coins not booleans, length mismatch, no canary, bad ``ks``.
    """
    s = np.asarray(scores, dtype=np.float64)
    coins = np.asarray(included)
    if s.ndim != 1 or s.size == 0:
        raise EmpiricalEpsilonError(f"scores: expected a non-empty 1-D array, got shape {s.shape}")
    if coins.shape != s.shape:
        raise EmpiricalEpsilonError(f"included: shape {coins.shape} differs from scores {s.shape}")
    if coins.dtype != np.bool_ and not np.isin(coins, (0, 1)).all():
        raise EmpiricalEpsilonError("included: must be booleans (the recorded coin flips)")
    coins = coins.astype(bool)
    m = int(s.size)
    confidence = _check_confidence(confidence)
    delta = _check_delta(delta)
    if ks is None:
        if m < MIN_CANARIES:
            raise EmpiricalEpsilonError(f"scores: {m} canary; the default guesses need at least {MIN_CANARIES} (one "
                                        "'in' and one 'out'); give more canaries or ks=[(k_plus, k_minus)]")
        ks = sorted({(k, k) for k in (max(1, round(f * m / 2)) for f in (0.1, 0.2, 0.5, 1.0)) if 2 * k <= m})
    ks = [(int(a), int(b)) for a, b in ks]
    if not ks:
        raise EmpiricalEpsilonError("ks: give at least one (k_plus, k_minus) pair")
    level = 1.0 - (1.0 - confidence) / len(ks)  # Bonferroni: each test at (1 - confidence) / len(ks)
    truth = np.where(coins, 1, -1)
    tried, best = [], None
    for k_plus, k_minus in ks:
        g = canary_guesses(s, k_plus, k_minus, seed=seed)
        r = int((g != 0).sum())
        v = int(((g != 0) & (g == truth)).sum())
        eps = empirical_epsilon(m, r, v, delta=delta, confidence=level)
        tried.append({"k_plus": k_plus, "k_minus": k_minus, "guesses": r, "correct": v, "epsilon": eps})
        if best is None or eps > best["epsilon"]:
            best = tried[-1]
    assert best is not None
    return CanaryBound(epsilon=best["epsilon"], confidence=confidence, delta=delta, m=m, included=int(coins.sum()),
                       k_plus=best["k_plus"], k_minus=best["k_minus"], guesses=best["guesses"],
                       correct=best["correct"], tried=tried)
