"""What the loopback Flower deployment tests share: each SuperNode's data file (written by
examples/flower_app/make_node_data.py, the script a deployment's operator runs) and its node config."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "flower_app"


def write_node_files(config_path: Path, out: Path) -> list[Path]:
    """One ``client_<id>.jsonl`` per client of the run config, as the example app's script writes them."""
    spec = importlib.util.spec_from_file_location("make_node_data", APP / "make_node_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_node_files(config_path, out)


def node_config(client_id: int, data_file: Path) -> dict[str, Any]:
    """A SuperNode's node config: its client, its own data file, one torch thread (2-core machine)."""
    return {"client-id": client_id, "data-file": str(data_file), "torch-threads": 1}


def node_configs(files: list[Path]) -> list[dict[str, Any]]:
    return [node_config(i, f) for i, f in enumerate(files)]


class InProcessGrid:
    """Flower's Grid interface delivering real Messages to the real ClientApp in this process: node ``100 + i``
    has node config ``node_configs[i]`` (simulation ``partition-id``s served one after another, as one Ray actor
    serves many, or deployment ``client-id``/``data-file`` nodes). The transport only, for fast tests:

    * ``crash[node] = phase`` makes the node fail a message of that phase (an error reply, as Flower sends one),
      ``"silent-<phase>"`` makes it never answer;
    * ``tamper[node](message, reply, phase) -> reply`` lets it lie (not in the ``hello`` query);
    * ``sent`` records ``(node, message_type, message)``.

    The phase of a message: its data step's phase, ``"hello"`` for the other queries, ``"train"``.
    """

    def __init__(self, node_configs: list[dict[str, Any]]) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
        self.node_configs = {100 + i: cfg for i, cfg in enumerate(node_configs)}
        self.tamper: dict[int, Any] = {}
        self.crash: dict[int, str] = {}
        self.sent: list[tuple[int, str, Any]] = []

    def get_node_ids(self) -> list[int]:
        return list(self.node_configs)

    @staticmethod
    def phase(message: Any) -> str:
        if message.metadata.message_type == "train":
            return "train"
        records = message.content.config_records
        return records["step"]["phase"] if "step" in records else "hello"

    def send_and_receive(self, messages: Any, timeout: float | None = None) -> list[Any]:
        import flwr.app as app

        from trustfl.federation.flower.client_app import app as client_app

        replies = []
        for m in messages:
            node, phase = m.metadata.dst_node_id, self.phase(m)
            self.sent.append((node, m.metadata.message_type, m))
            if self.crash.get(node) == f"silent-{phase}":
                continue
            ctx = app.Context(run_id=1, node_id=node, node_config=self.node_configs[node], state=app.RecordDict(),
                              run_config={})
            try:
                if self.crash.get(node) == phase:
                    raise RuntimeError(f"node {node} fell over")
                reply = client_app(m, ctx)
            except Exception as exc:  # as Flower does: an exception becomes an error reply
                reply = app.Message(app.Error(code=2, reason=repr(exc)), reply_to=m)
            if node in self.tamper and phase != "hello":
                reply = self.tamper[node](m, reply, phase)
            replies.append(reply)
        return replies
