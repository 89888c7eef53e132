"""RMIA, the relative membership-inference attack (Zarifzadeh et al. 2024, "Low-Cost High-Power
Membership Inference Attacks", ICML).

Pairwise likelihood ratio of the record x against population records z (Section 3, Eq. 3-4):

    LR(x, z) = [Pr(x | theta) / Pr(x)] / [Pr(z | theta) / Pr(z)],
    score(x) = fraction of z with LR(x, z) >= gamma,

where Pr(. | theta) is the target model's probability of the record (the true label's
probability for classification; exp(-mean token loss) for causal LMs) and Pr(.) its average
over reference models. With OUT-only references (offline, the default) the average
under-estimates Pr(x), and the paper approximates it linearly (Appendix B.2.2):
Pr(x) = ((1 + a) * mean_OUT + (1 - a)) / 2, applied to x and z alike. Online (``offline_a=None``)
the references are trained on random halves of a pool containing the records and Pr(.) is
their plain mean. Works with 1-4 reference models (the paper's low-cost regime).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from trustfl.attacks.membership._arrays import as_matrix, as_vector
from trustfl.attacks.membership._records import TASKS, as_dataset
from trustfl.attacks.membership.base import MembershipAttack
from trustfl.attacks.membership.errors import MembershipError
from trustfl.attacks.membership.loss import per_record_loss

__all__ = ["RMIA", "rmia_log_scores", "rmia_scores"]


def _log_prior(log_ref: torch.Tensor, offline_a: float | None) -> torch.Tensor:
    """log Pr(.) from references' log-probabilities ``[m, k]`` (log-mean-exp, then the offline correction)."""
    log_mean = torch.logsumexp(log_ref, dim=0) - math.log(log_ref.shape[0])
    if offline_a is None:
        return log_mean
    # log(((1 + a) * mean + (1 - a)) / 2), stable for tiny means
    if offline_a == 1.0:
        return log_mean
    return torch.logaddexp(math.log1p(offline_a) + log_mean, torch.full_like(log_mean, math.log1p(-offline_a))) \
        - math.log(2.0)


def rmia_log_scores(log_target_x: Any, log_reference_x: Any, log_target_z: Any, log_reference_z: Any, *,
                    gamma: float = 1.0, offline_a: float | None = 0.3) -> torch.Tensor:
    """:func:`rmia_scores` from log-probabilities (e.g. ``-loss``), computed in log space (no underflow).

    Shapes as :func:`rmia_scores`: ``[n]``, ``[m, n]``, ``[k]``, ``[m, k]``; every value finite and ``<= 0``.

    Raises:
        MembershipError: ``gamma``/``offline_a`` out of range, shapes disagree, NaN/Inf or positive values.
    """
    gamma, offline_a = _check_params(gamma, offline_a)
    lx, lz = as_vector(log_target_x, "log_target_x"), as_vector(log_target_z, "log_target_z")
    rx, rz = as_matrix(log_reference_x, "log_reference_x"), as_matrix(log_reference_z, "log_reference_z")
    _check_shapes(lx, rx, lz, rz, names=("log_target_x", "log_reference_x", "log_target_z", "log_reference_z"))
    for name, t in (("log_target_x", lx), ("log_reference_x", rx), ("log_target_z", lz), ("log_reference_z", rz)):
        if (t > 0).any():
            raise MembershipError(f"RMIA: {name} must hold log-probabilities (<= 0); {int((t > 0).sum())} are > 0")
    ratio_x = lx - _log_prior(rx, offline_a)  # [n]
    ratio_z = lz - _log_prior(rz, offline_a)  # [k]
    # LR(x, z) >= gamma  <=>  log ratio_x >= log gamma + log ratio_z; count over z by sorting (O((n + k) log k))
    thresholds = torch.sort(math.log(gamma) + ratio_z).values
    counts = torch.searchsorted(thresholds, ratio_x, right=True)
    return counts.to(torch.float64) / lz.numel()


def rmia_scores(target_x: Any, reference_x: Any, target_z: Any, reference_z: Any, *, gamma: float = 1.0,
                offline_a: float | None = 0.3) -> torch.Tensor:
    """RMIA scores in [0, 1] from probabilities.

    Args:
        target_x: ``[n]`` Pr(x | target) of the records to score.
        reference_x: ``[m, n]`` Pr(x | reference j).
        target_z: ``[k]`` Pr(z | target) of the population records.
        reference_z: ``[m, k]`` Pr(z | reference j).
        gamma: likelihood-ratio threshold (>= 1 in the paper).
        offline_a: the offline correction ``a`` in [0, 1]; None = online (plain mean).

    Raises:
        MembershipError: ``gamma``/``offline_a`` out of range, shapes disagree, probabilities outside
            (0, 1], NaN/Inf.
    """
    _check_params(gamma, offline_a)
    px, pz = as_vector(target_x, "target_x"), as_vector(target_z, "target_z")
    rx, rz = as_matrix(reference_x, "reference_x"), as_matrix(reference_z, "reference_z")
    _check_shapes(px, rx, pz, rz)
    for name, t in (("target_x", px), ("reference_x", rx), ("target_z", pz), ("reference_z", rz)):
        if (t <= 0).any() or (t > 1).any():
            raise MembershipError(f"RMIA: {name} must hold probabilities in (0, 1]")
    return rmia_log_scores(px.log(), rx.log(), pz.log(), rz.log(), gamma=gamma, offline_a=offline_a)


