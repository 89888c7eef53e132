"""The membership-attack contract: ``fit(...)`` (if references are needed), then ``score(model, records)``.

A scorer is a scikit-learn-like estimator: parameters come from ``__init__`` (reported by
:meth:`MembershipAttack.get_config`), references are fitted, and ``score`` returns one float64
per record, higher meaning "more likely a member". Errors are :class:`MembershipError`.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from trustfl.attacks.membership._records import TASKS, RecordOutputs, as_dataset, check_task, record_outputs
from trustfl.attacks.membership.errors import MembershipError

__all__ = ["MembershipAttack", "MembershipError", "score_attacks"]


class MembershipAttack:
    """Base of every membership scorer.

    Subclasses set ``name``, ``tasks``, ``needs_reference`` and ``calibration`` and implement
    :meth:`_score` (records already validated as a ``datasets.Dataset``); reference-based ones override
    :meth:`fit` (returning ``self`` via :meth:`_fitted`).

    ``calibration`` declares what an audit must build to fit the attack (the audit dispatches on it,
    never on names): ``"none"``; ``"reference_model"`` (``fit(reference_losses=...)`` with one reference
    model's per-record losses); ``"shadow_models"`` (:meth:`from_shadow_models`); ``"client_updates"``
    (the server's stored updates of the records' clients).
    """

    name: ClassVar[str] = "base"
    tasks: ClassVar[tuple[str, ...]] = TASKS
    needs_reference: ClassVar[bool] = False
    calibration: ClassVar[Literal["none", "reference_model", "shadow_models", "client_updates"]] = "none"
    shares_forward: ClassVar[bool] = False  # scores from the target's RecordOutputs (see score_attacks)
    vocab_stats: ClassVar[bool] = False     # ... and needs the per-position vocabulary statistics

    _is_fitted: bool = False

    # ------------------------------------------------------------------ estimator API
    def fit(self, **kwargs: Any) -> "MembershipAttack":
        """Reference-free attacks take no references: returns ``self``."""
        if kwargs:
            raise MembershipError(f"{type(self).__name__}.fit: takes no arguments (a reference-free attack), got "
                                  f"{sorted(kwargs)}")
        return self._fitted()

    @classmethod
    def from_shadow_models(cls, *, shadow_losses: Any, shadow_in: Any, population: Any,
                           population_losses: Any) -> "MembershipAttack":
        """The attack fitted on shadow models trained on random halves of a pool holding the audited records
        (``shadow_losses``/``shadow_in`` ``[m, n]`` over those records) and on population records that are
        members of no model (``population_losses`` ``[m, k]``). Only for ``calibration = "shadow_models"``."""
        raise MembershipError(f"{cls.__name__} is not calibrated by shadow models (calibration = {cls.calibration!r})")

    def _fitted(self) -> "MembershipAttack":
        self._is_fitted = True
        return self

    @property
    def is_fitted(self) -> bool:
        return self._is_fitted or not self.needs_reference

    def score(self, model: nn.Module, records: Any, *, tokenizer: Any, task: str, max_length: int = 128,
              batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """Membership scores of ``records`` under ``model``: float64 ``[len(records)]``, higher = member.

        ``records`` is a ``datasets.Dataset`` or a list of dicts with ``text`` (and ``label`` for
        classification), tokenized as training tokenizes them (truncated to ``max_length``).

        Raises:
            MembershipError: unsupported task, empty records, missing columns, ``score`` before
                ``fit`` for an attack that needs references, non-finite scores.
        """
        check_task(task, self.tasks, who=f"{type(self).__name__} ({self.name!r})")
        if not self.is_fitted:
            raise MembershipError(f"{type(self).__name__}: call fit(...) with its reference data before score(); "
                                  f"{self.name!r} needs references")
        ds = as_dataset(records, task=task)
        scores = self._score(model, ds, tokenizer=tokenizer, task=task, max_length=max_length,
                             batch_size=batch_size, progress=progress)
        scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
        if scores.numel() != len(ds):
            raise MembershipError(f"{type(self).__name__}: produced {scores.numel()} scores for {len(ds)} records")
        if not torch.isfinite(scores).all():
            bad = int((~torch.isfinite(scores)).sum())
            raise MembershipError(f"{type(self).__name__}: {bad} of {len(ds)} scores are NaN/Inf")
        return scores

    def _score(self, model: nn.Module, records: Any, *, tokenizer: Any, task: str, max_length: int,
               batch_size: int, progress: bool) -> torch.Tensor:
        if not self.shares_forward:
            raise NotImplementedError(f"{type(self).__name__} must implement _score or set shares_forward")
        outputs = record_outputs(model, records, tokenizer=tokenizer, task=task, max_length=max_length,
                                 batch_size=batch_size, progress=progress, vocab_stats=self.vocab_stats,
                                 desc=self.name)
        return self._from_outputs(outputs, model, records, tokenizer=tokenizer, task=task, max_length=max_length,
                                  batch_size=batch_size, progress=progress)

    def _from_outputs(self, outputs: RecordOutputs, model: nn.Module, records: Any, *, tokenizer: Any, task: str,
                      max_length: int, batch_size: int, progress: bool) -> torch.Tensor:
        """Scores from the target model's per-record outputs (attacks with ``shares_forward``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ provenance
    def get_config(self) -> dict[str, Any]:
        """``{"name": ..., <every __init__ parameter>: value}`` (read from the signature, so none is dropped)."""
        params = inspect.signature(type(self).__init__).parameters
        out: dict[str, Any] = {"name": self.name}
        for p in params.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[p.name] = getattr(self, p.name)
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def score_attacks(attacks: Any, model: nn.Module, records: Any, *, tokenizer: Any, task: str,
                  max_length: int = 128, batch_size: int = 32, progress: bool = False) -> dict[str, torch.Tensor]:
    """Scores of several attacks on the same records: ``{attack.name: scores}``.

    Attacks that declare ``shares_forward`` (LOSS, zlib, Min-K%, Min-K%++, the reference attack's
    target side) share one forward pass of the target model; the others run their own ``score``.
    Results equal calling each attack's ``score`` (a test checks it).

    Raises:
        MembershipError: two attacks with one name, and every error of the attacks' ``score``.
    """
    attacks = list(attacks.values()) if isinstance(attacks, dict) else list(attacks)
    names = [a.name for a in attacks]
    if len(set(names)) != len(names):
        raise MembershipError(f"score_attacks: attack names must be unique, got {names}")
    if not attacks:
        raise MembershipError("score_attacks: no attacks given")
    for a in attacks:
        check_task(task, a.tasks, who=f"{type(a).__name__} ({a.name!r})")
        if not a.is_fitted:
            raise MembershipError(f"{type(a).__name__}: call fit(...) before scoring; {a.name!r} needs references")
    ds = as_dataset(records, task=task)
    kw = dict(tokenizer=tokenizer, task=task, max_length=max_length, batch_size=batch_size, progress=progress)
    shared = [a for a in attacks if a.shares_forward]
    outputs = None
    if shared:
        outputs = record_outputs(model, ds, vocab_stats=any(a.vocab_stats for a in shared), desc="target outputs",
                                 **kw)  # type: ignore[arg-type]
    out: dict[str, torch.Tensor] = {}
    for a in attacks:
        if a.shares_forward:
            scores = torch.as_tensor(a._from_outputs(outputs, model, ds, **kw), dtype=torch.float64)  # type: ignore[arg-type]
            if not torch.isfinite(scores).all():
                raise MembershipError(f"{type(a).__name__}: {int((~torch.isfinite(scores)).sum())} scores are NaN/Inf")
            out[a.name] = scores
        else:
            out[a.name] = a.score(model, ds, **kw)  # type: ignore[arg-type]
    return out
