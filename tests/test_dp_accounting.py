"""DP accounting against independent references: Opacus's RDP accountant called directly, a
from-scratch RDP of the sampled Gaussian (integer orders), and Abadi et al. 2016's published ε."""

from __future__ import annotations

import math

import pytest

from trustfl.defenses.dp import ClientLevelAccountant, PrivacyLedger, epsilon, noise_multiplier_for
from trustfl.defenses.dp.accounting import RDP_ORDERS
from trustfl.defenses.dp.reporting import BudgetExhausted
from trustfl.errors import StopFederation


def reference_rdp(q: float, sigma: float, alpha: int) -> float:
    """RDP of one Poisson-subsampled Gaussian step at integer order alpha, by the binomial expansion.

    Mironov, Talwar & Zhang 2019, "Rényi DP of the Sampled Gaussian Mechanism", §3.3 (integer α):
    A_α = Σ_k C(α,k) (1-q)^(α-k) q^k exp((k² - k) / (2σ²)),  ε(α) = log(A_α) / (α - 1).
    Summed in log space with exact binomials (slow, obviously correct).
    """
    terms = [math.log(math.comb(alpha, k)) + (alpha - k) * math.log1p(-q) + k * math.log(q)
             + (k * k - k) / (2 * sigma ** 2) for k in range(alpha + 1)]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / (alpha - 1)


def classic_epsilon(q: float, sigma: float, steps: int, delta: float, orders: range) -> float:
    """Abadi et al. 2016 Theorem 2 / Mironov 2017 Prop. 3: ε = min_α T·rdp(α) + log(1/δ)/(α-1)."""
    return min(steps * reference_rdp(q, sigma, a) + math.log(1 / delta) / (a - 1) for a in orders)


@pytest.mark.parametrize("q,sigma,steps", [(0.01, 1.1, 1000), (256 / 60000, 1.1, 14063), (0.1, 0.8, 50),
                                           (1.0, 2.0, 10)])
def test_epsilon_matches_opacus_rdp_accountant_called_directly(q, sigma, steps):
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(3):  # the same steps fed one call at a time
        acc.step(noise_multiplier=sigma, sample_rate=q)
    acc.history = [(sigma, q, steps)]
    assert epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=1e-5) == pytest.approx(
        acc.get_epsilon(delta=1e-5, alphas=RDP_ORDERS), rel=1e-12)


@pytest.mark.parametrize("q,sigma", [(0.01, 4.0), (0.05, 1.0), (0.3, 2.0)])
def test_opacus_rdp_equals_from_scratch_binomial_rdp(q, sigma):
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = list(range(2, 40))
    ours = [reference_rdp(q, sigma, a) for a in orders]
    theirs = compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=orders)
    for a, x, y in zip(orders, ours, theirs):
        assert x == pytest.approx(float(y), rel=1e-8), a


def test_reproduces_abadi_2016_published_epsilon():
    # Abadi et al. 2016, §3.1: q = 0.01, σ = 4, δ = 1e-5, T = 10000 gives ε ≈ 1.26 with the
    # moments accountant (orders λ <= 32 in their implementation).
    eps = classic_epsilon(0.01, 4.0, 10_000, 1e-5, range(2, 33))
    assert eps == pytest.approx(1.26, rel=0.01)
    # Opacus's conversion (Balle et al. 2020) is tighter, never looser.
    assert epsilon(noise_multiplier=4.0, sample_rate=0.01, steps=10_000, delta=1e-5) <= eps


def test_noise_multiplier_for_hits_target_from_below():
    sigma = noise_multiplier_for(target_epsilon=8.0, delta=1e-5, sample_rate=0.125, steps=80)
    eps = epsilon(noise_multiplier=sigma, sample_rate=0.125, steps=80, delta=1e-5)
    assert 8.0 - 0.05 <= eps <= 8.0
    assert epsilon(noise_multiplier=sigma * 0.95, sample_rate=0.125, steps=80, delta=1e-5) > 8.0


