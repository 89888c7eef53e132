"""Update attacks: rewrite the attackers' updates ``[k, d]`` of a round (vectorized; colluding).

Non-omniscient: :class:`SignFlip`, :class:`GaussianUpdate`, :class:`Scaling` (model
replacement / boosting, Bagdasaryan et al. 2020, "How To Backdoor Federated Learning", eq. 3).
Omniscient (see the round's benign updates; when none are visible they fall back to the
attackers' own honest updates, the "partial knowledge" setting of Shejwalkar & Houmansadr):
:class:`ALIE` (Baruch et al. 2019, "A Little Is Enough"), :class:`IPM` (Xie et al. 2020,
"Fall of Empires: inner product manipulation"), :class:`MinMax` and :class:`MinSum`
(Shejwalkar & Houmansadr 2021, NDSS, "Manipulating the Byzantine", Algorithm 1).
All attackers of a round send the same malicious vector for the omniscient attacks.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import ClassVar, Literal

import torch

from trustfl.types import AttackContext, UpdateAttackStage

__all__ = ["ALIE", "GaussianUpdate", "IPM", "MinMax", "MinSum", "Scaling", "SignFlip"]


def _reference(updates: torch.Tensor, context: AttackContext) -> torch.Tensor:
    benign = context.benign_updates
    return benign if benign is not None and benign.shape[0] > 0 else updates


class SignFlip(UpdateAttackStage):
    """Send ``-scale * u`` instead of the honest update ``u``."""

    omniscient: ClassVar[bool] = False

    def __init__(self, *, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError(f"SignFlip: scale must be > 0, got {scale}")
        self.scale = scale

    def __call__(self, updates: torch.Tensor, *, context: AttackContext) -> torch.Tensor:
        return -self.scale * updates


class GaussianUpdate(UpdateAttackStage):
    """Send pure noise ``N(0, std^2 I)`` (drawn from the round's attack generator)."""

    omniscient: ClassVar[bool] = False

    def __init__(self, *, std: float = 1.0) -> None:
        if std <= 0:
            raise ValueError(f"GaussianUpdate: std must be > 0, got {std}")
        self.std = std

    def __call__(self, updates: torch.Tensor, *, context: AttackContext) -> torch.Tensor:
        noise = torch.randn(updates.shape, generator=context.generator, dtype=torch.float32)
        return (self.std * noise).to(updates.dtype)


class Scaling(UpdateAttackStage):
    """Model replacement: boost the update by ``factor`` (Bagdasaryan et al. use ``n / eta``)."""

    omniscient: ClassVar[bool] = False

    def __init__(self, *, factor: float = 10.0) -> None:
        if factor <= 0:
            raise ValueError(f"Scaling: factor must be > 0, got {factor}")
        self.factor = factor

    def __call__(self, updates: torch.Tensor, *, context: AttackContext) -> torch.Tensor:
        return self.factor * updates


class ALIE(UpdateAttackStage):
    """``mean - z * std`` of the benign updates, coordinate-wise (Baruch et al. 2019, Sec. 3).

    ``z`` defaults to the paper's ``z_max``: with ``n`` clients and ``f`` attackers,
    ``s = floor(n / 2 + 1) - f`` and ``z_max = Phi^{-1}((n - s) / n)``.
    """

    omniscient: ClassVar[bool] = True

    def __init__(self, *, z: float | None = None) -> None:
        self.z = z

    @staticmethod
    def z_max(n: int, f: int) -> float:
        s = n // 2 + 1 - f
        p = (n - s) / n
        p = min(max(p, 1e-6), 1 - 1e-6)
        return NormalDist().inv_cdf(p)

    def __call__(self, updates: torch.Tensor, *, context: AttackContext) -> torch.Tensor:
        ref = _reference(updates, context).to(torch.float64)
        n = ref.shape[0] + updates.shape[0] if context.benign_updates is not None else ref.shape[0]
        z = self.z if self.z is not None else self.z_max(max(n, 2), updates.shape[0])
        std = ref.std(dim=0, unbiased=False) if ref.shape[0] > 1 else torch.zeros_like(ref[0])
        malicious = ref.mean(dim=0) - z * std
        return malicious.to(updates.dtype).expand_as(updates).clone()


class IPM(UpdateAttackStage):
    """Inner product manipulation: ``-epsilon * mean(benign)`` (Xie et al. 2020)."""

    omniscient: ClassVar[bool] = True

    def __init__(self, *, epsilon: float = 0.5) -> None:
        if epsilon <= 0:
            raise ValueError(f"IPM: epsilon must be > 0, got {epsilon}")
        self.epsilon = epsilon

    def __call__(self, updates: torch.Tensor, *, context: AttackContext) -> torch.Tensor:
        mean = _reference(updates, context).to(torch.float64).mean(dim=0)
        return (-self.epsilon * mean).to(updates.dtype).expand_as(updates).clone()


Perturbation = Literal["unit_vec", "std", "sign"]


class _Optimized(UpdateAttackStage):
    """Shared search of Shejwalkar & Houmansadr (2021), Algorithm 1: ``m = mean + gamma * p``
    with the largest ``gamma`` (binary search) that keeps ``m`` inside the benign spread."""

    omniscient: ClassVar[bool] = True

    def __init__(self, *, perturbation: Perturbation = "unit_vec", gamma_init: float = 10.0, tol: float = 1e-3,
                 max_iter: int = 60) -> None:
        if perturbation not in ("unit_vec", "std", "sign"):
            raise ValueError(f"{type(self).__name__}: perturbation must be 'unit_vec', 'std' or 'sign', "
                             f"got {perturbation!r}")
        if gamma_init <= 0 or tol <= 0:
            raise ValueError(f"{type(self).__name__}: gamma_init and tol must be > 0")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"{type(self).__name__}: max_iter must be an int >= 1, got {max_iter!r}")
        self.perturbation, self.gamma_init, self.tol, self.max_iter = perturbation, gamma_init, tol, max_iter

    def _direction(self, benign: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        if self.perturbation == "unit_vec":
            return -mean / mean.norm().clamp_min(1e-12)
        if self.perturbation == "std":
            return -benign.std(dim=0, unbiased=False) if benign.shape[0] > 1 else -mean.abs()
        return -torch.sign(mean)

    def _ok(self, candidate: torch.Tensor, benign: torch.Tensor, sq_dists: torch.Tensor) -> bool:
        raise NotImplementedError

    def __call__(self, updates: torch.Tensor, *, context: AttackContext) -> torch.Tensor:
        benign = _reference(updates, context).to(torch.float64)
        mean = benign.mean(dim=0)
        p = self._direction(benign, mean)
        norms = (benign * benign).sum(1)
        sq_dists = (norms[:, None] + norms[None, :] - 2.0 * benign @ benign.T).clamp_min(0.0)
        gamma, step, best = self.gamma_init, self.gamma_init / 2, 0.0
        for _ in range(self.max_iter):
            if self._ok(mean + gamma * p, benign, sq_dists):
                best = gamma
                gamma += step
            else:
                gamma -= step
            step /= 2
            if step < self.tol:
                break
        return (mean + best * p).to(updates.dtype).expand_as(updates).clone()


class MinMax(_Optimized):
    """Max distance to any benign update <= the max pairwise benign distance."""

    def _ok(self, candidate: torch.Tensor, benign: torch.Tensor, sq_dists: torch.Tensor) -> bool:
        return bool(((benign - candidate) ** 2).sum(1).max() <= sq_dists.max())


class MinSum(_Optimized):
    """Sum of squared distances to benign updates <= the max such sum of any benign update."""

    def _ok(self, candidate: torch.Tensor, benign: torch.Tensor, sq_dists: torch.Tensor) -> bool:
        return bool(((benign - candidate) ** 2).sum() <= sq_dists.sum(1).max())