def _check_params(gamma: Any, offline_a: Any) -> tuple[float, float | None]:
    """``(gamma, offline_a)`` checked: gamma a number > 0, offline_a in [0, 1] or None (online)."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or not gamma > 0:
        raise MembershipError(f"RMIA: gamma={gamma!r} must be a finite number > 0 (the paper uses >= 1)")
    if offline_a is not None and (isinstance(offline_a, bool) or not isinstance(offline_a, (int, float))
                                  or not 0 <= offline_a <= 1):
        raise MembershipError(f"RMIA: offline_a={offline_a!r} must be in [0, 1], or None for online references")
    return float(gamma), (None if offline_a is None else float(offline_a))


def _check_shapes(px: torch.Tensor, rx: torch.Tensor, pz: torch.Tensor, rz: torch.Tensor, *,
                  names: tuple[str, str, str, str] = ("target_x", "reference_x", "target_z", "reference_z")) -> None:
    if rx.shape[1] != px.numel() or rz.shape[1] != pz.numel() or rx.shape[0] != rz.shape[0]:
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(names, (px, rx, pz, rz)))
        raise MembershipError(f"RMIA: shapes disagree ({shapes}); need [n], [m, n], [k], [m, k]")


class RMIA(MembershipAttack):
    """Relative membership inference with reference models and population records (Zarifzadeh et al. 2024).

    ``fit(reference_losses=[m, n], population=<records>, population_reference_losses=[m, k])``:
    the reference models' per-record losses of the records later scored (same order) and of
    population records z (non-members of the target). ``score`` computes the target's losses of
    both. Probabilities are ``exp(-loss)``.
    """

    name: ClassVar[str] = "rmia"
    tasks: ClassVar[tuple[str, ...]] = TASKS
    needs_reference: ClassVar[bool] = True
    calibration: ClassVar = "shadow_models"

    @classmethod
    def from_shadow_models(cls, *, shadow_losses: Any, shadow_in: Any = None, population: Any,
                           population_losses: Any) -> "RMIA":
        """Online RMIA: the shadows (trained on random halves of a pool holding x and z) are the references,
        so no offline correction (``offline_a=None``); ``shadow_in`` unused."""
        return cls(offline_a=None).fit(reference_losses=shadow_losses, population=population,
                                       population_reference_losses=population_losses)

    def __init__(self, gamma: float = 1.0, offline_a: float | None = 0.3) -> None:
        self.gamma, self.offline_a = _check_params(gamma, offline_a)
        self._ref_x: torch.Tensor | None = None
        self._ref_z: torch.Tensor | None = None
        self._population: Any = None

    def fit(self, *, reference_losses: Any, population: Any,  # type: ignore[override]
            population_reference_losses: Any) -> "RMIA":
        rx = as_matrix(reference_losses, "reference_losses")
        rz = as_matrix(population_reference_losses, "population_reference_losses")
        if rx.shape[0] != rz.shape[0]:
            raise MembershipError(f"RMIA.fit: {rx.shape[0]} reference models for the records but {rz.shape[0]} for "
                                  "the population")
        if population is None:
            raise MembershipError("RMIA.fit: population records (non-members, the z of the paper) are required")
        n_pop = len(population)
        if n_pop != rz.shape[1]:
            raise MembershipError(f"RMIA.fit: {n_pop} population records but population_reference_losses has "
                                  f"{rz.shape[1]} columns")
        if (rx < 0).any() or (rz < 0).any():
            raise MembershipError("RMIA.fit: losses must be >= 0 (cross-entropies)")
        self._ref_x, self._ref_z, self._population = rx, rz, population
        return self._fitted()  # type: ignore[return-value]

    def _score(self, model: nn.Module, records: Any, *, tokenizer: Any, task: str, max_length: int,
               batch_size: int, progress: bool) -> torch.Tensor:
        assert self._ref_x is not None and self._ref_z is not None
        if self._ref_x.shape[1] != len(records):
            raise MembershipError(f"RMIA: fitted on reference losses of {self._ref_x.shape[1]} records but scoring "
                                  f"{len(records)}; they must be the same records in the same order")
        kw = dict(tokenizer=tokenizer, task=task, max_length=max_length, batch_size=batch_size, progress=progress)
        loss_x = per_record_loss(model, records, **kw)
        loss_z = per_record_loss(model, as_dataset(self._population, task=task), **kw)
        return rmia_log_scores(-loss_x, -self._ref_x, -loss_z, -self._ref_z, gamma=self.gamma,
                               offline_a=self.offline_a)
