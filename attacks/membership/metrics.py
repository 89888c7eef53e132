"""How well members are told from non-members: ROC AUC and TPR at low FPR, with bootstrap CIs.

Carlini et al. 2022 ("Membership Inference Attacks From First Principles", S&P) argue that
an attack is judged by its true-positive rate at a low false-positive rate (log-log ROC),
not by average-case AUC; both are reported. ROC curves come from scikit-learn
(``roc_curve``/``roc_auc_score``); confidence intervals are percentile bootstrap intervals
(Efron & Tibshirani 1993) resampling members and non-members separately.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trustfl.attacks.membership.errors import MembershipError

__all__ = ["MembershipMetrics", "membership_metrics", "roc_plot"]


@dataclass(frozen=True)
class MembershipMetrics:
    """AUC and TPR at each target FPR, with ``confidence``-level bootstrap intervals."""

    auc: float
    auc_ci: tuple[float, float]
    tpr_at_fpr: dict[float, float]
    tpr_at_fpr_ci: dict[float, tuple[float, float]]
    n_members: int
    n_nonmembers: int
    confidence: float = 0.95
    bootstrap: int = 1000

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; FPR keys as strings (``"0.01"``). ``min_fpr`` = 1/n_nonmembers, the smallest non-zero FPR
        the non-member set can resolve: a TPR at a smaller target FPR is the TPR at FPR 0."""
        return {"auc": self.auc, "auc_ci": list(self.auc_ci),
                "tpr_at_fpr": {repr(k): v for k, v in self.tpr_at_fpr.items()},
                "tpr_at_fpr_ci": {repr(k): list(v) for k, v in self.tpr_at_fpr_ci.items()},
                "n_members": self.n_members, "n_nonmembers": self.n_nonmembers,
                "min_fpr": 1.0 / self.n_nonmembers, "confidence": self.confidence, "bootstrap": self.bootstrap}


def _scores(values: Any, what: str) -> np.ndarray:
    try:
        if hasattr(values, "detach"):
            values = values.detach().cpu().numpy()
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MembershipError(f"{what}: not an array of numbers ({exc})") from exc
    if arr.ndim != 1:
        raise MembershipError(f"{what}: expected a 1-D array of scores, got shape {arr.shape}")
    if arr.size == 0:
        raise MembershipError(f"{what}: empty; both members and non-members are needed")
    if not np.isfinite(arr).all():
        raise MembershipError(f"{what}: {int((~np.isfinite(arr)).sum())} scores are NaN/Inf")
    return arr


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, targets: Sequence[float]) -> list[float]:
    """Largest TPR among ROC points with FPR <= target (the curve starts at (0, 0))."""
    return [float(tpr[fpr <= t + 1e-12].max()) for t in targets]


def _curve(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    y = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    fpr, tpr, _ = roc_curve(y, np.concatenate([members, nonmembers]), drop_intermediate=False)
    return fpr, tpr


def membership_metrics(member_scores: Any, nonmember_scores: Any, *, fprs: Sequence[float] = (0.01, 0.001),
                       bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> MembershipMetrics:
    """ROC AUC and TPR@FPR of scores (higher = member), with percentile-bootstrap CIs.

    Args:
        member_scores, nonmember_scores: 1-D arrays/tensors/lists of finite scores.
        fprs: target false-positive rates in (0, 1).
        bootstrap: number of resamples (members and non-members resampled separately), >= 1.
        confidence: two-sided level of the intervals, in (0, 1).
        seed: seed of the resampling.

    Raises:
        MembershipError: an empty side, NaN/Inf scores, not 1-D, bad ``fprs``/``bootstrap``/``confidence``.

    Example:
        >>> m = membership_metrics([3.0, 2.0, 1.5], [0.0, 1.0, 2.5], bootstrap=50)
        >>> round(m.auc, 4)
        0.7778
    """
    from sklearn.metrics import auc as curve_auc
    from sklearn.metrics import roc_auc_score

    members = _scores(member_scores, "member_scores")
    nonmembers = _scores(nonmember_scores, "nonmember_scores")
    targets = [float(f) for f in fprs]
    if not targets or any(not (0.0 < f < 1.0) or not math.isfinite(f) for f in targets):
        raise MembershipError(f"fprs={list(fprs)!r}: give one or more target false-positive rates in (0, 1)")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
        raise MembershipError(f"bootstrap={bootstrap!r}: must be an integer >= 1 (number of resamples)")
    if not (0.0 < confidence < 1.0):
        raise MembershipError(f"confidence={confidence!r}: must be in (0, 1), e.g. 0.95")
    y = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    auc = float(roc_auc_score(y, np.concatenate([members, nonmembers])))
    fpr, tpr = _curve(members, nonmembers)
    tprs = _tpr_at(fpr, tpr, targets)
    rng = np.random.default_rng(seed)
    boot_auc = np.empty(bootstrap)
    boot_tpr = np.empty((bootstrap, len(targets)))
    for b in range(bootstrap):
        m = members[rng.integers(0, members.size, members.size)]
        nm = nonmembers[rng.integers(0, nonmembers.size, nonmembers.size)]
        bf, bt = _curve(m, nm)
        boot_auc[b] = curve_auc(bf, bt)
        boot_tpr[b] = _tpr_at(bf, bt, targets)
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2

    def ci(values: np.ndarray) -> tuple[float, float]:
        return float(np.percentile(values, lo)), float(np.percentile(values, hi))

    return MembershipMetrics(auc=auc, auc_ci=ci(boot_auc), tpr_at_fpr=dict(zip(targets, tprs)),
                             tpr_at_fpr_ci={t: ci(boot_tpr[:, k]) for k, t in enumerate(targets)},
                             n_members=int(members.size), n_nonmembers=int(nonmembers.size),
                             confidence=float(confidence), bootstrap=bootstrap)


def roc_plot(curves: dict[str, tuple[Any, Any]], path: str | Path) -> Path:
    """Write a log-log ROC plot (PNG, atomically) of ``{attack name: (member_scores, nonmember_scores)}``.

    Log scales show the low-FPR regime that matters (Carlini et al. 2022, Fig. 1); the
    diagonal is chance. Returns the path written.

    Raises:
        MembershipError: no curves, bad scores, or a path that is not a ``.png`` file name.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from trustfl.rundir.atomic import atomic_write_bytes

    if not curves:
        raise MembershipError("roc_plot: no curves given")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise MembershipError(f"roc_plot: path {str(path)!r} must end in .png")
    if path.is_dir():
        raise MembershipError(f"roc_plot: path {str(path)!r} is a directory")
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    floor = 1.0
    for name, (member_scores, nonmember_scores) in curves.items():
        members = _scores(member_scores, f"{name}: member_scores")
        nonmembers = _scores(nonmember_scores, f"{name}: nonmember_scores")
        fpr, tpr = _curve(members, nonmembers)
        floor = min(floor, 1.0 / max(nonmembers.size, members.size))
        from sklearn.metrics import auc as curve_auc

        ax.plot(fpr, tpr, label=f"{name} (AUC {curve_auc(fpr, tpr):.3f})")
    floor = max(floor / 2, 1e-5)
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.02)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("Membership inference ROC (log-log)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
