"""Flower's SecAgg+ under trustfl's Flower engine: the server round receives only the aggregate.

With ``[federation.flower] secure_aggregation = "secaggplus"`` each round runs Flower 1.41's legacy
SecAgg+ fit workflow (``flwr.server.workflow.SecAggPlusWorkflow``, Bell, Bonawitz, Gascón,
Lepoint & Raykova 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS;
the SecAgg of Bonawitz et al. 2017 over a sparse neighbour graph) with a :class:`LegacyContext`
whose strategy is trustfl's :class:`_RoundStrategy`: it hands every sampled client its task
(``FitIns``: the global adapter + the run config) and receives, through ``aggregate_fit``, only
the dequantized weighted mean. On the node, the ClientApp's train handler runs behind Flower's
``secaggplus_mod`` (:func:`trustfl.federation.flower.client_app.secaggplus_when_asked`), which quantizes and masks the update the
handler returns (:func:`handle_secaggplus_fit`); the plaintext update never leaves the node.

What the server learns: the weighted mean (turned into ``secure_sum = mean * W`` and the weight
sum ``W`` for :meth:`~trustfl.federation.server.ServerRound.run`), each included client's weight
(1 for unweighted aggregation, else its claimed sample count: SecAgg+ reveals it) and its DP
accountant state. Pipelines that need individual updates are refused at load
(:func:`trustfl.federation.assemble.assemble`), as on the MPC path.

Precision (``c = clipping_range``, ``Q = quantization_range``, weights ``w_i <= max_weight = M``):
each client sends ``r_i x_i`` with ``r_i = round(Q w_i / M) / Q`` quantized to ``[-c, c]`` in
``Q`` steps of ``2c/Q`` with stochastic rounding (error ``< 2c/Q`` per entry), and the server
divides the sum by ``sum_i r_i``. So, per entry, provided every ``|r_i x_ij| <= c`` (checked on
the node, which refuses rather than letting Flower clip silently):

    |secagg - sum_i r_i x_i / sum_i r_i| < n (2c/Q) / sum_i r_i

which for unweighted aggregation (``w_i = 1 = M``, ``r_i = 1``) is ``< 2c/Q`` (3.8e-6 with Flower's
``c = 8``, ``Q = 2**22``), the mean itself being exact up to that. With weights, ``r_i`` rounds
``w_i / M`` to a multiple of ``1/Q``, adding at most ``max_i |x_ij| * n / (Q sum_i r_i)``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Sequence

import numpy as np
import torch

from trustfl.errors import UpdateError
from trustfl.optional import require
from trustfl.types import ServerView

__all__ = ["handle_secaggplus_fit", "is_secaggplus_fit", "resolved_max_weight", "secaggplus_round", "sum_weight"]
log = logging.getLogger(__name__)
FEATURE = "Flower's SecAgg+ (federation.flower.secure_aggregation = 'secaggplus')"
CONFIGS = "secaggplus_configs"  # flwr.common.secure_aggregation.secaggplus_constants.RECORD_KEY_CONFIGS (checked)
FITINS_CONFIG = "fitins.config"


# ---------------------------------------------------------------------- weights (both sides)
def sum_weight(pipeline: Any, num_samples: int) -> int:
    """One client's weight in the secure sum: the pipeline's ``sum_weights`` of its claimed count (an integer)."""
    w = float(pipeline.sum_weights(torch.tensor([float(num_samples)], dtype=torch.float64), 1)[0])
    if not (math.isfinite(w) and w >= 0 and w == round(w)):
        raise UpdateError(f"SecAgg+: a client's weight must be an integer >= 0 (Flower sends num_examples), got {w}")
    return int(round(w))


def resolved_max_weight(settings: Any, pipeline: Any) -> float:
    """``federation.flower.max_weight``, or its default: 1 when the pipeline weighs every client 1, else 1000."""
    if settings.max_weight is not None:
        return float(settings.max_weight)
    probe = torch.tensor([2.0, 3.0], dtype=torch.float64)
    return 1.0 if bool(torch.equal(pipeline.sum_weights(probe, 2), torch.ones(2, dtype=torch.float64))) else 1000.0


# ---------------------------------------------------------------------- node side
def is_secaggplus_fit(content: Any) -> bool:
    """True for SecAgg+'s training message (a legacy ``FitIns`` behind ``secaggplus_mod``)."""
    return FITINS_CONFIG in content.config_records


