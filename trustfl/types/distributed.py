"""Distributed data steps: a client-side data step that needs every client's data, run as messages.

Some data steps look at all clients' records at once (near-duplicate removal across clients).
When each client's records live on its own machine (a Flower deployment), such a step runs as
five phases that exchange only :class:`Payload` s (numpy arrays + JSON-able values, never raw
records)::

    node    encode(client_id, train)          -> Payload               e.g. keyed codes of the records
    server  check_encoded(client_id, payload)                          reject garbage (that node is dropped)
    server  check_encoded_together({client_id: Payload}) -> {client_id: why}  nodes that do not fit the rest
    server  plan({client_id: Payload})        -> {client_id: Payload}  queries for the nodes that must answer
    node    confirm(client_id, train, query)  -> Payload               answers computed on the node's own data
    server  check_answer(client_id, query, answer)
    server  decide({client_id: Payload})      -> {client_id: Payload}  each node's decision
    node    apply(client_id, train, decision) -> train                 e.g. the kept records

A component declares the capability by subclassing :class:`DistributedDataStep` (never probed).
The local engine runs the five phases in process (:meth:`DistributedDataStep.prepare_clients`),
the Flower engine as messages (``trustfl.federation.flower.data_step``): one mechanism, so both
engines reach the same decision on the same data. Payloads are untrusted on both sides: the
server checks what nodes send (``check_*``), nodes check what the server sends (in ``confirm``
and ``apply``), and :func:`check_payload` checks the form of any payload.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from trustfl.types.components import ClientDataContext, RunComponent

__all__ = ["PAYLOAD_DTYPES", "DistributedDataStep", "Payload", "PayloadError", "check_payload", "meta_int",
           "run_in_process"]

PAYLOAD_DTYPES: frozenset[str] = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                            "uint64", "float32", "float64"})
"""The array dtypes a payload may carry (no object/str arrays: nothing that could hold text or pickles)."""


class PayloadError(ValueError):
    """A payload that breaks the form or the step's rules (wrong names, dtypes, shapes, sizes, ids)."""


@dataclass(frozen=True)
class Payload:
    """What one phase of a distributed data step hands the other side.

    Attributes:
        arrays: named numeric numpy arrays (dtypes in :data:`PAYLOAD_DTYPES`).
        meta: JSON-able values (numbers, strings, lists, dicts).
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (arrays as dtype, shape, base64 bytes), e.g. for component state in the run directory."""
        return {"meta": self.meta, "arrays": {k: {"dtype": str(a.dtype), "shape": list(a.shape),
                                                  "data": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()}
                                              for k, a in self.arrays.items()}}

    @classmethod
    def from_json(cls, doc: Any) -> "Payload":
        """Inverse of :meth:`to_json`; :class:`PayloadError` on anything malformed."""
        if not (isinstance(doc, dict) and isinstance(doc.get("meta"), dict) and isinstance(doc.get("arrays"), dict)):
            raise PayloadError(f"payload JSON: expected {{'meta': {{...}}, 'arrays': {{...}}}}, got {str(doc)[:80]}")
        arrays = {}
        for name, spec in doc["arrays"].items():
            try:
                dtype, shape = str(spec["dtype"]), tuple(int(s) for s in spec["shape"])
                if dtype not in PAYLOAD_DTYPES:
                    raise PayloadError(f"dtype {dtype!r} not allowed")
                raw = base64.b64decode(spec["data"], validate=True)
                arrays[str(name)] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
            except (KeyError, TypeError, ValueError) as exc:
                raise PayloadError(f"payload JSON: array {name!r} does not decode ({exc})") from exc
        return check_payload(cls(arrays=arrays, meta=dict(doc["meta"])), what="payload JSON")


def check_payload(payload: Any, *, what: str, max_bytes: int = 1 << 30) -> Payload:
    """Check a payload's form: str names, numeric arrays of at most 2 dims, JSON-able finite meta, total size.

    Raises:
        PayloadError: naming ``what`` and the first problem found.
    """
    if not isinstance(payload, Payload):
        raise PayloadError(f"{what}: expected a Payload, got {type(payload).__name__}")
    total = 0
    for name, array in payload.arrays.items():
        if not isinstance(name, str) or not name:
            raise PayloadError(f"{what}: array names must be non-empty str, got {name!r}")
        if not isinstance(array, np.ndarray):
            raise PayloadError(f"{what}: array {name!r} is a {type(array).__name__}, not a numpy array")
        if str(array.dtype) not in PAYLOAD_DTYPES:
            raise PayloadError(f"{what}: array {name!r} has dtype {array.dtype}; allowed: {sorted(PAYLOAD_DTYPES)}")
        if array.ndim > 2:
            raise PayloadError(f"{what}: array {name!r} has {array.ndim} dims, at most 2 allowed")
        total += array.nbytes
    if total > max_bytes:
        raise PayloadError(f"{what}: {total} bytes of arrays, more than the limit of {max_bytes}")
    try:
        text = json.dumps(payload.meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what}: meta must be JSON-able with finite numbers ({exc})") from exc
    if len(text) > max_bytes:
        raise PayloadError(f"{what}: {len(text)} bytes of meta, more than the limit of {max_bytes}")
    return payload


def meta_int(payload: Payload, key: str, *, what: str, lo: int = 0, hi: float = math.inf) -> int:
    """``payload.meta[key]`` as an int in ``[lo, hi]`` (bools refused); :class:`PayloadError` otherwise."""
    value = payload.meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PayloadError(f"{what}: meta {key!r} must be an int in [{lo}, {hi}], got {value!r}")
    return value


