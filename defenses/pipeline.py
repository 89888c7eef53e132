"""Pipeline: pre-aggregators -> one aggregator -> post-stages, over stacked updates.

One object that composes any pre-aggregator (norm clipping, NNM, bucketing) with any
aggregator and any post-stage (Gaussian noise), usable inside trustfl's loop, under
Flower, or on plain tensors. Rows that are non-finite are rejected per client before any
stage sees them (recorded in ``info``), never propagated.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from trustfl.defenses.base import Aggregate, AggregateInfo, Aggregator, PostStage, PreAggregator, validate_updates
from trustfl.defenses.fedavg import FedAvg
from trustfl.errors import UpdateError

__all__ = ["Pipeline"]


class Pipeline:
    """Compose ``pre`` stages, an ``aggregator`` and ``post`` stages.

    Example:
        >>> pipe = Pipeline(aggregator=FedAvg())
        >>> agg = pipe(torch.tensor([[1.0, 1.0], [float("nan"), 0.0], [3.0, 3.0]]))
        >>> agg.vector, agg.info.accepted.tolist()
        (tensor([2., 2.]), [True, False, True])
    """

    def __init__(self, *, pre: Sequence[PreAggregator] = (), aggregator: Aggregator | None = None,
                 post: Sequence[PostStage] = ()) -> None:
        self.pre = list(pre)
        self.aggregator = aggregator if aggregator is not None else FedAvg()
        self.post = list(post)
        for stage in [*self.pre, self.aggregator, *self.post]:
            if not callable(stage):
                raise TypeError(f"Pipeline: stage {stage!r} is not callable")

    @property
    def stages(self) -> list[Any]:
        return [*self.pre, self.aggregator, *self.post]

    def __repr__(self) -> str:
        return f"Pipeline(pre={self.pre}, aggregator={self.aggregator}, post={self.post})"

    @property
    def requires_individual_updates(self) -> bool:
        """False only if every stage works on a (weighted) sum, so secure aggregation can run it."""
        return bool(self.pre) or any(getattr(s, "requires_individual_updates", True)
                                     for s in [self.aggregator, *self.post])

    def check_tolerance(self, n: int, f: int) -> None:
        """Ask every stage that states a Byzantine tolerance whether ``n`` clients with ``f`` attackers is OK."""
        for stage in self.stages:
            check = getattr(stage, "check_tolerance", None)
            if check is not None:
                check(n, f)
            after = getattr(stage, "tolerance_after", None)  # e.g. bucketing: the next stage sees buckets
            if after is not None:
                n, f = after(n, f)

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None, client_ids: Sequence[int] | None = None) -> Aggregate:
        """Aggregate ``updates[n, d]``. ``client_ids`` (optional, one per row) are handed, for the rows
        that survive the non-finite check, to stages that track clients across rounds (``set_client_ids``)."""
        finite = validate_updates(updates)
        n = updates.shape[0]
        if weights is not None:
            weights = torch.as_tensor(weights).reshape(-1)
            if weights.numel() != n:
                raise UpdateError(f"weights: expected {n} entries (one per update), got {weights.numel()}")
        if not finite.any():
            raise UpdateError(f"updates: all {n} client updates contain NaN/Inf; nothing to aggregate")
        keep = finite.nonzero().flatten()
        rows = updates if bool(finite.all()) else updates[keep]
        w = None if weights is None else weights[keep]
        if client_ids is not None:
            if len(client_ids) != n:
                raise UpdateError(f"client_ids: expected {n} entries (one per update), got {len(client_ids)}")
            kept_ids = [client_ids[i] for i in keep.tolist()]
            for stage in self.stages:
                if hasattr(stage, "set_client_ids"):
                    stage.set_client_ids(kept_ids)
        info = AggregateInfo.all_accepted(rows.shape[0])
        row_of: torch.Tensor | None = None  # current row of each kept input row (None: one to one)
        for stage in self.pre:
            rows, w, stage_info = stage(rows, w, generator=generator)
            info = info.merge(_lift(stage_info, row_of))
            if stage_info.groups is not None:
                row_of = stage_info.groups if row_of is None else stage_info.groups[row_of]
        result = self.aggregator(rows, w, generator=generator)
        result = Aggregate(result.vector, info.merge(_lift(result.info, row_of)))
        for stage in self.post:
            result = stage(result, num_clients=int(keep.numel()), generator=generator)  # clients, not buckets
        return Aggregate(result.vector, _expand(result.info, keep, n, finite))

    # ------------------------------------------------------------------ state (for resume)
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors of stateful stages, keyed ``"<stage index>.<name>"`` (empty when all are stateless)."""
        state: dict[str, torch.Tensor] = {}
        for i, stage in enumerate(self.stages):
            if hasattr(stage, "state_dict"):
                state.update({f"{i}.{k}": v for k, v in stage.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, stage in enumerate(self.stages):
            part = {k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == str(i)}
            if hasattr(stage, "load_state_dict"):
                stage.load_state_dict(part)
            elif part:
                raise ValueError(f"Pipeline.load_state_dict: state for stage {i} ({stage!r}) which keeps none")


def _lift(info: AggregateInfo, row_of: torch.Tensor | None) -> AggregateInfo:
    """Per-row info of a stage that saw grouped rows (e.g. buckets), mapped back to the input rows."""
    if row_of is None:
        return info
    reasons = [info.reasons[j] for j in row_of.tolist()] if info.reasons else [""] * row_of.numel()
    return AggregateInfo(accepted=info.accepted[row_of], clipped=info.clipped[row_of], flagged=info.flagged[row_of],
                         scores={k: v[row_of] for k, v in info.scores.items()}, reasons=reasons,
                         stats=dict(info.stats))


def _expand(info: AggregateInfo, keep: torch.Tensor, n: int, finite: torch.Tensor) -> AggregateInfo:
    """Map the info of the kept rows back onto all ``n`` clients; rejected rows say why."""
    if keep.numel() == n:
        return info
    full = AggregateInfo.all_accepted(n)
    full.accepted[:] = False
    full.accepted[keep] = info.accepted
    full.clipped[keep] = info.clipped
    full.flagged[:] = ~finite
    full.flagged[keep] = info.flagged
    for name, score in info.scores.items():
        s = torch.full((n,), float("nan"), dtype=score.dtype)
        s[keep] = score
        full.scores[name] = s
    reasons = ["rejected: non-finite values (NaN/Inf)"] * n
    for j, i in enumerate(keep.tolist()):
        reasons[i] = info.reasons[j] if info.reasons else ""
    full.reasons = reasons
    full.stats = dict(info.stats)
    return full
