"""The one error type of federated unlearning (a user's mistake or an unusable parent run)."""

from __future__ import annotations

from trustfl.errors import TrustFLError

__all__ = ["UnlearningError"]


class UnlearningError(TrustFLError, ValueError):
    """An unlearning request that cannot be carried out: names the run, round, client or method and the fix."""
