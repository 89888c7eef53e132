"""LiRA, the likelihood-ratio attack (Carlini et al. 2022, "Membership Inference Attacks From First
Principles", IEEE S&P), online and offline.

For each record, the target's statistic phi(x) is compared with its distribution over shadow
models trained with the record (IN) and without it (OUT), each modelled as a Gaussian
(Section IV-C, Algorithm 1):

* online:  log N(phi; mu_in, sigma_in^2) - log N(phi; mu_out, sigma_out^2)
* offline: log Pr[Z <= phi], Z ~ N(mu_out, sigma_out^2) (the one-sided test of Section VI-B;
  only OUT shadows needed, so they can be trained once, before the records to audit are known).

The statistic is the logit-scaled confidence of the true label, phi = log(p / (1 - p)) with
p = exp(-loss) (Section IV-B) for classification, and the negative mean token loss for causal LMs.
With few shadows the per-record variance is unreliable; the paper then uses one global variance
(``fix_variance``; default: when fewer than 64 shadows).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from trustfl.attacks.membership._arrays import as_matrix, as_vector
from trustfl.attacks.membership._records import TASKS, check_task
from trustfl.attacks.membership.base import MembershipAttack
from trustfl.attacks.membership.errors import MembershipError
from trustfl.attacks.membership.loss import per_record_loss

__all__ = ["LiRA", "LiRAOnline", "lira_scores", "lira_statistic"]

_MIN_SIGMA = 1e-6


def lira_statistic(losses: Any, *, task: str) -> torch.Tensor:
    """LiRA's per-record statistic from per-record losses (float64): logit confidence or -loss."""
    check_task(task, TASKS, who="lira_statistic")
    loss = as_matrix(losses, "losses") if torch.as_tensor(losses).ndim == 2 else as_vector(losses, "losses")
    if task == "causal_lm":
        return -loss
    loss = loss.clamp_min(1e-300)  # p = exp(-loss) < 1 strictly
    return -loss - torch.log(-torch.expm1(-loss))