def handle_secaggplus_fit(message: Any, context: Any) -> Any:
    """Train the task's client on this node and return its update as a legacy ``FitRes`` for ``secaggplus_mod``.

    Refused unless Flower's ``secaggplus_mod`` runs this call
    (:func:`~trustfl.federation.flower.client_app.secaggplus_mod_masks`): without the mod the ``FitRes``
    would leave the node unmasked. The weight (``num_examples``) is the pipeline's sum weight of the
    client's count. Refused (an error reply: the client drops out of the round and SecAgg+ removes its
    masks) when the weight exceeds ``max_weight`` or an entry of the weighted update would be clipped
    by ``clipping_range`` or is not finite: Flower would otherwise change the update silently.
    """
    from trustfl.federation.flower.client_app import secaggplus_mod_masks
    from trustfl.federation.flower.identity import hosted_client_ids
    from trustfl.federation.flower.node import node_clients

    if not secaggplus_mod_masks():
        raise ValueError(f"a SecAgg+ training message (legacy FitIns) without SecAgg+'s {CONFIGS!r} record: Flower's "
                         "secaggplus_mod did not run, so the reply would carry this node's update in plaintext; "
                         "refused (the server must run federation.flower.secure_aggregation = 'secaggplus')")
    app = require("flwr.app", extra="flower", feature=FEATURE)
    common = require("flwr.common", extra="flower", feature=FEATURE)
    compat = require("flwr.compat.common.recorddict_compat", extra="flower", feature=FEATURE)
    fitins = compat.recorddict_to_fitins(message.content, keep_input=True)
    task = _decode_fitins(fitins, common)
    node_config = dict(context.node_config)
    if task.client_id not in hosted_client_ids(node_config):
        raise ValueError(f"this node hosts client(s) {hosted_client_ids(node_config)}, not client {task.client_id}")
    node = node_clients(task.config_json, node_config, task.num_labels)
    result, state = node.train(task)
    settings = node.config.federation.flower
    pipeline = node.config.server.build_pipeline()
    weight, max_w = sum_weight(pipeline, result.num_samples), resolved_max_weight(settings, pipeline)
    if weight > max_w:
        raise ValueError(f"client {task.client_id}: weight {weight} exceeds federation.flower.max_weight = {max_w:g} "
                         "(SecAgg+'s sum would overflow); raise max_weight above the largest client's sample count")
    delta = result.delta.detach().double().numpy()
    peak = float(np.abs(delta).max()) if delta.size else 0.0
    if not math.isfinite(peak):
        raise ValueError(f"client {task.client_id}: the update has NaN/Inf entries; SecAgg+ cannot sum it")
    if peak * weight / max_w > settings.clipping_range:
        raise ValueError(f"client {task.client_id}: an update entry of {peak:.4g} (x weight {weight}/{max_w:g}) exceeds "
                         f"federation.flower.clipping_range = {settings.clipping_range:g}, which SecAgg+ would clip; "
                         "raise clipping_range")
    metrics = {"client_id": int(task.client_id), "round": int(task.round),
               "privacy_state": "" if state is None else json.dumps(state)}
    fitres = common.FitRes(status=common.Status(code=common.Code.OK, message=""),
                           parameters=common.ndarrays_to_parameters([delta]), num_examples=weight, metrics=metrics)
    return app.Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=message)


def _decode_fitins(fitins: Any, common: Any) -> Any:
    """The legacy ``FitIns`` as trustfl's :class:`~trustfl.federation.flower.codec.TrainTask` (checked)."""
    from trustfl.federation.flower.codec import TrainTask

    cfg = dict(fitins.config)
    for key, kind in (("round", int), ("client_id", int), ("config", str), ("num_labels", int), ("size", int),
                      ("privacy_state", str)):
        if not isinstance(cfg.get(key), kind) or isinstance(cfg.get(key), bool):
            raise UpdateError(f"SecAgg+ train message: field {key!r} must be {kind.__name__}, got {cfg.get(key)!r}")
    arrays = common.parameters_to_ndarrays(fitins.parameters)
    size = int(cfg["size"])
    if len(arrays) != 1 or arrays[0].dtype != np.float32 or arrays[0].shape != (size,):
        raise UpdateError(f"SecAgg+ train message: expected one float32 vector of {size} entries, got "
                          f"{[(a.dtype.name, a.shape) for a in arrays]}")
    return TrainTask(round=int(cfg["round"]), client_id=int(cfg["client_id"]), config_json=str(cfg["config"]),
                     num_labels=None if cfg["num_labels"] < 0 else int(cfg["num_labels"]),
                     global_vector=torch.from_numpy(np.array(arrays[0], copy=True)),
                     privacy_state=json.loads(cfg["privacy_state"]) if cfg["privacy_state"] else None)


