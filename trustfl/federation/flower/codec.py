"""What travels between trustfl's server and its Flower ClientApps, and the checks on the way in.

Only adapter vectors travel (one ``ArrayRecord`` of a flat float32 ``delta``/``global`` vector);
alongside go a ``ConfigRecord`` (round, client id, the run's config as JSON, the client's own
sample-level DP accountant state) and the client's self-reported numbers (sample count, training
metrics) in a ``ConfigRecord``/``MetricRecord``. Everything a client reports is untrusted: shapes,
types and counts are checked here, values (NaN, huge norms) are the aggregation pipeline's job.
Message layout follows Flower 1.x's Message API (``flwr.app.Message`` / ``RecordDict``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trustfl.errors import UpdateError
from trustfl.optional import require
from trustfl.types import ClientResult

__all__ = ["TrainTask", "decode_reply", "decode_task", "encode_reply", "encode_task", "flwr_app",
           "from_array_record", "to_array_record"]

VECTOR = "vector"


def flwr_app() -> Any:
    """``flwr.app`` (Message, RecordDict, ArrayRecord, ...), or a one-line install hint."""
    return require("flwr.app", extra="flower", feature="the Flower engine (federation.engine = 'flower')")


def to_array_record(vector: torch.Tensor) -> Any:
    """A flat float32 vector as an ``ArrayRecord`` with one array."""
    app = flwr_app()
    flat = vector.detach().to(torch.float32).contiguous().cpu().numpy()
    return app.ArrayRecord({VECTOR: app.Array(flat)})


def from_array_record(record: Any, *, size: int, what: str) -> torch.Tensor:
    """The one float32 vector of ``size`` entries in ``record``; :class:`UpdateError` naming ``what`` otherwise."""
    app = flwr_app()
    if not isinstance(record, app.ArrayRecord) or list(record.keys()) != [VECTOR]:
        keys = list(record.keys()) if isinstance(record, app.ArrayRecord) else type(record).__name__
        raise UpdateError(f"{what}: expected an ArrayRecord holding one array {VECTOR!r}, got {keys}")
    array = record[VECTOR]
    if array.dtype != "float32" or len(array.shape) != 1 or array.shape[0] != size:
        raise UpdateError(f"{what}: expected a float32 vector of {size} entries, got dtype {array.dtype} "
                          f"shape {tuple(array.shape)}")
    try:
        data = array.numpy()
    except Exception as exc:  # malformed bytes: the sender's fault, one clear line
        raise UpdateError(f"{what}: the array's bytes do not decode ({exc})") from exc
    if data.dtype != np.float32 or data.shape != (size,):
        raise UpdateError(f"{what}: decoded to dtype {data.dtype} shape {data.shape}, expected float32 ({size},)")
    return torch.from_numpy(np.array(data, copy=True))


@dataclass
class TrainTask:
    """One client's instruction for one round (the decoded train message)."""

    round: int
    client_id: int
    config_json: str
    num_labels: int | None
    global_vector: torch.Tensor
    privacy_state: dict[str, Any] | None


def encode_task(*, round: int, client_id: int, config_json: str, num_labels: int | None,
                global_vector: torch.Tensor, privacy_state: dict[str, Any] | None) -> Any:
    """The train message's content: the global adapter and what the client needs to train its round."""
    app = flwr_app()
    task = app.ConfigRecord({"round": int(round), "client_id": int(client_id), "config": config_json,
                             "num_labels": -1 if num_labels is None else int(num_labels),
                             "size": int(global_vector.numel()),
                             "privacy_state": "" if privacy_state is None else json.dumps(privacy_state)})
    return app.RecordDict({"global": to_array_record(global_vector), "task": task})


def decode_task(content: Any) -> TrainTask:
    """Node side: the train message's fields (a malformed message raises :class:`UpdateError`)."""
    task = _config_record(content, "task", "train message")
    for key, kind in (("round", int), ("client_id", int), ("config", str), ("num_labels", int), ("size", int),
                      ("privacy_state", str)):
        if not isinstance(task.get(key), kind) or isinstance(task.get(key), bool):
            raise UpdateError(f"train message: field {key!r} must be {kind.__name__}, got {task.get(key)!r}")
    size = int(task["size"])
    if size < 1:
        raise UpdateError(f"train message: size must be >= 1, got {size}")
    vector = from_array_record(content.array_records.get("global"), size=size, what="train message global adapter")
    state = json.loads(task["privacy_state"]) if task["privacy_state"] else None
    return TrainTask(round=int(task["round"]), client_id=int(task["client_id"]), config_json=str(task["config"]),
                     num_labels=None if task["num_labels"] < 0 else int(task["num_labels"]),
                     global_vector=vector, privacy_state=state)


def encode_reply(result: ClientResult, *, privacy_state: dict[str, Any] | None) -> Any:
    """The reply's content: the update vector, the claimed sample count, metrics, the DP accountant state."""
    app = flwr_app()
    metrics = {k: float(v) for k, v in result.metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    report = app.ConfigRecord({"client_id": int(result.client_id), "num_samples": int(result.num_samples),
                               "privacy_state": "" if privacy_state is None else json.dumps(privacy_state)})
    return app.RecordDict({"update": to_array_record(result.delta), "report": report,
                           "metrics": app.MetricRecord(metrics)})


def decode_reply(content: Any, *, client_id: int, size: int) -> tuple[ClientResult, dict[str, Any] | None]:
    """Server side: a client's reply as a :class:`ClientResult` (+ its DP accountant state), after the checks.

    Raises:
        UpdateError: a missing record, a vector of the wrong dtype/shape, a reply claiming another
            client's id, a sample count that is not an int >= 0, a metric that is not a finite number.
    """
    what = f"client {client_id}"
    report = _config_record(content, "report", f"{what} reply")
    claimed = report.get("client_id")
    if claimed != client_id or isinstance(claimed, bool):
        raise UpdateError(f"{what}: the reply claims to come from client {claimed!r}")
    n = report.get("num_samples")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UpdateError(f"{what}: reported num_samples must be an int >= 0, got {n!r}")
    delta = from_array_record(content.array_records.get("update"), size=size, what=f"{what} update")
    metrics_record = content.metric_records.get("metrics")
    if metrics_record is None:
        raise UpdateError(f"{what}: the reply has no MetricRecord 'metrics'")
    metrics: dict[str, float] = {}
    for key, value in metrics_record.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UpdateError(f"{what}: metric {key!r} must be a finite number, got {value!r}")
        metrics[str(key)] = float(value)
    state_text = report.get("privacy_state", "")
    if not isinstance(state_text, str):
        raise UpdateError(f"{what}: privacy_state must be a JSON string, got {type(state_text).__name__}")
    try:
        state = json.loads(state_text) if state_text else None
    except json.JSONDecodeError as exc:
        raise UpdateError(f"{what}: privacy_state is not valid JSON ({exc})") from exc
    if state is not None and not isinstance(state, dict):
        raise UpdateError(f"{what}: privacy_state must be a JSON object, got {type(state).__name__}")
    return ClientResult(client_id=client_id, delta=delta, num_samples=n, metrics=metrics), state


def _config_record(content: Any, key: str, what: str) -> Any:
    record = content.config_records.get(key) if content is not None else None
    if record is None:
        raise UpdateError(f"{what}: has no ConfigRecord {key!r}")
    return record
