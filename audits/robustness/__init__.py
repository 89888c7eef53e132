"""Robustness section of ``trustfl audit``: per-round, per-client anomaly scores of the stored
client updates (norm, cosines, Krum score, median distance, robust z-scores), compared with the
run's defense decisions and, in evaluation runs, with the known attackers. See docs/audit.md.
"""

from trustfl.audits.robustness.scores import (Z_THRESHOLD, RoundScores, default_f, flag_rule, robust_z,
                                              round_scores)
from trustfl.audits.robustness.section import audit, compute_scores, stored_rounds, unavailable_reason

__all__ = ["Z_THRESHOLD", "RoundScores", "audit", "compute_scores", "default_f", "flag_rule", "robust_z",
           "round_scores", "stored_rounds", "unavailable_reason"]
