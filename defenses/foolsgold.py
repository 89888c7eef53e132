"""FoolsGold: down-weight clients whose update histories are too similar (sybils).

Fung, Yoon, Beschastnikh 2020, "The Limitations of Federated Learning in Sybil Settings"
(RAID), Algorithm 1 (without the optional feature-importance weighting): each client's
history ``H_i`` is the sum of its updates over rounds; with ``cs_ij`` the cosine similarity of
histories (self-similarity set to 0, as in the authors' code) and ``v_i = max_j cs_ij``:
pardoning ``cs_ij *= v_i / v_j`` where ``v_j > v_i``; ``alpha_i = 1 - max_j cs_ij`` clipped to [0, 1];
``alpha /= max(alpha)``; ``alpha_i = 1 -> 0.99``; logit ``alpha_i = kappa (ln(alpha_i / (1 - alpha_i)) + 0.5)``
clipped to [0, 1]. The aggregate is ``sum_i alpha_i Delta_i / sum_i alpha_i`` (normalized so that a
round without sybils equals the plain mean; 0 when every alpha is 0).

Stateful and client-tracking: histories are keyed by client id, so every call needs
``client_ids=`` (one id per row; ``Pipeline(..., client_ids=...)`` passes them, aligned with the rows
it keeps after rejecting non-finite ones). A call without ids is an error: row positions change
from round to round. ``state_dict()`` holds the histories for resume.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from trustfl.defenses._robust import (check_finite_result, check_finite_updates, check_positive, gram_matrix,
                                      require_tolerance, row_norms)
from trustfl.defenses.base import Aggregate, AggregateInfo
from trustfl.types import AggregatorStage

__all__ = ["FoolsGold", "foolsgold_weights"]


def foolsgold_weights(history: torch.Tensor, *, kappa: float = 1.0) -> torch.Tensor:
    """FoolsGold's per-client ``alpha[n]`` from the histories ``[n, d]`` (Algorithm 1, lines 4-17)."""
    n = history.shape[0]
    norms = row_norms(history)
    denom = torch.outer(norms, norms)
    cs = torch.where(denom > 0, gram_matrix(history) / denom.clamp(min=1e-300), torch.zeros(n, n, dtype=torch.float64))
    cs.fill_diagonal_(0.0)
    v = cs.max(dim=1).values
    pardon = v[:, None] / v[None, :]
    cs = torch.where(v[None, :] > v[:, None], cs * pardon, cs)
    alpha = (1.0 - cs.max(dim=1).values).clamp(0.0, 1.0)
    top = alpha.max()
    alpha = alpha / top if top > 0 else alpha
    alpha = torch.where(alpha == 1.0, torch.full_like(alpha, 0.99), alpha)
    with torch.no_grad():
        logit = kappa * (torch.log(alpha / (1.0 - alpha)) + 0.5)
    return torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)


class FoolsGold(AggregatorStage):
    """FoolsGold (Fung et al. 2020, Algorithm 1), stateful over rounds.

    Args:
        kappa: confidence parameter of the logit (``> 0``; the paper uses 1).

    Tolerance: no honest-majority bound (FoolsGold targets any number of sybils sharing a goal);
    it needs at least one client that is not a sybil, so ``f < n``. Client weights are untrusted
    and ignored. ``info.scores["foolsgold_weight"]`` is ``alpha_i``; rows with ``alpha_i = 0`` are not
    accepted and flagged.

    Example:
        >>> fg = FoolsGold()
        >>> u = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
        >>> fg(u, client_ids=[0, 1, 2, 3]).info.accepted.tolist()
        [True, True, False, False]
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = True
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = True

    def __init__(self, *, kappa: float = 1.0) -> None:
        self.kappa = check_positive("FoolsGold", "kappa", kappa)
        self.history: dict[int, torch.Tensor] = {}

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("foolsgold", n, f, f < n, "f < n (at least one honest client)")

    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self.history:
            return {}
        ids = sorted(self.history)
        return {"client_ids": torch.tensor(ids, dtype=torch.long),
                "history": torch.stack([self.history[i] for i in ids])}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not state:
            self.history = {}
            return
        if set(state) != {"client_ids", "history"}:
            raise ValueError(f"FoolsGold.load_state_dict: expected keys ['client_ids', 'history'], got {sorted(state)}")
        ids, hist = state["client_ids"].tolist(), state["history"]
        if hist.ndim != 2 or hist.shape[0] != len(ids):
            raise ValueError(f"FoolsGold.load_state_dict: history shape {tuple(hist.shape)} does not match "
                             f"{len(ids)} client ids")
        self.history = {int(c): hist[i].clone() for i, c in enumerate(ids)}

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        n, d = check_finite_updates("foolsgold", updates)
        ids = self._require_ids(client_ids, n)  # histories are keyed by client id, never by row position
        for cid, row in zip(ids, updates):
            old = self.history.get(cid)
            if old is not None and old.shape != (d,):
                raise ValueError(f"foolsgold: client {cid}'s history has shape {tuple(old.shape)}, updates have d={d}")
            self.history[cid] = row.detach().clone() if old is None else old + row
        hist = torch.stack([self.history[c] for c in ids])
        alpha = foolsgold_weights(hist, kappa=self.kappa)
        info = AggregateInfo.all_accepted(n)
        info.scores["foolsgold_weight"] = alpha
        info.accepted = alpha > 0
        info.flagged = alpha < 1
        info.reasons = ["" if float(a) >= 1 else f"history similar to another client's (weight {float(a):.3f})"
                        for a in alpha]
        total = float(alpha.sum())
        if total <= 0:
            return Aggregate(vector=torch.zeros(d, dtype=updates.dtype), info=info)
        vector = (alpha / total).to(updates.dtype) @ updates
        return Aggregate(vector=check_finite_result("foolsgold", vector), info=info)