# ---------------------------------------------------------------------- server side
class _RecordingGrid:
    """The grid as the SecAgg+ workflow sees it, noting which node crashed or timed out in which stage."""

    def __init__(self, grid: Any, timeout: float) -> None:
        self.grid, self.timeout = grid, timeout
        self.dropped: dict[int, str] = {}  # node id -> why (first failure)

    def __getattr__(self, name: str) -> Any:  # everything else is the real grid's
        return getattr(self.grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Any]:
        messages = list(messages)
        stage = {int(m.metadata.dst_node_id): str(m.content.config_records[CONFIGS].get("stage", "?"))
                 for m in messages}
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        seen = set()
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            seen.add(node)
            if reply.has_error():
                self.dropped.setdefault(node, f"crashed in SecAgg+ stage {stage.get(node)!r}: {reply.error.reason}")
        for node, name in stage.items():
            if node not in seen:
                self.dropped.setdefault(node, f"no reply within {self.timeout:g} s in SecAgg+ stage {name!r} "
                                              "(federation.flower.round_timeout)")
        return replies


def _strategy_class() -> type:
    strategy = require("flwr.server.strategy", extra="flower", feature=FEATURE)

    class RoundStrategy(strategy.Strategy):
        """A legacy Flower strategy for one trustfl round: trustfl's tasks out, SecAgg+'s mean in."""

        def __init__(self, proxies_and_fitins: list[tuple[Any, Any]]) -> None:
            self.proxies_and_fitins = proxies_and_fitins
            self.results: list[tuple[Any, Any]] | None = None

        def initialize_parameters(self, client_manager: Any) -> None:
            return None

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[tuple[Any, Any]]:
            return list(self.proxies_and_fitins)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> tuple[Any, dict[str, Any]]:
            self.results = list(results)
            return (self.results[0][1].parameters if self.results else None), {}

        def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> list[Any]:
            return []

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> tuple[None, dict[str, Any]]:
            return None, {}

        def evaluate(self, server_round: int, parameters: Any) -> None:
            return None

    return RoundStrategy


def _workflow_class() -> type:
    workflow = require("flwr.server.workflow", extra="flower", feature=FEATURE)

    class Workflow(workflow.SecAggPlusWorkflow):
        """Flower's SecAgg+ workflow, surviving clients that drop out before they shared their keys.

        Flower 1.41 keeps every *sampled* node in ``sampled_node_ids``, so a node that fails the
        setup or share-keys stage is later treated as a dropout whose masks must be rebuilt from its
        neighbours' shares of its key, shares it never sent: every neighbour's unmask reply then fails
        (``KeyError``) and the round halts (and the server would look up the public key it never sent
        when it rebuilds a later dropout's pairwise masks). No one ever masked with such a node (stage 2
        masks only with the nodes whose key shares arrived), so after the share-keys stage the protocol's
        participants, and everyone's neighbours, are exactly the nodes still active; a node that drops
        later is reconstructed as in the paper.
        """

        def share_keys_stage(self, grid: Any, context: Any, state: Any) -> bool:
            ok = super().share_keys_stage(grid, context, state)
            joined = set(state.active_node_ids)
            state.sampled_node_ids = joined
            state.nid_to_neighbours = {nid: nbrs & joined for nid, nbrs in state.nid_to_neighbours.items()}
            return bool(ok)

    return Workflow


