"""FoolsGold: down-weight clients whose update histories are too similar (sybils).

Fung, Yoon, Beschastnikh 2020, "The Limitations of Federated Learning in Sybil Settings"
(RAID), Algorithm 1 (without the optional feature-importance weighting): each client's
history ``H_i`` is the sum of its updates over rounds; with ``cs_ij`` the cosine similarity of
histories (self-similarity set to 0, as in the authors' code) and ``v_i = max_j cs_ij``:
pardoning ``cs_ij *= v_i / v_j`` where ``v_j > v_i``; ``alpha_i = 1 - max_j cs_ij`` clipped to [0, 1];
``alpha /= max(alpha)``; ``alpha_i = 1 -> 0.99``; logit ``alpha_i = kappa (ln(alpha_i / (1 - alpha_i)) + 0.5)``
clipped to [0, 1]. The aggregate is ``sum_i alpha_i Delta_i / sum_i alpha_i`` (normalized so that a
round without sybils equals the plain mean; 0 when every alpha is 0).

Bounded: every update is first clipped to norm ``tau`` (``clip_norm``; by default the median norm of the
round), and histories sum the *clipped* updates. FoolsGold alone only down-weights clients that look
alike; a single dissimilar client gets full weight, so without the clip one unbounded update (``1e30``,
or 1000x the honest norm) would move the aggregate arbitrarily. The paper targets sybils and leaves
a single unbounded client to a defense FoolsGold is combined with; here that bound is built in.
With the clip the aggregate is a convex combination of rows of norm <= ``tau``: ``||aggregate|| <= tau``
and one client moves it by at most ``tau * alpha_j / sum_i alpha_i``.

Stateful and client-tracking: histories are keyed by client id, so every call needs
``client_ids=`` (one id per row; ``Pipeline(..., client_ids=...)`` passes them, aligned with the rows
it keeps after rejecting non-finite ones). A call without ids is an error: row positions change
from round to round. ``state_dict()`` holds the histories for resume.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Sequence

import torch

from trustfl.defenses._robust import (check_finite_updates, check_positive, finite_result, gram_matrix, median_value,
                                      require_tolerance, row_norms, weighted_rows, working)
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
        clip_norm: every update is clipped to this L2 norm before it enters a history or the
            aggregate: a number ``> 0``, or ``"median"`` (default) for the median norm of the round.

    Tolerance: the sybil down-weighting needs at least one client that is not a sybil (``f < n``,
    any number of sybils sharing a goal); the norm bound ``||aggregate|| <= tau`` holds for any ``f``
    with a fixed ``clip_norm``, but ``tau`` = the median norm is bounded by honest norms only when
    ``2f < n``, so ``clip_norm="median"`` requires ``2f < n``. Client weights are untrusted and ignored.
    ``info.scores["foolsgold_weight"]`` is ``alpha_i``; rows with ``alpha_i = 0`` are not accepted and
    flagged; ``info.scores["norm"]`` holds the norms before clipping, ``info.clipped`` the clipped rows.

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

    def __init__(self, *, kappa: float = 1.0, clip_norm: float | Literal["median"] = "median") -> None:
        self.kappa = check_positive("FoolsGold", "kappa", kappa)
        if isinstance(clip_norm, str):
            if clip_norm != "median":
                raise ValueError(f"FoolsGold: clip_norm must be a number > 0 or 'median', got {clip_norm!r}")
            self.clip_norm: float | str = "median"
        else:
            self.clip_norm = check_positive("FoolsGold", "clip_norm", clip_norm)
        self.history: dict[int, torch.Tensor] = {}

    def check_tolerance(self, n: int, f: int) -> None:
        if self.clip_norm == "median":
            require_tolerance("foolsgold", n, f, 2 * f < n, "2f < n for clip_norm='median' (the median norm is "
                              "bounded by honest norms); with a fixed clip_norm, f < n (at least one honest client)")
        else:
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
        x = working(updates)  # float16/bfloat16 -> float32; the result is returned in the input dtype
        norms = row_norms(x)
        tau = median_value(norms) if self.clip_norm == "median" else float(self.clip_norm)
        scale = (tau / norms.clamp(min=1e-300)).clamp(max=1.0)  # the norm bound FoolsGold composes with
        for cid, row, s in zip(ids, x, scale.tolist()):
            old = self.history.get(cid)
            if old is not None and old.shape != (d,):
                raise ValueError(f"foolsgold: client {cid}'s history has shape {tuple(old.shape)}, updates have d={d}")
            clipped = row.detach().clone() if s >= 1.0 else (row.to(torch.float64) * s).to(x.dtype)
            self.history[cid] = clipped if old is None else old + clipped
        hist = torch.stack([self.history[c] for c in ids])
        alpha = foolsgold_weights(hist, kappa=self.kappa)
        info = AggregateInfo.all_accepted(n)
        info.scores["foolsgold_weight"] = alpha
        info.accepted = alpha > 0
        info.flagged = alpha < 1
        info.clipped = scale < 1.0
        info.scores["norm"] = norms
        info.stats["clip_norm"] = tau
        info.reasons = ["; ".join(r for r in (
            f"norm clipped from {float(v):.4g} to {tau:.4g}" if bool(c) else "",
            "" if float(a) >= 1 else f"history similar to another client's (weight {float(a):.3f})") if r)
            for v, c, a in zip(norms, info.clipped, alpha)]
        total = float(alpha.sum())
        if total <= 0:
            return Aggregate(vector=torch.zeros(d, dtype=updates.dtype), info=info)
        vector = weighted_rows(alpha / total * scale, x)  # sum_i alpha_i clip(x_i) / sum_i alpha_i, one GEMV
        return Aggregate(vector=finite_result("foolsgold", vector, updates.dtype), info=info)
