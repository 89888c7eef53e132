"""Distributed data steps over Flower messages: each node works on its own records, the server on payloads.

A run component that is a :class:`~trustfl.types.distributed.DistributedDataStep` (e.g. ``[dedup]``)
runs, in a deployment, before round 1 as ``query`` messages whose ``ConfigRecord`` *step* names
the phase:

=========  ==============================  ===============================================
phase      server -> node                  node -> server
=========  ==============================  ===============================================
encode     run config, component name      the step's payload (e.g. keyed codes)
confirm    the step's query for the node   the answers, computed on the node's own records
=========  ==============================  ===============================================

then each ``train`` message carries the client's decision (``step:<name>`` records), which the
node checks against its own records and applies before training. Payload arrays travel in an
``ArrayRecord``, their JSON facts in a ``ConfigRecord``; only numeric arrays of the allowed dtypes
are accepted (:func:`~trustfl.types.distributed.check_payload`), then the step's own checks run.

A node that crashes, times out or sends garbage is left out of the step (the plan is recomputed
without it when that happens at ``confirm``) and cannot train in the run: its sampled rounds drop it
with the reason, and the manifest's ``extra.<step>.nodes`` records it. Fewer than
``federation.flower.min_clients`` clients left is one clear :class:`EngineError`. The server
keeps every decision in the component's state, so a resumed server sends the same decisions
instead of running the step again.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Sequence

from trustfl.errors import ConfigError
from trustfl.federation.flower.codec import flwr_app
from trustfl.federation.flower.identity import hosted_client_ids
from trustfl.types.distributed import PAYLOAD_DTYPES, DistributedDataStep, Payload, PayloadError, check_payload

__all__ = ["attach_decisions", "decode_decisions", "handle_step", "payload_from_records", "payload_to_records",
           "run_data_steps"]
log = logging.getLogger(__name__)

STEP = "step"
PHASES = ("encode", "confirm")
MAX_PAYLOAD_BYTES = 1 << 30
_REASON_CHARS = 300


# ---------------------------------------------------------------------- payloads <-> Flower records
def payload_to_records(payload: Payload, prefix: str, **fields: Any) -> dict[str, Any]:
    """``{prefix: ConfigRecord(meta JSON + fields), prefix + ".arrays": ArrayRecord}`` for a RecordDict."""
    app = flwr_app()
    payload = check_payload(payload, what=prefix, max_bytes=MAX_PAYLOAD_BYTES)
    arrays = app.ArrayRecord({name: app.Array(array) for name, array in payload.arrays.items()})
    return {prefix: app.ConfigRecord({**fields, "meta": json.dumps(payload.meta, allow_nan=False)}),
            f"{prefix}.arrays": arrays}


def payload_from_records(content: Any, prefix: str, *, what: str) -> tuple[Payload, Any]:
    """The payload under ``prefix`` in ``content`` and its ConfigRecord; :class:`PayloadError` when malformed."""
    app = flwr_app()
    record = content.config_records.get(prefix) if content is not None else None
    if record is None:
        raise PayloadError(f"{what}: has no ConfigRecord {prefix!r}")
    text = record.get("meta")
    if not isinstance(text, str) or len(text) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{what}: field 'meta' must be a JSON string")
    try:
        meta = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise PayloadError(f"{what}: field 'meta' is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise PayloadError(f"{what}: field 'meta' must be a JSON object, got {type(meta).__name__}")
    arrays_record = content.array_records.get(f"{prefix}.arrays")
    if not isinstance(arrays_record, app.ArrayRecord):
        raise PayloadError(f"{what}: has no ArrayRecord {prefix + '.arrays'!r}")
    arrays, total = {}, 0
    for name in arrays_record.keys():
        array = arrays_record[name]
        if array.dtype not in PAYLOAD_DTYPES or len(array.shape) > 2:
            raise PayloadError(f"{what}: array {name!r} has dtype {array.dtype} shape {tuple(array.shape)}; allowed "
                               f"dtypes {sorted(PAYLOAD_DTYPES)}, at most 2 dims")
        total += len(array.data)
        if total > MAX_PAYLOAD_BYTES:
            raise PayloadError(f"{what}: more than {MAX_PAYLOAD_BYTES} bytes of arrays")
        try:
            data = array.numpy()
        except Exception as exc:  # malformed bytes: the sender's fault, one line
            raise PayloadError(f"{what}: array {name!r} does not decode ({exc})") from exc
        if str(data.dtype) != array.dtype or tuple(data.shape) != tuple(array.shape):
            raise PayloadError(f"{what}: array {name!r} decoded to {data.dtype} {data.shape}, announced "
                               f"{array.dtype} {tuple(array.shape)}")
        arrays[str(name)] = data
    return check_payload(Payload(arrays=arrays, meta=meta), what=what, max_bytes=MAX_PAYLOAD_BYTES), record


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def attach_decisions(content: Any, decisions: dict[str, Payload]) -> Any:
    """Add each step's decision for this client to a train message's ``content`` (``step:<name>`` records)."""
    for name, payload in sorted(decisions.items()):
        for key, record in payload_to_records(payload, f"{STEP}:{name}").items():
            content[key] = record
    return content


def decode_decisions(content: Any) -> dict[str, Payload]:
    """Node side: the decisions a train message carries, ``{step name: Payload}``."""
    names = [k[len(STEP) + 1:] for k in content.config_records.keys() if k.startswith(f"{STEP}:")]
    return {name: payload_from_records(content, f"{STEP}:{name}", what=f"train message: decision of {name!r}")[0]
            for name in names}


# ---------------------------------------------------------------------- node side
def handle_step(content: Any, node_config: dict[str, Any]) -> Any:
    """Node side of a step query: run the phase on this node's own training records; the reply's content."""
    from trustfl import plugins
    from trustfl.config import RunConfig
    from trustfl.federation.flower.node import node_splits
    from trustfl.types import RunContext

    app = flwr_app()
    query, record = payload_from_records(content, STEP, what="step query")
    phase, name, cid, config_json = (record.get(k) for k in ("phase", "component", "client_id", "config"))
    if phase not in PHASES or not isinstance(name, str) or not isinstance(config_json, str) \
            or isinstance(cid, bool) or not isinstance(cid, int):
        raise PayloadError(f"step query: expected phase in {list(PHASES)}, a component name, a client id and the run "
                           f"config; got phase {phase!r}, component {name!r}, client {cid!r}")
    hosted = hosted_client_ids(node_config)
    if cid not in hosted:
        raise ConfigError(f"this node hosts client(s) {hosted}, not client {cid}")
    config = RunConfig.from_dict(json.loads(config_json))
    steps = [c for c in plugins.build_components(config) if isinstance(c, DistributedDataStep) and c.name == name]
    if not steps:
        raise ConfigError(f"step query: the run config builds no distributed data step named {name!r}")
    step = steps[0]
    step.defer_to_nodes()  # run as messages: the step's deployment rules hold on the node too (dedup's key file)
    step.setup(RunContext(config=config, seed=config.seed, num_clients=config.partition.num_clients,
                          clients_per_round=config.clients_per_round, rounds=config.federation.rounds,
                          progress=False))
    train = node_splits(config, node_config)[cid][0]
    reply = step.encode(cid, train) if phase == "encode" else step.confirm(cid, train, query)
    return app.RecordDict(payload_to_records(reply, f"{STEP}.reply", client_id=cid, phase=phase))


# ---------------------------------------------------------------------- server side
def _ask(engine: Any, phase: str, step: DistributedDataStep, queries: dict[int, Payload]
         ) -> tuple[dict[int, Payload], dict[int, str]]:
    """Send ``phase`` queries to the nodes of ``queries``' clients; ``(valid replies, failures with reasons)``."""
    app = flwr_app()
    messages, by_node = [], {}
    for cid, query in sorted(queries.items()):
        node = engine.nodes[cid]
        by_node[node] = cid
        content = app.RecordDict(payload_to_records(query, STEP, phase=phase, component=step.name, client_id=cid,
                                                    config=engine.config_json))
        messages.append(app.Message(content, dst_node_id=node, message_type="query", group_id=f"{step.name}-{phase}"))
    replies = list(engine.grid.send_and_receive(messages, timeout=engine.settings.round_timeout)) if messages else []
    got: dict[int, Payload] = {}
    failed: dict[int, str] = {}
    for reply in replies:
        cid = by_node.get(int(reply.metadata.src_node_id))
        if cid is None or cid in got or cid in failed:
            log.warning("flower: %s %s: ignored a reply from node %s", step.name, phase, reply.metadata.src_node_id)
            continue
        if reply.has_error():
            failed[cid] = f"{phase}: crashed: {str(reply.error.reason)[:_REASON_CHARS]}"
            continue
        try:
            payload, record = payload_from_records(reply.content, f"{STEP}.reply", what=f"client {cid}'s {phase} reply")
            if record.get("client_id") != cid or record.get("phase") != phase:
                raise PayloadError(f"client {cid}'s {phase} reply: claims client {record.get('client_id')!r}, phase "
                                   f"{record.get('phase')!r}")
            if phase == "encode":
                step.check_encoded(cid, payload)
            else:
                step.check_answer(cid, queries[cid], payload)
        except PayloadError as exc:
            failed[cid] = f"{phase}: invalid reply: {str(exc)[:_REASON_CHARS]}"
            continue
        got[cid] = payload
    for cid in queries:
        if cid not in got and cid not in failed:
            failed[cid] = (f"{phase}: no reply within {engine.settings.round_timeout:g} s "
                           "(federation.flower.round_timeout)")
    return got, failed


