"""Contribution section of ``trustfl audit``: per-client leave-one-out and GTG-Shapley values
(Liu et al. 2022) from the stored client updates, evaluated on the run's test set. The pure-tensor
core :func:`contributions` takes any utility function. See docs/audit.md.
"""

from trustfl.audits.contribution.section import DEFAULTS, audit
from trustfl.audits.contribution.shapley import (ContributionResult, RoundContribution, classify, contributions,
                                                 fedavg_vector)

__all__ = ["DEFAULTS", "ContributionResult", "RoundContribution", "audit", "classify", "contributions",
           "fedavg_vector"]
