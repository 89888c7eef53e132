"""Which trustfl client a Flower node serves, from the node's own config (no heavy imports: the
``query`` handshake runs in a fresh ClientApp process on a deployed SuperNode)."""

from __future__ import annotations

from typing import Any

from trustfl.errors import ConfigError

__all__ = ["hosted_client_ids"]


def hosted_client_ids(node_config: dict[str, Any]) -> list[int]:
    """The trustfl client id this node serves: ``client-id`` (deployment) or ``partition-id`` (simulation)."""
    for key in ("client-id", "partition-id"):
        value = node_config.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"node config {key!r} must be an integer >= 0, got {value!r}")
            return [int(value)]
    raise ConfigError(f"node config: set 'client-id' (and 'data-file') for this SuperNode, got keys "
                      f"{sorted(node_config)}")
