"""The ClientApp: one trustfl client per SuperNode, trained on the node's own data file.

Start each SuperNode with its own data: ``--node-config "client-id=0 data-file='/data/client_0.jsonl'"``.
"""

from trustfl.federation.flower.client_app import app

__all__ = ["app"]
