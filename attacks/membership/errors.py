"""The one error type of the membership-inference library."""

from __future__ import annotations

from trustfl.errors import TrustFLError

__all__ = ["MembershipError"]


class MembershipError(TrustFLError, ValueError):
    """Bad input to a membership-inference attack or metric (empty sets, missing columns, NaN scores, ...)."""
