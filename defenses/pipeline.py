"""Pipeline: pre-aggregators -> one aggregator -> post-stages, over stacked updates.

One object that composes any pre-aggregator (norm clipping, NNM, bucketing) with any
aggregator and any post-stage (Gaussian noise), usable inside trustfl's loop, under
Flower, or on plain tensors. Rows that are non-finite are rejected per client before any
stage sees them (recorded in ``info``), never propagated.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from trustfl.defenses.base import Aggregate, AggregateInfo, validate_updates
from trustfl.defenses.fedavg import FedAvg
from trustfl.errors import UpdateError
from trustfl.types import AggregatorStage, PostStageBase, PreStage, Stage, config_value

__all__ = ["Pipeline"]


class Pipeline:
    """Compose ``pre`` stages, an ``aggregator`` and ``post`` stages.

    Every stage must subclass its base in :mod:`trustfl.types` (``PreStage``, ``AggregatorStage``,
    ``PostStageBase``): the pipeline reads the capabilities the stage declares
    (``requires_individual_updates``, ``check_tolerance``/``tolerance_after``, ``state_dict``) and never
    probes it. A plain function is rejected with a ``TypeError``: wrap it in a small subclass that
    declares what it needs (a function cannot say whether it is robust, stateful or sum-only).

    ``client_ids=`` (one per row) is passed, as a keyword and restricted to the rows that survive
    the non-finite check, to every stage call; stages that key state by client
    (``tracks_clients = True``, e.g. FoolsGold) require it.

    Example:
        >>> pipe = Pipeline(aggregator=FedAvg())
        >>> agg = pipe(torch.tensor([[1.0, 1.0], [float("nan"), 0.0], [3.0, 3.0]]))
        >>> agg.vector, agg.info.accepted.tolist()
        (tensor([2., 2.]), [True, False, True])
    """

    def __init__(self, *, pre: Sequence[PreStage] = (), aggregator: AggregatorStage | None = None,
                 post: Sequence[PostStageBase] = ()) -> None:
        self.pre = list(pre)
        self.aggregator = aggregator if aggregator is not None else FedAvg()
        self.post = list(post)
        self._check_stages()

    def _check_stages(self) -> None:
        """Each stage subclasses its base (checked again at every call: ``pre``/``post`` are public lists)."""
        slots = [(f"pre[{i}]", s, PreStage) for i, s in enumerate(self.pre)]
        slots.append(("aggregator", self.aggregator, AggregatorStage))
        slots += [(f"post[{i}]", s, PostStageBase) for i, s in enumerate(self.post)]
        for where, stage, base in slots:
            if not isinstance(stage, base):
                other = (f" (it is a {type(stage).__mro__[1].__name__}, a stage of another kind)"
                         if isinstance(stage, Stage) else "")
                raise TypeError(f"Pipeline: {where} {stage!r} is not a trustfl.types.{base.__name__}{other}; "
                                f"subclass trustfl.types.{base.__name__} (it declares the stage's capabilities: "
                                "requires_individual_updates, stateful, claims_robustness, tracks_clients)")

    @property
    def stages(self) -> list[Stage]:
        return [*self.pre, self.aggregator, *self.post]

    def __repr__(self) -> str:
        return f"Pipeline(pre={self.pre}, aggregator={self.aggregator}, post={self.post})"

    def get_config(self) -> dict[str, Any]:
        """JSON config of every stage, ``{"class": name, **stage.get_config()}``, for the run manifest."""
        self._check_stages()
        return {"pre": [config_value(s) for s in self.pre], "aggregator": config_value(self.aggregator),
                "post": [config_value(s) for s in self.post]}

    @property
    def requires_individual_updates(self) -> bool:
        """False only if every stage works on a (weighted) sum, so secure aggregation can run it."""
        return any(stage.requires_individual_updates for stage in self.stages)

    def check_tolerance(self, n: int, f: int) -> None:
        """Ask every stage whether ``n`` clients with ``f`` attackers is OK (stages that claim no robustness
        accept anything); a stage that groups rows (bucketing) tells the next ones what they see."""
        for stage in self.stages:
            stage.check_tolerance(n, f)
            n, f = stage.tolerance_after(n, f)

    # ------------------------------------------------------------------ plaintext aggregation
    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None, client_ids: Sequence[int] | None = None) -> Aggregate:
        """Aggregate ``updates[n, d]``; rows with NaN/Inf are rejected per client and recorded in ``info``.

        ``client_ids`` (optional, one per row) go, for the kept rows, to every stage as ``client_ids=``.
        """
        self._check_stages()
        finite = validate_updates(updates)
        n = updates.shape[0]
        if weights is not None:
            weights = torch.as_tensor(weights).reshape(-1)
            if weights.numel() != n:
                raise UpdateError(f"weights: expected {n} entries (one per update), got {weights.numel()}")
        if client_ids is not None and len(client_ids) != n:
            raise UpdateError(f"client_ids: expected {n} entries (one per update), got {len(client_ids)}")
        if not finite.any():
            raise UpdateError(f"updates: all {n} client updates contain NaN/Inf; nothing to aggregate")
        keep = finite.nonzero().flatten()
        rows = updates if bool(finite.all()) else updates[keep]
        w = None if weights is None else weights[keep]
        kept_ids = None if client_ids is None else [int(client_ids[i]) for i in keep.tolist()]
        info = AggregateInfo.all_accepted(rows.shape[0])
        row_of: torch.Tensor | None = None  # current row of each kept input row (None: one to one)
        for stage in self.pre:
            rows, w, stage_info = stage(rows, w, generator=generator, client_ids=self._ids_for(stage, kept_ids, row_of))
            info = info.merge(_lift(stage_info, row_of))
            if stage_info.groups is not None:
                row_of = stage_info.groups if row_of is None else stage_info.groups[row_of]
        result = self.aggregator(rows, w, generator=generator,
                                 client_ids=self._ids_for(self.aggregator, kept_ids, row_of))
        _check_aggregate(self.aggregator, result.vector)
        result = Aggregate(result.vector, info.merge(_lift(result.info, row_of)))
        result = self._post(result, num_clients=int(keep.numel()), generator=generator, client_ids=kept_ids)
        return Aggregate(result.vector, _expand(result.info, keep, n, finite))

    @staticmethod
    def _ids_for(stage: Stage, ids: list[int] | None, row_of: torch.Tensor | None) -> list[int] | None:
        """Client ids of the rows ``stage`` sees; None once rows are groups of clients (e.g. buckets)."""
        if row_of is None:
            return ids
        if stage.tracks_clients:
            raise ValueError(f"Pipeline: {stage!r} keys its state by client id, but an earlier pre-stage merged "
                             "clients into groups (e.g. bucketing); put it before the grouping stage or drop one")
        return None

    def _post(self, result: Aggregate, *, num_clients: int, generator: torch.Generator | None,
              client_ids: list[int] | None) -> Aggregate:
        for stage in self.post:
            result = stage(result, num_clients=num_clients, generator=generator, client_ids=client_ids)  # clients
            _check_aggregate(stage, result.vector)
        return result

    # ------------------------------------------------------------------ secure aggregation
    def _require_sum_only(self, what: str) -> None:
        if self.requires_individual_updates:
            needs = [repr(s) for s in self.stages if s.requires_individual_updates]
            raise ValueError(f"Pipeline.{what}: stages {needs} need individual updates (requires_individual_updates "
                             "= True), which secure aggregation hides; use a sum-only pipeline, e.g. FedAvg "
                             "[+ GaussianNoise with clipping done by the clients]")

    def sum_weights(self, weights: torch.Tensor | None, n: int) -> torch.Tensor:
        """The float64 per-client weights ``[n]`` the secure sum must use (the aggregator decides:
        ``FedAvg(weighted=True)``: the given weights, ones when None; ``weighted=False``: ones)."""
        self._check_stages()
        self._require_sum_only("sum_weights")
        return self.aggregator.sum_weights(weights, n)

    def aggregate_sum(self, total: torch.Tensor, weight_sum: float, *, num_clients: int,
                      generator: torch.Generator | None = None, client_ids: Sequence[int] | None = None,
                      stats: dict[str, float] | None = None) -> Aggregate:
        """The pipeline's result from a secure sum: ``total = sum_i w_i x_i`` (with ``w = sum_weights(...)``)
        and ``weight_sum = sum_i w_i`` over ``num_clients`` clients.

        Valid only for a sum-only pipeline (``requires_individual_updates`` False). The aggregator turns
        the sum into its result (``from_sum``); then every post-stage runs, always (DP noise is never
        skipped). ``stats`` are facts the clients or the protocol reveal with the sum and that post-stages
        read, e.g. ``{"dp_clip_norm": C}`` when every client clipped its update to C before summing
        (``GaussianNoise`` refuses to run without it). Per-client info has ``num_clients`` rows, all accepted.
        """
        self._check_stages()
        self._require_sum_only("aggregate_sum")
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
            raise UpdateError(f"aggregate_sum: num_clients must be an int >= 1, got {num_clients!r}")
        ids = None if client_ids is None else [int(c) for c in client_ids]
        if ids is not None and len(ids) != num_clients:
            raise UpdateError(f"client_ids: expected {num_clients} entries (one per client), got {len(ids)}")
        if not math.isfinite(float(weight_sum)):
            raise UpdateError(f"aggregate_sum: weight_sum must be finite, got {weight_sum!r}")
        result = self.aggregator.from_sum(total, float(weight_sum), num_clients=num_clients)
        _check_aggregate(self.aggregator, result.vector)
        if stats:
            result.info.stats.update({str(k): float(v) for k, v in stats.items()})
        return self._post(result, num_clients=num_clients, generator=generator, client_ids=ids)

    # ------------------------------------------------------------------ state (for resume)
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors of stateful stages, keyed ``"<stage index>.<name>"`` (empty when all are stateless)."""
        state: dict[str, torch.Tensor] = {}
        for i, stage in enumerate(self.stages):
            state.update({f"{i}.{k}": v for k, v in stage.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        stages = self.stages
        unknown = sorted({k.split(".", 1)[0] for k in state} - {str(i) for i in range(len(stages))})
        if unknown:
            raise ValueError(f"Pipeline.load_state_dict: state for stages {unknown} but the pipeline has "
                             f"{len(stages)} stages")
        for i, stage in enumerate(stages):
            stage.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == str(i)})


def _check_aggregate(stage: Stage, vector: torch.Tensor) -> None:
    """Never release a silent NaN/Inf aggregate."""
    if not bool(torch.isfinite(vector).all()):
        raise UpdateError(f"Pipeline: {stage!r} returned a non-finite aggregate (NaN/Inf); refusing to apply it")


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
