"""Reference-free attacks for causal LMs: zlib ratio, Min-K% Prob, Min-K%++.

* zlib (Carlini et al. 2021, "Extracting Training Data from Large Language Models", Section 6.2):
  score = -loss / zlib(x), the mean token loss over the zlib-compressed length (bytes) of the
  record's UTF-8 text: loss normalised by how compressible (generic) the text is.
* Min-K% Prob (Shi et al. 2024, "Detecting Pretraining Data from Large Language Models", ICLR):
  the mean log-probability of the k% least likely tokens of the record; a member has few
  outlier tokens with very low probability.
* Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training Data from
  Large Language Models"): each token's log-probability standardised by the mean and standard
  deviation of log p(z) under the model's next-token distribution at that position,
  (log p(x_t) - mu_t) / sigma_t, then the mean of the k% lowest. Members sit at local maxima of
  the likelihood, where the token scores high relative to the alternatives.

k% of T predicted tokens selects ``max(1, floor(k * T))`` tokens (at least one, so short
records still score). zlib uses the record's full text; choose ``max_length`` so records are not
truncated when comparing scores across lengths.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, ClassVar

import torch
from torch import nn

from trustfl.attacks.membership._records import RecordOutputs
from trustfl.attacks.membership.base import MembershipAttack
from trustfl.attacks.membership.errors import MembershipError

__all__ = ["MinKPlusPlusAttack", "MinKProbAttack", "ZlibAttack", "lowest_k_mean", "zlib_length"]


def zlib_length(text: str) -> int:
    """Length in bytes of ``zlib.compress`` of the UTF-8 text (default level)."""
    return len(zlib.compress(text.encode("utf-8")))


def lowest_k_mean(values: torch.Tensor, k: float) -> float:
    """Mean of the ``max(1, floor(k * T))`` smallest entries of a 1-D tensor of ``T`` values."""
    if values.numel() == 0:
        raise MembershipError("lowest_k_mean: no token values")
    n = max(1, math.floor(k * values.numel()))
    return float(torch.sort(values.to(torch.float64)).values[:n].mean())


def _check_k(k: float) -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not (0.0 < float(k) <= 1.0):
        raise MembershipError(f"k={k!r}: must be a fraction in (0, 1], e.g. 0.2 for the lowest 20% of tokens")
    return float(k)


class ZlibAttack(MembershipAttack):
    """Score = -(mean token loss) / zlib-compressed length of the text (Carlini et al. 2021)."""

    name: ClassVar[str] = "zlib"
    tasks: ClassVar[tuple[str, ...]] = ("causal_lm",)
    shares_forward: ClassVar[bool] = True

    def __init__(self) -> None:
        pass

    def _from_outputs(self, out: RecordOutputs, model: nn.Module, records: Any, **kw: Any) -> torch.Tensor:
        lengths = torch.tensor([zlib_length(t) for t in records["text"]], dtype=torch.float64)
        return -out.loss / lengths


class MinKProbAttack(MembershipAttack):
    """Mean log-probability of the k% least likely tokens (Shi et al. 2024)."""

    name: ClassVar[str] = "min_k"
    tasks: ClassVar[tuple[str, ...]] = ("causal_lm",)
    shares_forward: ClassVar[bool] = True

    def __init__(self, k: float = 0.2) -> None:
        self.k = _check_k(k)

    def _from_outputs(self, out: RecordOutputs, model: nn.Module, records: Any, **kw: Any) -> torch.Tensor:
        assert out.token_logp is not None
        return torch.tensor([lowest_k_mean(lp, self.k) for lp in out.token_logp], dtype=torch.float64)


def min_k_plus_plus_tokens(logp: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-token Min-K%++ statistic ``(log p - mu) / sigma``; 0 where the distribution is a point mass (sigma = 0)."""
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    return torch.where(sigma > 0, (logp - mu) / safe, torch.zeros_like(logp))


class MinKPlusPlusAttack(MembershipAttack):
    """Mean of the k% lowest standardised token log-probabilities (Zhang et al. 2024)."""

    name: ClassVar[str] = "min_k_pp"
    tasks: ClassVar[tuple[str, ...]] = ("causal_lm",)
    shares_forward: ClassVar[bool] = True
    vocab_stats: ClassVar[bool] = True

    def __init__(self, k: float = 0.2) -> None:
        self.k = _check_k(k)

    def _from_outputs(self, out: RecordOutputs, model: nn.Module, records: Any, **kw: Any) -> torch.Tensor:
        assert out.token_logp is not None and out.token_mu is not None and out.token_sigma is not None
        return torch.tensor([lowest_k_mean(min_k_plus_plus_tokens(lp, mu, sd), self.k)
                             for lp, mu, sd in zip(out.token_logp, out.token_mu, out.token_sigma)],
                            dtype=torch.float64)
