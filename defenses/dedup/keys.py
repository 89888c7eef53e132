"""The dedup key: :class:`trustfl.text.TextKey` under its dedup name (one class, one home).

A secret shared by all clients and never given to the server; every code a client sends is a
function of it (see :mod:`trustfl.text.keys`).
"""

from __future__ import annotations

from trustfl.text.keys import TextKey, key_for_run

__all__ = ["DedupKey", "key_for_run"]

DedupKey = TextKey
"""The clients' shared key (the same class as :class:`trustfl.text.TextKey`)."""
