"""Pure tensor maths of the unlearning methods: a client's share of a FedAvg round, calibration, projection.

Every function takes and returns flat ``(d,)`` / stacked ``(n, d)`` tensors and never mutates its input.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import torch

__all__ = ["calibrate", "fedavg", "project_l2_ball", "round_contribution"]

RoundUpdates = Mapping[int, tuple[torch.Tensor, float]]  # client id -> (delta (d,), aggregation weight or num_samples)


def fedavg(updates: RoundUpdates, clients: Collection[int], *, weighted: bool = True) -> torch.Tensor | None:
    """FedAvg (McMahan et al. 2017) of ``clients``' stored updates (float64 maths, float32 result); None if empty.

    Weights are the given ones (the run's recorded aggregation weights, or the stored sample counts that
    clients report: untrusted, exactly what the run used) or 1 each with ``weighted=False``; all-zero
    weights fall back to equal weights.
    """
    ids = sorted(int(c) for c in clients)
    if not ids:
        return None
    w = torch.tensor([float(updates[c][1]) if weighted else 1.0 for c in ids], dtype=torch.float64)
    w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / len(ids))
    rows = torch.stack([updates[c][0].to(torch.float64) for c in ids])
    return (w[:, None] * rows).sum(dim=0).to(torch.float32)


def round_contribution(updates: RoundUpdates, forget: Collection[int], *, server_lr: float = 1.0,
                       weighted: bool = True) -> torch.Tensor:
    """What ``forget`` added to one round's global step: ``lr * (FedAvg(all) - FedAvg(all minus forget))``.

    Removing it leaves the step the round would have taken without them, with the remaining clients'
    weights renormalised (exact for a FedAvg pipeline whose inputs are the stored updates).
    """
    everyone = [int(c) for c in updates]
    rest = [c for c in everyone if c not in set(int(f) for f in forget)]
    full = fedavg(updates, everyone, weighted=weighted)
    if full is None:
        raise ValueError("round_contribution: the round has no stored update")
    without = fedavg(updates, rest, weighted=weighted)
    return (server_lr * (full - (without if without is not None else torch.zeros_like(full)))).to(torch.float32)


def calibrate(new: torch.Tensor, old_norm: torch.Tensor | float) -> torch.Tensor:
    """FedEraser's calibrated update (Liu et al. 2021, Eq. 3): ``|U_old| * U_new / |U_new|`` (0 if U_new is 0).

    The direction comes from the remaining client's short calibration training on the unlearned
    global, the length from its stored update of that round.

    Raises:
        ValueError: ``new`` has a NaN or Inf (the calibration training diverged: it has no direction), or
            ``old_norm`` is not a finite number >= 0.
    """
    if not (math.isfinite(float(old_norm)) and float(old_norm) >= 0):
        raise ValueError(f"calibrate: old_norm must be a finite number >= 0, got {float(old_norm)}")
    norm = new.to(torch.float64).norm()
    if not bool(torch.isfinite(norm)):
        raise ValueError("calibrate: the calibration update has NaN/Inf values (the calibration training diverged, "
                         "so it has no direction to keep); lower the run's client.lr")
    if float(norm) == 0.0:
        return torch.zeros_like(new)
    return (new.to(torch.float64) * (float(old_norm) / norm)).to(new.dtype)


def project_l2_ball(w: torch.Tensor, center: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection of ``w`` onto ``{v : |v - center| <= radius}`` (Halimi et al. 2022, the PGD step)."""
    if radius < 0:
        raise ValueError(f"project_l2_ball: radius must be >= 0, got {radius}")
    diff = (w - center).to(torch.float64)
    dist = float(diff.norm())
    if dist <= radius:
        return w.clone()
    return (center.to(torch.float64) + diff * (radius / dist)).to(w.dtype)
