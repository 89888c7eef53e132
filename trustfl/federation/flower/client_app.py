"""trustfl's Flower ``ClientApp``: ``train`` runs one client's round, ``query`` names the clients a node hosts
(or runs a distributed data step's phase on the node's own records).

``flwr run`` / ``flower-supernode`` load it as ``trustfl.federation.flower.client_app:app`` (the
example app in ``examples/flower_app`` points at it). An exception while training (e.g. a missing
data file) becomes Flower's error reply; the server then drops that client from the round and
records why. Importing this module stays light (a deployed SuperNode starts a fresh ClientApp
process per message): torch and the model load only when a ``train`` message arrives.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

from trustfl.federation.flower.identity import hosted_client_ids
from trustfl.optional import require

__all__ = ["app", "handle_query", "handle_train", "masked_by_secaggplus_mod", "secaggplus_mod_masks",
           "secaggplus_when_asked"]
FEATURE = "the Flower engine (federation.engine = 'flower')"


SECAGGPLUS_CONFIGS = "secaggplus_configs"  # flwr.common.secure_aggregation.secaggplus_constants.RECORD_KEY_CONFIGS
SECURE_AGGREGATION = ("none", "secaggplus")  # node config 'secure-aggregation'
_MOD_MASKS: contextvars.ContextVar[bool] = contextvars.ContextVar("trustfl_secaggplus_mod_masks", default=False)


@contextlib.contextmanager
def masked_by_secaggplus_mod() -> Iterator[None]:
    """Within this block the train handler's reply goes to Flower's ``secaggplus_mod``, which masks it.

    A context variable, not a record: no message can set it, and it does not outlive the call.
    """
    token = _MOD_MASKS.set(True)
    try:
        yield
    finally:
        _MOD_MASKS.reset(token)


def secaggplus_mod_masks() -> bool:
    """True while Flower's ``secaggplus_mod`` runs the train handler (and will mask what it returns)."""
    return _MOD_MASKS.get()


def secaggplus_when_asked(message: Any, context: Any, call_next: Any) -> Any:
    """Train mod: Flower's ``secaggplus_mod`` for SecAgg+'s messages (it masks the update the handler
    returns), the plain handler for trustfl's own train messages."""
    if SECAGGPLUS_CONFIGS in message.content.config_records:
        mods = require("flwr.client.mod", extra="flower", feature=FEATURE)
        with masked_by_secaggplus_mod():
            return mods.secaggplus_mod(message, context, call_next)
    return call_next(message, context)


def handle_train(message: Any, context: Any) -> Any:
    """Decode the task, train the client on this node's own data, reply with its update.

    Under SecAgg+ (a legacy ``FitIns`` behind ``secaggplus_mod``) the update goes to the mod, which
    sends it masked (:mod:`trustfl.federation.flower.secaggplus`); a legacy ``FitIns`` that did not
    come through the mod is refused (its ``FitRes`` would carry the update in plaintext). A node whose
    node config says ``secure-aggregation = "secaggplus"`` refuses trustfl's plaintext train messages.
    """
    from trustfl.federation.flower.codec import decode_task, encode_reply
    from trustfl.federation.flower.data_step import decode_decisions
    from trustfl.federation.flower.node import node_clients
    from trustfl.federation.flower.secaggplus import handle_secaggplus_fit, is_secaggplus_fit

    app = require("flwr.app", extra="flower", feature=FEATURE)
    node_config = dict(context.node_config)
    required = node_config.get("secure-aggregation", "none")
    if required not in SECURE_AGGREGATION:
        raise ValueError(f"node config 'secure-aggregation' must be one of {list(SECURE_AGGREGATION)}, "
                         f"got {required!r}")
    if is_secaggplus_fit(message.content):  # refused inside unless secaggplus_mod masks the reply
        return handle_secaggplus_fit(message, context)
    if required != "none":
        raise ValueError(f"this node's node config requires secure-aggregation = {required!r}; it does not send its "
                         "update in plaintext (set federation.flower.secure_aggregation = 'secaggplus')")
    task = decode_task(message.content)
    hosted = hosted_client_ids(node_config)
    if task.client_id not in hosted:
        raise ValueError(f"this node hosts client(s) {hosted}, not client {task.client_id}")
    decisions = decode_decisions(message.content)  # data steps' decisions (e.g. dedup), applied on this node
    node = node_clients(task.config_json, node_config, task.num_labels, decisions=decisions)
    result, state = node.train(task)
    return app.Message(encode_reply(result, privacy_state=state), reply_to=message)


def handle_query(message: Any, context: Any) -> Any:
    """Reply with the client ids this node hosts (from its node config; no data is read), or, when the
    message names a data step's phase (a ConfigRecord ``step``), run that phase on this node's own
    records (:mod:`trustfl.federation.flower.data_step`)."""
    app = require("flwr.app", extra="flower", feature=FEATURE)
    if "step" in message.content.config_records:
        from trustfl.federation.flower.data_step import handle_step

        return app.Message(handle_step(message.content, dict(context.node_config)), reply_to=message)
    ids = hosted_client_ids(dict(context.node_config))
    return app.Message(app.RecordDict({"node": app.ConfigRecord({"client_ids": ids})}), reply_to=message)


def _make_app() -> Any:
    clientapp = require("flwr.clientapp", extra="flower", feature=FEATURE)
    client_app = clientapp.ClientApp()
    client_app.train(mods=[secaggplus_when_asked])(handle_train)
    client_app.query()(handle_query)
    return client_app


app = _make_app()
