"""Validation of the score/loss arrays reference-based attacks are fitted with."""

from __future__ import annotations

from typing import Any

import torch

from trustfl.attacks.membership.errors import MembershipError

__all__ = ["as_matrix", "as_vector"]


def as_vector(values: Any, what: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise MembershipError(f"{what}: not an array of numbers ({exc})") from exc
    if t.ndim != 1 or t.numel() == 0:
        raise MembershipError(f"{what}: expected a non-empty 1-D array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise MembershipError(f"{what}: {int((~torch.isfinite(t)).sum())} values are NaN/Inf")
    return t


def as_matrix(values: Any, what: str, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A finite ``[m, n]`` tensor (m models x n records); 1-D input is one model."""
    try:
        t = torch.as_tensor(values, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise MembershipError(f"{what}: not an array ({exc})") from exc
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise MembershipError(f"{what}: expected a non-empty [models, records] array, got shape {tuple(t.shape)}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise MembershipError(f"{what}: {int((~torch.isfinite(t)).sum())} values are NaN/Inf")
    return t
