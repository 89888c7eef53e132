"""Exposure of a planted secret (Carlini et al. 2019, "The secret sharer", USENIX Security, Sec. 4).

``exposure = log2 |R| - log2 rank``, where ``rank`` is the canary's rank (1 = lowest loss) among the
space ``R`` of all secrets of its format. Enumerating ``R`` is impossible for long secrets, so it is
estimated by sampling (their Sec. 4.2 / 8): the canary's loss is ranked among ``n`` random candidate
secrets of the same format that were never trained on, ``rank = 1 + #{candidates with lower loss}``,
``exposure ≈ log2(n + 1) - log2 rank``. Its maximum, ``log2(n + 1)``, means the canary beats every
candidate; an untrained canary's exposure is about 1 bit on average.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trustfl.audits.privacy.empirical import EmpiricalEpsilonError

__all__ = ["exposure"]


def exposure(canary_losses: Any, candidate_losses: Any) -> np.ndarray:
    """Estimated exposure (bits) of each canary, ``[m]``, from its loss and ``[n]`` candidate losses.

    Raises:
        EmpiricalEpsilonError: empty or non-1-D inputs, NaN/Inf losses.

    Example:
        >>> exposure([0.1, 5.0], [1.0, 2.0, 3.0]).tolist()   # rank 1 of 4, rank 4 of 4
        [2.0, 0.0]
    """
    c = np.asarray(canary_losses, dtype=np.float64)
    r = np.sort(np.asarray(candidate_losses, dtype=np.float64))
    for name, a in (("canary_losses", c), ("candidate_losses", r)):
        if a.ndim != 1 or a.size == 0:
            raise EmpiricalEpsilonError(f"{name}: expected a non-empty 1-D array, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise EmpiricalEpsilonError(f"{name}: {int((~np.isfinite(a)).sum())} of {a.size} are NaN/Inf")
    rank = 1 + np.searchsorted(r, c, side="left")  # candidates with a strictly lower loss
    return np.log2(r.size + 1) - np.log2(rank)
