"""Statistics of the origin checks, as pure functions over numpy arrays.

* :func:`binomial_sf` — exact upper tail ``P[X >= x]`` of ``Binomial(n, p)``: the p-value of
  scipy's one-sided exact ``binomtest``.
* :func:`mann_whitney_less` — one-sided Mann–Whitney U test (Mann & Whitney 1947) that sample
  ``a`` tends to be smaller than ``b`` (scipy's ``mannwhitneyu``, exact for small samples without
  ties, tie-corrected normal approximation otherwise).
* :func:`roc_auc` — area under the ROC curve (scikit-learn's ``roc_auc_score``); equals the
  Mann–Whitney statistic ``U / (n_pos n_neg)`` with ties counted 1/2 (Hanley & McNeil 1982), i.e.
  the probability that a random positive scores above a random negative.
* :func:`youden_threshold` — the threshold maximising TPR − FPR (Youden 1950) on scikit-learn's
  ``roc_curve``.

These wrap the libraries to validate inputs (typed :class:`OriginError`) and fix the
conventions (tail, tie handling, threshold placement) the origin report documents.
"""

from __future__ import annotations

import numpy as np

from trustfl.audits.origin.errors import OriginError

__all__ = ["binomial_sf", "mann_whitney_less", "rates_at", "roc_auc", "youden_threshold"]


def binomial_sf(successes: int, trials: int, p: float) -> float:
    """``P[X >= successes]`` for ``X ~ Binomial(trials, p)`` (one-sided exact binomial test p-value).

    Example:
        >>> round(binomial_sf(8, 10, 0.5), 6)   # (45 + 10 + 1) / 1024
        0.054688
    """
    if not 0.0 <= p <= 1.0:
        raise OriginError(f"p must be in [0, 1], got {p}")
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise OriginError(f"need 0 <= successes <= trials, got successes={successes}, trials={trials}")
    if successes == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(successes, trials, p, alternative="greater").pvalue)


def mann_whitney_less(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """One-sided Mann–Whitney U test of H1 "values of ``a`` tend to be smaller than those of ``b``".

    Returns:
        ``(U_a, p_value)`` where ``U_a`` counts pairs with ``a_i > b_j`` (+1/2 per tie), scipy's
        convention; small ``U_a`` means ``a`` is smaller.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        raise OriginError(f"Mann-Whitney U needs two non-empty samples, got sizes {len(a)} and {len(b)}")
    from scipy.stats import mannwhitneyu

    res = mannwhitneyu(a, b, alternative="less")
    return float(res.statistic), float(res.pvalue)


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC of scores where higher means "positive" (``sklearn.metrics.roc_auc_score``).

    Example:
        >>> roc_auc(np.array([0.9, 0.4, 0.7]), np.array([0.1, 0.4, 0.8]))  # 6 of 9 pairs + 1 tie/2
        0.7222222222222222
    """
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise OriginError(f"ROC AUC needs both classes, got {len(pos)} positive and {len(neg)} negative scores")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise OriginError("ROC AUC: scores hold NaN or Inf values")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(_labels(len(pos), len(neg)), np.concatenate([pos, neg])))


def rates_at(positive: np.ndarray, negative: np.ndarray, threshold: float) -> tuple[float, float]:
    """``(TPR, FPR)`` of the rule "score >= threshold means positive"."""
    return float((np.asarray(positive) >= threshold).mean()), float((np.asarray(negative) >= threshold).mean())


def youden_threshold(positive: np.ndarray, negative: np.ndarray) -> float:
    """The score threshold (rule ``score >= t``) maximising ``TPR - FPR``; ties go to the larger ``t``.

    Candidates are the observed scores; the midpoint to the next lower observed score is
    returned, so the rule is stable for unseen scores near the boundary.
    """
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise OriginError(f"calibration needs both classes, got {len(pos)} generated and {len(neg)} human texts")
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(_labels(len(pos), len(neg)), np.concatenate([pos, neg]),
                                     drop_intermediate=False)
    # row 0 is the "nothing positive" point (threshold +inf); the rest are the distinct observed
    # scores in descending order, with the rates of the rule score >= threshold
    cand, gain = thresholds[1:], (tpr - fpr)[1:]
    i = int(np.argmax(gain))  # first maximum: the largest threshold among ties
    return float((cand[i] + cand[i + 1]) / 2.0) if i + 1 < len(cand) else float(cand[i])


def _labels(n_pos: int, n_neg: int) -> np.ndarray:
    """Class labels for ``concatenate([positive, negative])``: ``n_pos`` ones then ``n_neg`` zeros."""
    return np.r_[np.ones(n_pos, dtype=np.int8), np.zeros(n_neg, dtype=np.int8)]
