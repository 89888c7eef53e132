"""Round callbacks that account and report ε per round, and stop a run at its privacy budget.

* :class:`ClientLevelAccountant` — client-level DP-FedAvg: each round is one Poisson-subsampled
  Gaussian mechanism over clients with rate q = clients_per_round / num_clients and noise
  multiplier z (McMahan et al. 2018, Theorem 1, accounted with Opacus's RDP accountant).
  With ``max_epsilon`` it raises :class:`BudgetExhausted` (a ``StopFederation``) after the
  last round whose successor would exceed the budget, so no committed round is over budget.
* :class:`SampleLevelReport` — ε per client of :class:`~.sample_level.DPAdapterTraining`
  and their max (each client's accountant is separate; a record belongs to one client).

Sampling: Opacus's RDP bound is for *Poisson* sampling under add/remove-one adjacency, so
client-level DP runs with ``federation.sampling = "poisson"`` (each client joins a round
independently with probability q) and the fixed-denominator release of
:class:`~.client_level.GaussianNoise`; every round is accounted, also one that sampled no
client. Fixed-size sampling (k of N without replacement) is *not* covered by this bound: under
replace-one adjacency it costs far more (q = 0.1, z = 1, 100 rounds: ε ≈ 14.1 against the Poisson
7.9; Wang, Balle & Kasiviswanathan 2019), which is why client-level DP refuses it.
"""

from __future__ import annotations

from typing import Any

from trustfl.defenses.dp.accounting import PrivacyLedger
from trustfl.errors import ConfigError, StopFederation, TrustFLError

__all__ = ["AccountingError", "BudgetExhausted", "ClientLevelAccountant", "SampleLevelReport"]


class AccountingError(TrustFLError):
    """The accountant's history does not match the rounds the run has released (ε would be wrong)."""


class BudgetExhausted(StopFederation):
    """The next round would exceed the privacy budget; ``metrics`` are this round's privacy metrics."""

    def __init__(self, reason: str, metrics: dict[str, Any]) -> None:
        super().__init__(reason, metrics)


class ClientLevelAccountant:
    """RoundCallback: account one DP-FedAvg round per call; stop before the budget is exceeded.

    Args:
        noise_multiplier: z of each round (update + count, see :mod:`.client_level`).
        sample_rate: q = clients_per_round / num_clients, in (0, 1].
        delta: δ of the reported ε.
        max_epsilon: optional budget.
        accountant: ``"rdp"`` (default) or ``"prv"``.

    Raises:
        ValueError (at construction): even one round would exceed ``max_epsilon``.
    """

    def __init__(self, *, noise_multiplier: float, sample_rate: float, delta: float,
                 max_epsilon: float | None = None, accountant: str = "rdp") -> None:
        self.noise_multiplier, self.sample_rate = float(noise_multiplier), float(sample_rate)
        self.max_epsilon = max_epsilon
        self.ledger = PrivacyLedger(delta=delta, accountant=accountant)  # type: ignore[arg-type]
        first = self.ledger.epsilon(extra=(self.noise_multiplier, self.sample_rate, 1))
        if max_epsilon is not None and first > max_epsilon:
            raise ValueError(f"max_epsilon: one round already costs epsilon={first:.4g} > "
                             f"max_epsilon={max_epsilon} (z={noise_multiplier}, q={sample_rate:.4g}); raise the "
                             "noise multiplier or the budget")

    def __repr__(self) -> str:
        return (f"ClientLevelAccountant(noise_multiplier={self.noise_multiplier}, sample_rate={self.sample_rate}, "
                f"delta={self.ledger.delta}, max_epsilon={self.max_epsilon})")

    def restore(self, rounds_done: int) -> None:
        """After a resume: the first ``rounds_done`` rounds are already spent."""
        self.ledger.history = []
        self.ledger.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate, steps=rounds_done)

    def check_budget(self, round: int, *, who: str) -> None:
        """Before round ``round`` spends anything (also the first round after a resume): refuse it with
        :class:`~trustfl.errors.StopFederation` when its ε would exceed ``max_epsilon``."""
        if self.max_epsilon is None:
            return
        after = self.ledger.epsilon(extra=(self.noise_multiplier, self.sample_rate, 1))
        if after > self.max_epsilon:
            raise StopFederation(f"{who}: round {round} would raise epsilon from {self.ledger.epsilon():.4g} to "
                                 f"{after:.4g} > max_epsilon={self.max_epsilon}; the run is finished (raise "
                                 "max_epsilon in a new run to train further)")

    def state_dict(self) -> dict[str, Any]:
        """The resume state: how many rounds are spent."""
        return {"rounds_accounted": self.ledger.steps}

    def load_state_dict(self, state: dict[str, Any], *, who: str) -> None:
        """Resume: restore the spent rounds, or refuse a run that has rounds but no such state (its ε could not
        be continued)."""
        if "rounds_accounted" not in state:
            raise ConfigError(f"resume: the run has rounds but no {who} accountant state; it was not run with it, so "
                              "its epsilon cannot be continued")
        self.restore(int(state["rounds_accounted"]))

    def summary(self) -> dict[str, Any]:
        return {"epsilon": self.ledger.epsilon(), "delta": self.ledger.delta, "rounds": self.ledger.steps,
                "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                "max_epsilon": self.max_epsilon}

    def __call__(self, report: Any) -> dict[str, Any]:
        done = self.ledger.steps
        if isinstance(getattr(report, "round", None), int) and report.round != done + 1:
            raise AccountingError(f"ClientLevelAccountant: asked to account round {report.round} but {done} rounds are "
                                  f"accounted; a resumed run must restore the accountant (restore({report.round - 1}), "
                                  "or use the ClientLevelDP run component, which does), else epsilon is under-reported")
        self.ledger.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        metrics = {"privacy_client": self.summary()}
        if self.max_epsilon is not None:
            after_next = self.ledger.epsilon(extra=(self.noise_multiplier, self.sample_rate, 1))
            metrics["privacy_client"]["epsilon_after_next_round"] = after_next
            if after_next > self.max_epsilon:
                raise BudgetExhausted(
                    f"client-level privacy budget: epsilon={metrics['privacy_client']['epsilon']:.4g} after round "
                    f"{report.round}; one more round would give {after_next:.4g} > max_epsilon={self.max_epsilon}",
                    metrics)
        return metrics


class SampleLevelReport:
    """RoundCallback: ε per client of a :class:`DPAdapterTraining` hook, their max, and its state."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def __repr__(self) -> str:
        return f"SampleLevelReport({self.hook!r})"

    def summary(self) -> dict[str, Any]:
        eps = self.hook.epsilons()
        return {"epsilon_max": max(eps.values(), default=0.0), "delta": self.hook.settings.delta,
                "epsilon_per_client": {str(c): e for c, e in eps.items()}}

    def __call__(self, report: Any) -> dict[str, Any]:
        return {"privacy_sample": {**self.summary(), "state": self.hook.state_json()}}
