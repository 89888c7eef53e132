"""Synthetic-data origin checks: did synthetic records copy training records, and which model wrote a text?

* **Copy detection** (:func:`detect_copies`): exact (keyed HMAC of normalised text), longest
  common substring >= N characters (Carlini et al. 2021) with a keyed N-gram candidate index,
  keyed-MinHash Jaccard (Broder 1997) and MiniLM embedding cosine (FAISS ``IndexFlatIP``).
* **Distance to closest record** (:func:`dcr_test`): fraction of synthetic records closer to
  train than to holdout, with an exact binomial test against ``|T| / (|T| + |H|)`` and a
  Mann–Whitney U test of synthetic vs holdout DCR.
* **Model attribution** (:func:`attribution_scores`, :func:`attribute`): Fast-DetectGPT's
  analytic curvature under G (Bao et al. 2024) and the likelihood ratio of G to a reference model
  (Carlini et al. 2021), each with a calibrated threshold and ROC AUC.
* **Report** (:class:`OriginReport`): JSON + Markdown, written atomically.

See docs/origin.md. CLI: ``trustfl origin``.

Example:
    >>> from trustfl.audits.origin import detect_copies
    >>> res = detect_copies(["Get your flu shot today, the season has started early this year!"],
    ...                     ["get your flu shot today the season has started early this year"],
    ...                     methods="exact,lcs")
    >>> res.findings[0].criteria
    ('exact', 'lcs')
"""

from trustfl.audits.origin.attribution import (
    ATTRIBUTION_SCORES,
    AttributionResult,
    attribute,
    attribution_scores,
    likelihood_ratio_scores,
)
from trustfl.audits.origin.copies import (
    COPY_METHODS,
    CopyFinding,
    CopyResult,
    CopyThresholds,
    detect_copies,
    validate_copy_methods,
)
from trustfl.audits.origin.corpus import TextCorpus, load_corpus
from trustfl.audits.origin.dcr import DcrResult, dcr_from_distances, dcr_test
from trustfl.audits.origin.errors import OriginError
from trustfl.audits.origin.experiment import client_records, run_origin_experiment
from trustfl.audits.origin.lcs import LcsMatch, NgramIndex, longest_common_substring
from trustfl.audits.origin.likelihood import TokenStats, load_run_model, mean_token_loglik, start_token_id, token_statistics
from trustfl.audits.origin.neighbors import nearest_cosine, nearest_minhash
from trustfl.audits.origin.plot import plot_dcr
from trustfl.audits.origin.report import OriginReport, write_json_atomic, write_text_atomic
from trustfl.audits.origin.sampling import sample_texts
from trustfl.audits.origin.settings import OriginSettings, load_origin_config
from trustfl.audits.origin.stats import binomial_sf, mann_whitney_less, rates_at, roc_auc, youden_threshold

__all__ = sorted([
    "ATTRIBUTION_SCORES",
    "AttributionResult",
    "TokenStats",
    "attribution_scores",
    "token_statistics",
    "COPY_METHODS",
    "CopyFinding",
    "CopyResult",
    "CopyThresholds",
    "DcrResult",
    "LcsMatch",
    "NgramIndex",
    "OriginError",
    "OriginReport",
    "OriginSettings",
    "TextCorpus",
    "attribute",
    "binomial_sf",
    "client_records",
    "dcr_from_distances",
    "dcr_test",
    "detect_copies",
    "likelihood_ratio_scores",
    "load_corpus",
    "load_origin_config",
    "load_run_model",
    "longest_common_substring",
    "mann_whitney_less",
    "mean_token_loglik",
    "nearest_cosine",
    "nearest_minhash",
    "plot_dcr",
    "rates_at",
    "roc_auc",
    "run_origin_experiment",
    "sample_texts",
    "start_token_id",
    "validate_copy_methods",
    "write_json_atomic",
    "write_text_atomic",
    "youden_threshold",
])