def secaggplus_round(engine: Any, round: int, client_ids: Sequence[int],
                     global_vector: torch.Tensor) -> tuple[ServerView, dict[int, str], dict[str, Any]]:
    """Run one round of the sampled clients through Flower's SecAgg+ workflow on ``engine.grid``.

    Returns the server view (only the secure sum), the dropped clients with reasons, and the
    round's SecAgg+ facts for the run directory.

    Raises:
        EngineError: SecAgg+ halted (too few clients left for the reconstruction threshold), or the
            revealed weights break ``max_weight``/the pipeline's weighting (the sum cannot be trusted).
    """
    from trustfl.federation.flower.engine import EngineError

    common = require("flwr.common", extra="flower", feature=FEATURE)
    compat = require("flwr.compat.common.recorddict_compat", extra="flower", feature=FEATURE)
    app = require("flwr.app", extra="flower", feature=FEATURE)
    legacy = require("flwr.server.compat.legacy_context", extra="flower", feature=FEATURE)
    proxy_mod = require("flwr.server.compat.grid_client_proxy", extra="flower", feature=FEATURE)
    settings, config = engine.settings, engine.config
    ids = [int(c) for c in client_ids]
    if len(ids) < 2:
        raise EngineError(f"flower: round {round}: SecAgg+ needs at least 2 clients in a round (the sum of one client "
                          f"is its update), got {len(ids)}")
    if len(ids) * settings.quantization_range >= 2**32:
        raise EngineError(f"flower: round {round}: {len(ids)} clients x quantization_range "
                          f"{settings.quantization_range} overflow SecAgg+'s modulus 2**32")
    pipeline = config.server.build_pipeline()
    max_w = resolved_max_weight(settings, pipeline)
    grid = _RecordingGrid(engine.grid, settings.round_timeout)
    states = engine.privacy.state_json() if engine.privacy is not None else {}
    params = common.ndarrays_to_parameters([global_vector.detach().to(torch.float32).cpu().numpy()])
    node_of = {cid: engine.nodes[cid] for cid in ids}
    client_of = {node: cid for cid, node in node_of.items()}
    jobs = []
    for cid in ids:
        state = states.get(str(cid))
        task = {"round": int(round), "client_id": cid, "config": engine.config_json,
                "num_labels": -1 if engine.num_labels is None else int(engine.num_labels),
                "size": int(global_vector.numel()), "privacy_state": "" if state is None else json.dumps(state)}
        jobs.append((proxy_mod.GridClientProxy(node_of[cid], grid, 0), common.FitIns(params, task)))
    strategy = _strategy_class()(jobs)
    base = app.Context(run_id=0, node_id=0, node_config={}, state=app.RecordDict(), run_config={})
    context = legacy.LegacyContext(base, strategy=strategy)
    context.state.config_records["config"] = app.ConfigRecord({"current_round": int(round)})
    context.state.array_records["parameters"] = compat.parameters_to_arrayrecord(params, keep_input=True)
    workflow = _workflow_class()(settings.num_shares, settings.reconstruction_threshold,
                                               max_weight=max_w, clipping_range=settings.clipping_range,
                                               quantization_range=settings.quantization_range,
                                               timeout=settings.round_timeout)
    try:
        workflow(grid, context)
    except Exception as exc:  # a protocol failure inside Flower's workflow: one line, the round is not applied
        raise EngineError(f"flower: round {round}: SecAgg+ failed ({type(exc).__name__}: {exc}; dropped: "
                          f"{grid.dropped}); the run stays at its last complete round (resume with --resume)") from exc
    dropped = {client_of[n]: why for n, why in grid.dropped.items() if n in client_of}
    if strategy.results is None or not strategy.results:
        raise EngineError(f"flower: round {round}: SecAgg+ stopped before revealing the sum (fewer clients left than "
                          f"its reconstruction threshold needs, or none replied; dropped: {dropped}); the run stays at "
                          "its last complete round (resume with --resume)")
    included, weights, reports = [], [], {}
    for proxy, fitres in strategy.results:
        cid = client_of[int(proxy.node_id)]
        included.append(cid)
        weights.append(int(fitres.num_examples))
        text = fitres.metrics.get("privacy_state", "")
        if engine.privacy is not None:
            try:
                reports[str(cid)] = json.loads(text) if isinstance(text, str) and text else None
            except json.JSONDecodeError:
                reports[str(cid)] = None
            if reports[str(cid)] is None:
                raise EngineError(f"flower: round {round}: client {cid} is in the SecAgg+ sum but sent no readable "
                                  "sample-level DP accountant state; its epsilon would be under-reported, so the sum "
                                  "is not applied")
    if engine.privacy is not None:  # all checked before any is recorded; a client in the sum cannot be left out
        try:
            engine.privacy.load_round_reports(reports, local_steps=engine.local_steps)
        except UpdateError as exc:
            raise EngineError(f"flower: round {round}: {exc}; the SecAgg+ sum includes that client, so it is not "
                              "applied") from None
    expected = pipeline.sum_weights(torch.tensor(weights, dtype=torch.float64), len(weights))
    if any(w < 0 or w > max_w for w in weights) or not torch.equal(expected, torch.tensor(weights, dtype=torch.float64)):
        raise EngineError(f"flower: round {round}: SecAgg+ revealed client weights {dict(zip(included, weights))} that "
                          f"break max_weight = {max_w:g} or the pipeline's weighting {expected.tolist()}; the sum "
                          "cannot be trusted and is not applied")
    (mean,) = common.parameters_to_ndarrays(strategy.results[0][1].parameters)
    mean = torch.from_numpy(np.asarray(mean, dtype=np.float64).reshape(-1))
    if mean.numel() != global_vector.numel() or not bool(torch.isfinite(mean).all()):
        raise EngineError(f"flower: round {round}: the SecAgg+ aggregate is not a finite vector of "
                          f"{global_vector.numel()} entries (shape {tuple(mean.shape)})")
    log.info("flower: round %d: SecAgg+ revealed the weighted mean of clients %s (dropped: %s)", round,
             sorted(included), sorted(dropped))
    total_w = float(sum(weights))
    order = sorted(range(len(included)), key=included.__getitem__)
    view = ServerView(client_ids=[included[i] for i in order], results=[],
                      secure_sum=(mean * total_w).to(torch.float32), secure_weight=total_w)
    facts = {"protocol": "secaggplus", "included": view.client_ids, "weights": [weights[i] for i in order],
             "max_weight": max_w, "clipping_range": settings.clipping_range,
             "quantization_range": settings.quantization_range}
    return view, {c: w for c, w in sorted(dropped.items()) if c not in included}, facts
