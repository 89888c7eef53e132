"""FLTrust: trust scores from the server's own update on a small clean root dataset.

Cao, Fang, Liu, Gong 2021, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping" (NDSS), Section III, Algorithm 1 and eqs. (2)-(4): with the server update
``g_0`` (one round of training on the root dataset from the current global model),
``TS_i = ReLU(cos(g_i, g_0))``, each client update is rescaled to ``||g_0||``:
``g_i' = g_i * ||g_0|| / ||g_i||``, and the aggregate is ``sum_i TS_i g_i' / sum_i TS_i`` (0 when all
trust scores are 0). The paper shows robustness with any number of malicious clients as long as
the root dataset is clean, so there is no bound on ``f`` beyond ``f <= n``.

How the loop supplies ``g_0``: the server update must be computed each round from the current
global adapter, before aggregation. Either pass ``root_update_fn`` (called with no arguments at
each aggregation, e.g. a closure that trains on the root data from the latest global vector), or
call :meth:`FLTrust.set_server_update` before each aggregation; :class:`FLTrustRootHook` does the
latter as a ``RoundCallback`` (after round ``r`` it computes the update for round ``r + 1`` from the
new global vector; call ``hook.prime(global_vector)`` once before the first round). A server
update is used for exactly one aggregation; a missing one is an error, never a stale reuse.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import torch

from trustfl.defenses._robust import (check_finite_updates, finite_result, require_tolerance, row_norms, weighted_rows,
                                      working)
from trustfl.defenses.base import Aggregate, AggregateInfo
from trustfl.types import AggregatorStage
from trustfl.errors import UpdateError

__all__ = ["FLTrust", "FLTrustRootHook"]


class FLTrust(AggregatorStage):
    """FLTrust aggregation over ``updates[n, d]`` given the server's root update ``g_0[d]``.

    Args:
        root_update_fn: optional ``() -> Tensor[d]`` returning this round's server update.

    Tolerance: any ``f <= n`` (Cao et al. 2021, Section V: robust even with a malicious majority,
    given a clean root dataset). Client weights are untrusted and ignored. Stateless across
    rounds (``state_dict()`` is empty): ``g_0`` is recomputed every round.
    ``info.scores["trust"]`` holds ``TS_i``; rows with ``TS_i = 0`` are not accepted and flagged.

    Example:
        >>> agg = FLTrust()
        >>> agg.set_server_update(torch.tensor([1.0, 0.0]))
        >>> agg(torch.tensor([[2.0, 0.0], [-5.0, 0.0]])).vector
        tensor([1., 0.])
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = True
    tracks_clients: ClassVar[bool] = False

    def __init__(self, *, root_update_fn: Callable[[], torch.Tensor] | None = None) -> None:
        if root_update_fn is not None and not callable(root_update_fn):
            raise ValueError(f"FLTrust: root_update_fn must be callable () -> Tensor[d], got {root_update_fn!r}")
        self.root_update_fn = root_update_fn
        self._server_update: torch.Tensor | None = None

    def check_tolerance(self, n: int, f: int) -> None:
        require_tolerance("fltrust", n, f, f <= n, "f <= n (a clean root dataset; no honest majority needed)")

    def set_server_update(self, update: torch.Tensor) -> None:
        """Set ``g_0`` for the next aggregation (consumed by it)."""
        g0 = torch.as_tensor(update)
        if g0.ndim != 1 or not g0.is_floating_point() or not bool(torch.isfinite(g0).all()):
            raise UpdateError(f"FLTrust.set_server_update: expected a finite 1-D float tensor, got shape "
                              f"{tuple(g0.shape)}, dtype {g0.dtype}")
        self._server_update = g0.detach().clone()

    def _take_server_update(self, d: int) -> torch.Tensor:
        if self.root_update_fn is not None:
            self.set_server_update(self.root_update_fn())
        g0, self._server_update = self._server_update, None
        if g0 is None:
            raise UpdateError("fltrust: no server root update for this aggregation; call set_server_update(g0) "
                              "before each round (e.g. with FLTrustRootHook) or pass root_update_fn")
        if g0.numel() != d:
            raise UpdateError(f"fltrust: server update has {g0.numel()} entries but client updates have d={d}")
        return g0

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        n, d = check_finite_updates("fltrust", updates)
        x = working(updates)  # float16/bfloat16 -> float32; the result is returned in the input dtype
        g0 = self._take_server_update(d).to(x.dtype)
        norm0 = float(torch.linalg.vector_norm(g0.to(torch.float64)))
        norms = row_norms(x)
        dots = (x @ g0).to(torch.float64)
        bad = ~torch.isfinite(dots)
        if bool(bad.any()):
            dots[bad] = x[bad].to(torch.float64) @ g0.to(torch.float64)
        denom = norms * norm0
        cos = torch.where(denom > 0, dots / denom.clamp(min=1e-300), torch.zeros_like(dots))
        trust = cos.clamp(min=0.0)
        info = AggregateInfo.all_accepted(n)
        info.scores["trust"] = trust
        info.scores["cosine"] = cos
        info.accepted = trust > 0
        info.flagged = ~info.accepted
        info.clipped = (norms != norm0) & info.accepted
        info.reasons = ["" if bool(a) else "trust score 0: update not aligned with the server's root update"
                        for a in info.accepted]
        info.stats["server_update_norm"] = norm0
        total = float(trust.sum())
        if total <= 0:
            info.stats["all_distrusted"] = 1.0
            return Aggregate(vector=torch.zeros(d, dtype=updates.dtype), info=info)
        coef = trust * norm0 / norms.clamp(min=1e-300) / total
        return Aggregate(vector=finite_result("fltrust", weighted_rows(coef, x), updates.dtype), info=info)


class FLTrustRootHook:
    """A ``RoundCallback`` that feeds :class:`FLTrust` the server's root update every round.

    ``root_update(global_vector) -> Tensor[d]`` trains on the root dataset from ``global_vector`` and
    returns the update (``local - global``). Usage with trustfl's loop::

        hook = FLTrustRootHook(fltrust, root_update)
        fed = Federation(cfg, pipeline=Pipeline(aggregator=fltrust), callbacks=[hook])
        fed.setup(); hook.prime(fed.global_vector)   # the update for the first (or resumed) round
        fed.run()
    """

    def __init__(self, aggregator: FLTrust, root_update: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if not isinstance(aggregator, FLTrust):
            raise TypeError(f"FLTrustRootHook: aggregator must be an FLTrust, got {aggregator!r}")
        self.aggregator = aggregator
        self.root_update = root_update

    def prime(self, global_vector: torch.Tensor) -> None:
        self.aggregator.set_server_update(self.root_update(global_vector))

    def __call__(self, report: Any) -> dict[str, Any] | None:
        self.prime(report.global_vector)
        return None