def _gaussian_fit(stats: torch.Tensor, mask: torch.Tensor, *, fix_variance: bool, what: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-record mean and std of ``stats[mask]`` along models (global pooled std with ``fix_variance``)."""
    count = mask.sum(0)
    if (count == 0).any():
        j = int((count == 0).nonzero()[0])
        raise MembershipError(f"LiRA: record {j} has no {what} shadow model; online LiRA needs shadows trained with "
                              "and without every record (train more shadows, or use online=False)")
    w = mask.to(stats.dtype)
    mu = (stats * w).sum(0) / count
    sq = ((stats - mu) ** 2 * w)
    if fix_variance:
        var = sq.sum() / count.sum()
        sigma = var.sqrt().expand_as(mu)
    else:
        if (count < 2).any():
            raise MembershipError(f"LiRA: some records have fewer than 2 {what} shadows, so no per-record variance; "
                                  "use fix_variance=True or more shadows")
        sigma = (sq.sum(0) / count).sqrt()
    return mu, sigma.clamp_min(_MIN_SIGMA)


def _normal_logpdf(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)


def _fill_missing(stats: torch.Tensor, member: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-record (mu_in, mu_out) where a record lacking IN (or OUT) shadows gets the other side's mean shifted by
    the average IN - OUT gap of the records that have both (the per-record analogue of the global variance)."""
    w_in, w_out = member.to(stats.dtype), (~member).to(stats.dtype)
    n_in, n_out = w_in.sum(0), w_out.sum(0)
    both = (n_in > 0) & (n_out > 0)
    if not both.any():
        raise MembershipError("LiRA: no record has both IN and OUT shadow models, so the IN - OUT gap cannot be "
                              "estimated; train more shadows (each record IN about half of them)")
    mu_in = (stats * w_in).sum(0) / n_in.clamp_min(1)
    mu_out = (stats * w_out).sum(0) / n_out.clamp_min(1)
    gap = (mu_in - mu_out)[both].mean()
    return torch.where(n_in > 0, mu_in, mu_out + gap), torch.where(n_out > 0, mu_out, mu_in - gap)


def lira_scores(target_stats: Any, shadow_stats: Any, shadow_in: Any = None, *, online: bool,
                fix_variance: bool, fill_missing: bool = False) -> torch.Tensor:
    """LiRA scores (higher = member) from statistic arrays.

    Args:
        target_stats: ``[n]`` the target model's statistic per record.
        shadow_stats: ``[m, n]`` each shadow model's statistic per record.
        shadow_in: ``[m, n]`` bool, True where the record was in the shadow's training data
            (None: in none of them).
        online: the two-Gaussian ratio (needs IN and OUT shadows per record) or the one-sided offline test.
        fix_variance: one pooled variance for all records instead of one per record.
        fill_missing: with few shadows some records are IN (or OUT) of none of them; give such a record the
            mean of its other side shifted by the mean IN - OUT gap of the records that have both sides
            (needs ``fix_variance``). False: such a record is an error.

    Raises:
        MembershipError: shapes disagree, NaN/Inf, or a record without OUT (or, online, IN) shadows
            (unless ``fill_missing``).
    """
    target = as_vector(target_stats, "target_stats")
    stats = as_matrix(shadow_stats, "shadow_stats")
    if stats.shape[1] != target.numel():
        raise MembershipError(f"LiRA: {target.numel()} target statistics but shadow statistics for "
                              f"{stats.shape[1]} records; they must be the same records in the same order")
    member = torch.zeros_like(stats, dtype=torch.bool) if shadow_in is None else \
        as_matrix(shadow_in, "shadow_in", dtype=torch.bool)
    if member.shape != stats.shape:
        raise MembershipError(f"LiRA: shadow_in has shape {tuple(member.shape)}, shadow_stats {tuple(stats.shape)}")
    if fill_missing:
        if not fix_variance:
            raise MembershipError("LiRA: fill_missing needs fix_variance=True (a record without shadows on one side "
                                  "has no variance of its own)")
        mu_in, mu_out = _fill_missing(stats, member)
        # one pooled variance around each side's own (filled) mean
        sq_in = ((stats - mu_in) ** 2 * member.to(stats.dtype)).sum()
        sq_out = ((stats - mu_out) ** 2 * (~member).to(stats.dtype)).sum()
        n_in, n_out = int(member.sum()), int((~member).sum())
        sd_out = (sq_out / max(1, n_out)).sqrt().clamp_min(_MIN_SIGMA).expand_as(mu_out)
        if not online:
            return torch.special.log_ndtr((target - mu_out) / sd_out)
        sd_in = (sq_in / max(1, n_in)).sqrt().clamp_min(_MIN_SIGMA).expand_as(mu_in) if n_in else sd_out
        return _normal_logpdf(target, mu_in, sd_in) - _normal_logpdf(target, mu_out, sd_out)
    mu_out, sd_out = _gaussian_fit(stats, ~member, fix_variance=fix_variance, what="OUT")
    if not online:
        return torch.special.log_ndtr((target - mu_out) / sd_out)
    mu_in, sd_in = _gaussian_fit(stats, member, fix_variance=fix_variance, what="IN")
    return _normal_logpdf(target, mu_in, sd_in) - _normal_logpdf(target, mu_out, sd_out)


class LiRA(MembershipAttack):
    """Likelihood-ratio attack with shadow models (Carlini et al. 2022).

    ``fit(shadow_losses=[m, n], shadow_in=[m, n] | None)`` takes the shadow models' per-record
    losses (:func:`per_record_loss`, e.g. through :meth:`ShadowSet.losses`) of exactly the records
    later passed to ``score``, in the same order.
    """

    name: ClassVar[str] = "lira"
    tasks: ClassVar[tuple[str, ...]] = TASKS
    needs_reference: ClassVar[bool] = True
    calibration: ClassVar = "shadow_models"

    def __init__(self, online: bool = False, fix_variance: bool | None = None, fill_missing: bool = False) -> None:
        if not isinstance(online, bool):
            raise MembershipError(f"LiRA: online={online!r} must be True or False")
        if fix_variance is not None and not isinstance(fix_variance, bool):
            raise MembershipError(f"LiRA: fix_variance={fix_variance!r} must be True, False or None (auto)")
        if not isinstance(fill_missing, bool):
            raise MembershipError(f"LiRA: fill_missing={fill_missing!r} must be True or False")
        if fill_missing and fix_variance is False:
            raise MembershipError("LiRA: fill_missing needs the pooled variance (fix_variance=True or None)")
        self.online, self.fix_variance, self.fill_missing = online, fix_variance, fill_missing
        self._shadow_losses: torch.Tensor | None = None
        self._shadow_in: torch.Tensor | None = None

    @classmethod
    def from_shadow_models(cls, *, shadow_losses: Any, shadow_in: Any, population: Any = None,
                           population_losses: Any = None) -> "LiRA":
        """Fitted once over all audited records; with few shadows a record IN (or OUT of) none of them gets
        the other side's mean shifted by the mean IN - OUT gap (``fill_missing``). Population unused."""
        return cls(fill_missing=True).fit(shadow_losses=shadow_losses, shadow_in=shadow_in)  # type: ignore[return-value]

    def fit(self, *, shadow_losses: Any, shadow_in: Any = None) -> "LiRA":  # type: ignore[override]
        losses = as_matrix(shadow_losses, "shadow_losses")
        member = None if shadow_in is None else as_matrix(shadow_in, "shadow_in", dtype=torch.bool)
        if member is not None and member.shape != losses.shape:
            raise MembershipError(f"LiRA.fit: shadow_in has shape {tuple(member.shape)}, shadow_losses "
                                  f"{tuple(losses.shape)}")
        if self.online and member is None:
            raise MembershipError("LiRA(online=True).fit: shadow_in is required (which shadow trained on which record)")
        self._shadow_losses, self._shadow_in = losses, member
        return self._fitted()  # type: ignore[return-value]

    def _score(self, model: nn.Module, records: Any, *, tokenizer: Any, task: str, max_length: int,
               batch_size: int, progress: bool) -> torch.Tensor:
        assert self._shadow_losses is not None
        if self._shadow_losses.shape[1] != len(records):
            raise MembershipError(f"LiRA: fitted on shadow losses of {self._shadow_losses.shape[1]} records but "
                                  f"scoring {len(records)}; they must be the same records in the same order")
        loss = per_record_loss(model, records, tokenizer=tokenizer, task=task, max_length=max_length,
                               batch_size=batch_size, progress=progress)
        fix = self.fix_variance if self.fix_variance is not None else \
            (self.fill_missing or self._shadow_losses.shape[0] < 64)
        return lira_scores(lira_statistic(loss, task=task), lira_statistic(self._shadow_losses, task=task),
                           self._shadow_in, online=self.online, fix_variance=fix, fill_missing=self.fill_missing)


class LiRAOnline(LiRA):
    """Online LiRA (two Gaussians, IN and OUT) for few shadows: pooled variance, and records that no shadow
    trained on (or every shadow did) get the other side's mean shifted by the mean IN - OUT gap
    (``fill_missing``). ``fit(shadow_losses=[m, n], shadow_in=[m, n])``, ``shadow_in`` required."""

    name: ClassVar[str] = "lira_online"

    def __init__(self, fix_variance: bool | None = None, fill_missing: bool = True) -> None:
        super().__init__(online=True, fix_variance=fix_variance, fill_missing=fill_missing)