class DistributedDataStep(RunComponent):
    """A run component whose client-side data step runs as the five phases of the module docstring.

    Subclasses implement the phases; this base runs them in process for the local engine
    (:meth:`prepare_clients`) and keeps the server's decision for the run directory and resume.
    When the engine runs the step on remote nodes instead (a Flower deployment), it calls
    :meth:`defer_to_nodes` before the data are prepared: :meth:`prepare_clients` then leaves the
    server's copy of the data alone (the nodes apply the decision to their own records),
    :meth:`record_decision` stores the outcome, and :meth:`state_dict` carries the decisions, so a
    resumed server sends the same decisions instead of running the step again.
    """

    name: ClassVar[str] = "data_step"

    def __init__(self) -> None:
        self.deferred = False
        self.decisions: dict[int, Payload] | None = None
        self.excluded: dict[int, str] = {}
        self.summary: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the phases (subclasses)
    def encode(self, client_id: int, train: Any) -> Payload:
        """Node side: what this client sends about its training records (no raw records)."""
        raise NotImplementedError

    def check_encoded(self, client_id: int, payload: Payload) -> None:
        """Server side: raise :class:`PayloadError` if ``payload`` cannot be client ``client_id``'s encoding."""

    def check_encoded_together(self, encoded: dict[int, Payload]) -> dict[int, str]:
        """Server side, once every node's codes passed :meth:`check_encoded`: the clients left out, with why.

        For rules no single payload settles (all nodes must agree on something, e.g. a key: the
        majority is kept whatever order the replies came in). Raise when no majority can be told.
        """
        return {}

    def plan(self, encoded: dict[int, Payload]) -> dict[int, Payload]:
        """Server side: the queries for the clients that must answer (others are not asked)."""
        raise NotImplementedError

    def confirm(self, client_id: int, train: Any, query: Payload) -> Payload:
        """Node side: answer the server's query on the node's own records (validate ``query`` first)."""
        raise NotImplementedError

    def check_answer(self, client_id: int, query: Payload, answer: Payload) -> None:
        """Server side: raise :class:`PayloadError` if ``answer`` does not answer ``query``."""

    def decide(self, answers: dict[int, Payload]) -> dict[int, Payload]:
        """Server side: every planned client's decision (after the last :meth:`plan`)."""
        raise NotImplementedError

    def apply(self, client_id: int, train: Any, decision: Payload) -> Any:
        """Node side: the client's training records after the decision (validate ``decision`` first)."""
        raise NotImplementedError

    def step_summary(self) -> dict[str, Any]:
        """Server side, after :meth:`decide`: JSON facts for the run manifest (counts, ids; never records)."""
        return {}

    # ------------------------------------------------------------------ engines
    def defer_to_nodes(self) -> None:
        """The engine runs this step on the nodes: leave the server's copy of the data as it is."""
        self.deferred = True

    def record_decision(self, decisions: dict[int, Payload], *, excluded: dict[int, str],
                        facts: dict[str, Any]) -> None:
        """Keep the server's decision (per client), the clients left out and why, and the step's facts."""
        self.decisions = dict(decisions)
        self.excluded = {int(c): str(why) for c, why in excluded.items()}
        self.summary = {**self.step_summary(), **facts}

    def prepare_clients(self, data: ClientDataContext) -> dict[int, tuple[Any, Any]]:
        if self.deferred:
            return data.splits
        return run_in_process(self, data.splits)

    def manifest(self) -> dict[str, Any]:
        return {} if self.deferred or self.summary is None else {self.name: self.summary}

    def manifest_update(self) -> dict[str, Any]:
        return {self.name: self.summary} if self.deferred and self.summary is not None else {}

    def state_dict(self) -> dict[str, Any]:
        if not self.deferred or self.decisions is None:
            return {}
        return {"decisions": {str(c): p.to_json() for c, p in sorted(self.decisions.items())},
                "excluded": {str(c): why for c, why in sorted(self.excluded.items())}, "summary": self.summary}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if not self.deferred:
            raise ValueError(f"run component {self.name!r}: the run recorded a decision made on remote nodes; resume "
                             "it on the same engine (a Flower deployment)")
        try:
            self.decisions = {int(c): Payload.from_json(p) for c, p in state["decisions"].items()}
            self.excluded = {int(c): str(why) for c, why in state["excluded"].items()}
            self.summary = state["summary"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"run component {self.name!r}: the stored decision does not load ({exc})") from exc


def run_in_process(step: DistributedDataStep, splits: dict[int, tuple[Any, Any]]) -> dict[int, tuple[Any, Any]]:
    """Run the five phases of ``step`` in this process over ``{client_id: (train, holdout)}``.

    The same checks as on the wire apply, so the local engine and a deployment decide alike.
    """
    ids = sorted(splits)
    encoded = {}
    for cid in ids:
        encoded[cid] = check_payload(step.encode(cid, splits[cid][0]), what=f"client {cid} encode")
        step.check_encoded(cid, encoded[cid])
    odd = step.check_encoded_together(encoded)
    if odd:  # one process holds every client: a node that does not fit is a bug, not a node to leave out
        raise PayloadError(f"data step {step.name!r}: clients do not fit together: {odd}")
    queries = step.plan(encoded)
    answers = {}
    for cid, query in sorted(queries.items()):
        answers[cid] = check_payload(step.confirm(cid, splits[cid][0], query), what=f"client {cid} confirm")
        step.check_answer(cid, query, answers[cid])
    decisions = step.decide(answers)
    step.record_decision(decisions, excluded={}, facts={})
    return {cid: (step.apply(cid, splits[cid][0], decisions[cid]), holdout) for cid, (_, holdout) in splits.items()}