def _run_step(engine: Any, step: DistributedDataStep, client_ids: Sequence[int]) -> None:
    from trustfl.federation.flower.engine import EngineError

    t0 = time.perf_counter()
    excluded: dict[int, str] = {}
    try:
        engine.discover(client_ids)
    except EngineError as exc:
        for cid in client_ids:
            if cid not in engine.nodes:
                excluded[cid] = f"not connected: {exc}"[:_REASON_CHARS]
    min_clients = engine.settings.min_clients

    def enough(alive: Sequence[int], phase: str) -> None:
        if len(alive) < max(1, min_clients):
            raise EngineError(f"flower: data step {step.name!r} ({phase}): {len(alive)} of {len(client_ids)} clients "
                              f"left, fewer than federation.flower.min_clients = {min_clients} (left out: "
                              f"{excluded}); the run cannot start")

    alive = [c for c in client_ids if c not in excluded]
    encoded, failed = _ask(engine, "encode", step, {c: Payload(meta={"client_id": c}) for c in alive})
    excluded.update(failed)
    odd = step.check_encoded_together({c: encoded[c] for c in sorted(encoded)})
    excluded.update({c: f"encode: {why}"[:_REASON_CHARS] for c, why in odd.items()})
    alive = sorted(c for c in encoded if c not in odd)
    enough(alive, "encode")
    t1 = time.perf_counter()
    while True:
        queries = step.plan({c: encoded[c] for c in alive})
        answers, failed = _ask(engine, "confirm", step, queries)
        if not failed:
            break
        excluded.update(failed)  # plan again without them: their records must not decide the others' clusters
        alive = [c for c in alive if c not in failed]
        enough(alive, "confirm")
    t2 = time.perf_counter()
    decisions = step.decide(answers)
    facts = {"engine": "flower", "nodes": {"decided": sorted(decisions),
                                           "left_out": {str(c): why for c, why in sorted(excluded.items())}},
             "phases_s": {"encode": round(t1 - t0, 3), "plan_confirm": round(t2 - t1, 3),
                          "decide": round(time.perf_counter() - t2, 3)}}
    step.record_decision(decisions, excluded=excluded, facts=facts)
    for cid, why in sorted(excluded.items()):
        log.warning("flower: data step %r: client %d left out (%s)", step.name, cid, why)


def run_data_steps(engine: Any, steps: Sequence[DistributedDataStep], client_ids: Sequence[int]) -> None:
    """Run each step that has no decision yet over ``engine``'s grid; hand every decision to the engine.

    A step restored from the run directory (resume) is not run again: its stored decisions are sent.
    """
    for step in steps:
        if step.decisions is None:
            _run_step(engine, step, [int(c) for c in client_ids])
        engine.use_decisions(step.name, step.decisions or {}, step.excluded)
