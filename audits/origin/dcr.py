"""Distance to closest record (DCR): are synthetic records closer to the training data than fresh data is?

The variant implemented here (docs/origin.md, "DCR test"):

* ``d_T(s)`` = distance of synthetic record ``s`` to its closest **train** record, ``d_H(s)``
  to its closest **holdout** record (holdout = real records from the same clients, never
  trained on). Distance = cosine distance ``1 - cos`` of L2-normalised embeddings (FAISS
  ``IndexFlatIP``), or ``1 - Ĵ`` with Ĵ the keyed-MinHash Jaccard estimate.
* **Fraction closer to train** ``F = #{s : d_T(s) < d_H(s)} / #{s : d_T(s) != d_H(s)}``.
  This is SDMetrics' ``DCROverfittingProtection`` comparison (closer to real-train than to
  holdout), except that exact ties are left out instead of counted as "closer to holdout"
  (a sign test; the number of ties is reported).
* **Binomial test.** If the synthetic records were exchangeable with fresh draws from the
  data distribution, the closest record of the pooled ``train ∪ holdout`` set is a train
  record with probability ``p0 = |T| / (|T| + |H|)`` (0.5 for equal sizes). One-sided exact
  test of H1 "``F > p0``": ``p = P[Binomial(n_untied, p0) >= n_closer]``.
* **Mann–Whitney U.** ``d_T`` of the synthetic records against ``d_T`` of the holdout
  records (each holdout record's distance to its closest train record): one-sided, H1
  "synthetic records lie closer to train than held-out real records do".

A small ``p`` in either test is evidence that the generator memorised its training records
(cf. Yale et al. 2019, "Privacy preserving synthetic health data"; Platzer & Reutterer 2021,
"Holdout-based empirical assessment of mixed-type synthetic data").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from trustfl.audits.origin.errors import OriginError
from trustfl.audits.origin.neighbors import nearest_cosine, nearest_minhash
from trustfl.audits.origin.stats import binomial_sf, mann_whitney_less

__all__ = ["DcrResult", "dcr_from_distances", "dcr_test"]

Space = Literal["embedding", "minhash"]


@dataclass(frozen=True)
class DcrResult:
    """Outcome of one DCR test (distances in one space).

    Attributes:
        space: ``"embedding"`` (cosine distance) or ``"minhash"`` (1 - estimated Jaccard).
        n_synthetic, n_train, n_holdout: sizes.
        closer_to_train / closer_to_holdout / ties: counts of synthetic records.
        fraction_closer_to_train: ``closer_to_train / (closer_to_train + closer_to_holdout)``.
        expected_fraction: ``p0 = n_train / (n_train + n_holdout)``.
        binomial_p: one-sided exact binomial p-value of ``F > p0``.
        mannwhitney_u, mannwhitney_p: one-sided U test of synthetic DCR < holdout DCR.
        median_dcr_synthetic / median_dcr_holdout: medians of the distances to train.
        synthetic_dcr_train / synthetic_dcr_holdout / holdout_dcr_train: per-record distances.
    """

    space: str
    n_synthetic: int
    n_train: int
    n_holdout: int
    closer_to_train: int
    closer_to_holdout: int
    ties: int
    fraction_closer_to_train: float
    expected_fraction: float
    binomial_p: float
    mannwhitney_u: float
    mannwhitney_p: float
    median_dcr_synthetic: float
    median_dcr_holdout: float
    synthetic_dcr_train: tuple[float, ...]
    synthetic_dcr_holdout: tuple[float, ...]
    holdout_dcr_train: tuple[float, ...]

    def to_dict(self, *, per_record: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not per_record:
            for k in ("synthetic_dcr_train", "synthetic_dcr_holdout", "holdout_dcr_train"):
                d.pop(k)
        else:
            for k in ("synthetic_dcr_train", "synthetic_dcr_holdout", "holdout_dcr_train"):
                d[k] = [round(v, 6) for v in d[k]]
        return d


def dcr_from_distances(syn_to_train: np.ndarray, syn_to_holdout: np.ndarray, holdout_to_train: np.ndarray, *,
                       n_train: int, n_holdout: int, space: str = "embedding") -> DcrResult:
    """The DCR statistics and tests from precomputed closest-record distances (see module doc).

    When every synthetic record is tied the fraction is NaN (``null`` in the JSON report) and the
    binomial p-value 1.

    Raises:
        OriginError: empty or mismatched inputs.
    """
    st, sh, ht = (np.asarray(x, dtype=np.float64) for x in (syn_to_train, syn_to_holdout, holdout_to_train))
    if st.shape != sh.shape or st.ndim != 1 or len(st) == 0:
        raise OriginError(f"need equal non-empty 1-d synthetic distance arrays, got {st.shape} and {sh.shape}")
    if n_train < 1 or n_holdout < 1 or len(ht) == 0:
        raise OriginError(f"DCR needs non-empty train and holdout sets, got {n_train} train, {n_holdout} holdout")
    closer = int((st < sh).sum())
    further = int((st > sh).sum())
    ties = len(st) - closer - further
    untied = closer + further
    p0 = n_train / (n_train + n_holdout)
    frac = closer / untied if untied else float("nan")
    binom_p = binomial_sf(closer, untied, p0) if untied else 1.0
    u, mw_p = mann_whitney_less(st, ht)
    return DcrResult(space=space, n_synthetic=len(st), n_train=int(n_train), n_holdout=int(n_holdout),
                     closer_to_train=closer, closer_to_holdout=further, ties=ties, fraction_closer_to_train=frac,
                     expected_fraction=p0, binomial_p=binom_p, mannwhitney_u=u, mannwhitney_p=mw_p,
                     median_dcr_synthetic=float(np.median(st)), median_dcr_holdout=float(np.median(ht)),
                     synthetic_dcr_train=tuple(map(float, st)), synthetic_dcr_holdout=tuple(map(float, sh)),
                     holdout_dcr_train=tuple(map(float, ht)))


def dcr_test(synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray, *, space: Space = "embedding"
             ) -> DcrResult:
    """DCR test on embeddings (``space="embedding"``, cosine distance) or MinHash signatures.

    Args:
        synthetic: ``[m, dim]`` embeddings or ``[m, k]`` signatures of the synthetic records.
        train: ``[n_T, ...]`` of the training records; holdout: ``[n_H, ...]`` of the holdout.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> train, hold = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
        >>> copies = train[:50] + 0.01 * rng.normal(size=(50, 8))   # a memorising generator
        >>> r = dcr_test(copies, train, hold)
        >>> r.fraction_closer_to_train, r.binomial_p < 1e-10
        (1.0, True)
    """
    if space not in ("embedding", "minhash"):
        raise OriginError(f"space must be 'embedding' or 'minhash', got {space!r}")
    for name, x in (("synthetic", synthetic), ("train", train), ("holdout", holdout)):
        if len(x) == 0:
            raise OriginError(f"DCR test: the {name} set is empty")
    if space == "embedding":
        _, s_t = nearest_cosine(synthetic, train)
        _, s_h = nearest_cosine(synthetic, holdout)
        _, h_t = nearest_cosine(holdout, train)
    else:
        _, s_t = nearest_minhash(synthetic, train)
        _, s_h = nearest_minhash(synthetic, holdout)
        _, h_t = nearest_minhash(holdout, train)
    # distances: 1 - similarity; rounding to 1e-6 makes float noise of equal vectors a tie
    dist = [np.round(1.0 - s, 6) for s in (s_t, s_h, h_t)]
    return dcr_from_distances(*dist, n_train=len(train), n_holdout=len(holdout), space=space)
