"""trustfl's Flower ``ClientApp``: ``train`` runs one client's round, ``query`` names the clients a node hosts.

``flwr run`` / ``flower-supernode`` load it as ``trustfl.federation.flower.client_app:app`` (the
example app in ``examples/flower_app`` points at it). An exception while training (e.g. a missing
data file) becomes Flower's error reply; the server then drops that client from the round and
records why. Importing this module stays light (a deployed SuperNode starts a fresh ClientApp
process per message): torch and the model load only when a ``train`` message arrives.
"""

from __future__ import annotations

from typing import Any

from trustfl.federation.flower.identity import hosted_client_ids
from trustfl.optional import require

__all__ = ["app", "handle_query", "handle_train"]
FEATURE = "the Flower engine (federation.engine = 'flower')"


def handle_train(message: Any, context: Any) -> Any:
    """Decode the task, train the client on this node's own data, reply with its update."""
    from trustfl.federation.flower.codec import decode_task, encode_reply
    from trustfl.federation.flower.node import node_clients

    app = require("flwr.app", extra="flower", feature=FEATURE)
    task = decode_task(message.content)
    node_config = dict(context.node_config)
    hosted = hosted_client_ids(node_config)
    if task.client_id not in hosted:
        raise ValueError(f"this node hosts client(s) {hosted}, not client {task.client_id}")
    node = node_clients(task.config_json, node_config, task.num_labels)
    result, state = node.train(task)
    return app.Message(encode_reply(result, privacy_state=state), reply_to=message)


def handle_query(message: Any, context: Any) -> Any:
    """Reply with the client ids this node hosts (from its node config; no data is read)."""
    app = require("flwr.app", extra="flower", feature=FEATURE)
    ids = hosted_client_ids(dict(context.node_config))
    return app.Message(app.RecordDict({"node": app.ConfigRecord({"client_ids": ids})}), reply_to=message)


def _make_app() -> Any:
    clientapp = require("flwr.clientapp", extra="flower", feature=FEATURE)
    client_app = clientapp.ClientApp()
    client_app.train()(handle_train)
    client_app.query()(handle_query)
    return client_app


app = _make_app()