def test_ledger_composes_heterogeneous_history_like_opacus():
    from opacus.accountants import RDPAccountant

    ledger = PrivacyLedger(delta=1e-6)
    ledger.step(noise_multiplier=1.0, sample_rate=0.1, steps=5)
    ledger.step(noise_multiplier=1.0, sample_rate=0.1, steps=5)  # merged
    ledger.step(noise_multiplier=2.0, sample_rate=0.2, steps=7)
    assert ledger.history == [(1.0, 0.1, 10), (2.0, 0.2, 7)] and ledger.steps == 17
    acc = RDPAccountant()
    for _ in range(10):
        acc.step(noise_multiplier=1.0, sample_rate=0.1)
    for _ in range(7):
        acc.step(noise_multiplier=2.0, sample_rate=0.2)
    assert ledger.epsilon() == pytest.approx(acc.get_epsilon(delta=1e-6, alphas=RDP_ORDERS), rel=1e-12)
    again = PrivacyLedger.from_json(ledger.to_json(), delta=1e-6)
    assert again.epsilon() == ledger.epsilon()


@pytest.mark.parametrize("kwargs,field", [({"noise_multiplier": 0.0, "sample_rate": 0.1, "steps": 1}, "noise_multiplier"),
                                          ({"noise_multiplier": 1.0, "sample_rate": 1.5, "steps": 1}, "sample_rate")])
def test_bad_mechanism_is_named(kwargs, field):
    with pytest.raises(ValueError, match=field):
        epsilon(**kwargs, delta=1e-5)


class _Report:
    def __init__(self, r: int) -> None:
        self.round = r


def test_client_level_budget_stops_before_exceeding():
    z, q, budget = 1.5, 0.2, 3.0
    acc = ClientLevelAccountant(noise_multiplier=z, sample_rate=q, delta=1e-5, max_epsilon=budget)
    # independent: the largest T with ε(T) <= budget
    allowed = max(t for t in range(1, 200) if epsilon(noise_multiplier=z, sample_rate=q, steps=t, delta=1e-5) <= budget)
    rounds = 0
    with pytest.raises(StopFederation) as stop:
        for r in range(1, 200):
            rounds = r
            out = acc(_Report(r))
            assert out["privacy_client"]["epsilon"] <= budget
    assert rounds == allowed
    assert isinstance(stop.value, BudgetExhausted) and stop.value.metrics["privacy_client"]["epsilon"] <= budget
    assert acc.ledger.epsilon() == pytest.approx(epsilon(noise_multiplier=z, sample_rate=q, steps=allowed, delta=1e-5))


def test_client_level_budget_too_small_for_one_round_is_rejected():
    with pytest.raises(ValueError, match="max_epsilon"):
        ClientLevelAccountant(noise_multiplier=0.5, sample_rate=1.0, delta=1e-5, max_epsilon=0.1)


def test_client_level_accountant_checks_the_budget_before_a_round_and_resumes_its_spent_rounds():
    """The one implementation both client-level DP components (privacy.client, secure aggregation) delegate to."""
    from trustfl.errors import ConfigError, StopFederation

    z, q = 1.0, 0.5
    one = epsilon(noise_multiplier=z, sample_rate=q, steps=1, delta=1e-5)
    two = epsilon(noise_multiplier=z, sample_rate=q, steps=2, delta=1e-5)
    acc = ClientLevelAccountant(noise_multiplier=z, sample_rate=q, delta=1e-5, max_epsilon=(one + two) / 2)
    acc.check_budget(1, who="budget")  # one round fits
    acc.load_state_dict({"rounds_accounted": 1}, who="test")  # a resumed run that spent it
    assert acc.state_dict() == {"rounds_accounted": 1}
    assert acc.ledger.epsilon() == pytest.approx(one, rel=1e-9)
    with pytest.raises(StopFederation, match="budget: round 2 would raise epsilon"):
        acc.check_budget(2, who="budget")
    with pytest.raises(ConfigError, match="no test accountant state"):
        acc.load_state_dict({}, who="test")
