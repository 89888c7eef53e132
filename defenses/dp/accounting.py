"""Privacy accounting with Opacus's accountants: pure helpers plus a stateful per-party ledger.

The subsampled Gaussian mechanism (Poisson rate ``q``, noise multiplier ``σ``) composed over
``steps`` is accounted with Rényi DP (Mironov 2017, "Rényi Differential Privacy", CSF;
subsampling bound: Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of the Sampled
Gaussian Mechanism", §3.3) and converted to (ε, δ) by Opacus (Balle et al. 2020,
"Hypothesis Testing Interpretations and Renyi DP", Theorem 21). The same analysis is the
moments accountant of Abadi et al. 2016 (Theorem 1), and the one DP-FedAvg uses with
clients in place of records (McMahan et al. 2018, §3 and Theorem 1).

Opacus's default PRV accountant is not used by default: it fails or returns nonsense at large
ε (Opacus issues #601, #604, #591); RDP is the default everywhere here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

from trustfl.optional import require

__all__ = ["RDP_ORDERS", "PrivacyLedger", "epsilon", "noise_multiplier_for"]

AccountantName = Literal["rdp", "prv"]
# Opacus's default orders stop at 63 (plus 128, 256); at ε ≈ 8 with q ≈ 0.1 the optimum sits at
# the top of that range, so ε would be over-stated. These extend it (RDP holds at every order).
RDP_ORDERS: list[float] = ([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64))
                           + [80, 96, 128, 160, 192, 256, 384, 512, 768, 1024])


def epsilon_kwargs(accountant: str) -> dict[str, object]:
    """Extra arguments for ``IAccountant.get_epsilon`` (the extended orders for RDP)."""
    return {"alphas": RDP_ORDERS} if accountant == "rdp" else {}


def _check_mechanism(*, noise_multiplier: float, sample_rate: float, steps: int) -> None:
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier: must be > 0 (0 means no privacy), got {noise_multiplier}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate: must be in (0, 1], got {sample_rate}")
    if steps < 0:
        raise ValueError(f"steps: must be >= 0, got {steps}")


def _accountant(name: AccountantName):  # noqa: ANN202 - an opacus IAccountant
    create_accountant = require("opacus.accountants", extra="dp", feature="differential privacy").create_accountant

    if name not in ("rdp", "prv"):
        raise ValueError(f"accountant: must be one of ['rdp', 'prv'], got {name!r}")
    return create_accountant(mechanism=name)


def epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float,
            accountant: AccountantName = "rdp") -> float:
    """ε(δ) of ``steps`` compositions of the Poisson-subsampled Gaussian mechanism.

    Example:
        >>> round(epsilon(noise_multiplier=1.1, sample_rate=256 / 60000, steps=14063, delta=1e-5), 2)
        2.6
    """
    _check_mechanism(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    if steps == 0:
        return 0.0
    acc = _accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(acc.get_epsilon(delta=delta, **epsilon_kwargs(accountant)))


def noise_multiplier_for(*, target_epsilon: float, delta: float, sample_rate: float, steps: int,
                         accountant: AccountantName = "rdp", tolerance: float = 0.01) -> float:
    """The smallest σ (to ``tolerance`` in ε) with ``epsilon(σ, q, steps, δ) <= target_epsilon``.

    Uses Opacus's ``get_noise_multiplier`` (the search behind ``make_private_with_epsilon``),
    which takes seconds. The result is memoized on the arguments (a pure function of them), so
    calling :func:`make_private` per client per round with the same ``target_epsilon`` solves
    once per distinct ``(target_epsilon, delta, sample_rate, steps, accountant, tolerance)``.

    Raises:
        ValueError: ``target_epsilon`` is not > 0, or the arguments are out of range.
    """
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon: must be > 0, got {target_epsilon}")
    _check_mechanism(noise_multiplier=1.0, sample_rate=sample_rate, steps=steps)
    if steps < 1:
        raise ValueError(f"steps: must be >= 1 to calibrate noise, got {steps}")
    return _solve_noise_multiplier(float(target_epsilon), float(delta), float(sample_rate), int(steps),
                                   str(accountant), float(tolerance))


@functools.lru_cache(maxsize=1024)
def _solve_noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str,
                            tolerance: float) -> float:
    """Opacus's σ search, memoized (see :func:`noise_multiplier_for`; ``cache_clear()`` resets it)."""
    get_noise_multiplier = require("opacus.accountants.utils", extra="dp", feature="differential privacy").get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=accountant, epsilon_tolerance=tolerance,
                                      **epsilon_kwargs(accountant)))


@dataclass
class PrivacyLedger:
    """The privacy spend of one party (a client at sample level, or the federation at client level).

    Holds the Opacus accountant history ``[(σ, q, steps), ...]`` so it can be saved in the run
    directory's metrics and restored on resume.

    Example:
        >>> ledger = PrivacyLedger(delta=1e-5)
        >>> ledger.step(noise_multiplier=1.0, sample_rate=0.01, steps=100)
        >>> ledger.epsilon() > 0
        True
    """

    delta: float
    accountant: AccountantName = "rdp"
    history: list[tuple[float, float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise ValueError(f"delta: must be in (0, 1), got {self.delta}")
        _accountant(self.accountant)

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` applications of the subsampled Gaussian mechanism."""
        _check_mechanism(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        if steps == 0:
            return
        if self.history and self.history[-1][:2] == (float(noise_multiplier), float(sample_rate)):
            z, q, n = self.history[-1]
            self.history[-1] = (z, q, n + int(steps))
        else:
            self.history.append((float(noise_multiplier), float(sample_rate), int(steps)))

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.history)

    def epsilon(self, *, extra: tuple[float, float, int] | None = None) -> float:
        """ε at ``delta`` so far; with ``extra = (σ, q, steps)``, as if those steps were also taken."""
        history = list(self.history) + ([extra] if extra is not None else [])
        if not history:
            return 0.0
        acc = _accountant(self.accountant)
        acc.history = [(float(z), float(q), int(n)) for z, q, n in history]
        eps = float(acc.get_epsilon(delta=self.delta, **epsilon_kwargs(self.accountant)))
        if math.isnan(eps):
            raise ArithmeticError(f"the {self.accountant} accountant returned NaN for history {history}")
        return eps

    def to_json(self) -> list[list[float]]:
        return [[z, q, float(n)] for z, q, n in self.history]

    @classmethod
    def from_json(cls, history: list[list[float]], *, delta: float,
                  accountant: AccountantName = "rdp") -> "PrivacyLedger":
        return cls(delta=delta, accountant=accountant,
                   history=[(float(z), float(q), int(n)) for z, q, n in history])
