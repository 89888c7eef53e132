"""The aggregation contract: FedAvg against a numpy reference, per-client rejection, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trustfl.defenses import (AggregateInfo, FedAvg, Pipeline, available_aggregators, make_aggregator,
                              register_aggregator)
from trustfl.errors import UpdateError
from trustfl.types import PreStage


def _numpy_fedavg(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """McMahan et al. 2017: sum_k (n_k / n) w_k, written out row by row."""
    total = np.zeros(u.shape[1])
    for row, weight in zip(u, w):
        total += (weight / w.sum()) * row
    return total


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 40), st.integers(0, 10_000))
def test_fedavg_matches_reference_and_is_permutation_invariant(n, d, seed):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.integers(1, 100, size=n).astype(np.float64)
    got = FedAvg()(torch.from_numpy(u), torch.from_numpy(w)).vector.numpy()
    np.testing.assert_allclose(got, _numpy_fedavg(u.astype(np.float64), w), rtol=1e-5, atol=1e-5)
    perm = rng.permutation(n)
    got_perm = FedAvg()(torch.from_numpy(u[perm]), torch.from_numpy(w[perm])).vector.numpy()
    np.testing.assert_allclose(got_perm, got, rtol=1e-5, atol=1e-6)
    unweighted = FedAvg(weighted=False)(torch.from_numpy(u), torch.from_numpy(w)).vector.numpy()
    np.testing.assert_allclose(unweighted, u.mean(0), rtol=1e-5, atol=1e-6)


def test_fedavg_does_not_mutate_input():
    u = torch.randn(4, 7)
    copy = u.clone()
    FedAvg()(u, torch.ones(4))
    assert torch.equal(u, copy)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 10), st.data())
def test_pipeline_rejects_nonfinite_rows_per_client(n, data):
    bad = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1, unique=True))
    value = data.draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    u = torch.randn(n, 5)
    u[bad, data.draw(st.integers(0, 4))] = value
    agg = Pipeline()(u, torch.ones(n))
    good = [i for i in range(n) if i not in bad]
    torch.testing.assert_close(agg.vector, u[good].mean(0))
    assert agg.info.accepted.tolist() == [i in good for i in range(n)]
    assert all("non-finite" in agg.info.reasons[i] for i in bad)
    assert torch.isfinite(agg.vector).all()


def test_pipeline_errors_are_clear():
    with pytest.raises(UpdateError, match=r"shape \[n, d\]"):
        Pipeline()(torch.zeros(3))
    with pytest.raises(UpdateError, match="all 2 client updates"):
        Pipeline()(torch.full((2, 3), float("nan")))
    with pytest.raises(UpdateError, match="expected 2 entries"):
        Pipeline()(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(UpdateError, match=">= 0"):
        FedAvg()(torch.zeros(2, 3), torch.tensor([1.0, -1.0]))
    with pytest.raises(UpdateError, match="floating"):
        FedAvg()(torch.zeros(2, 3, dtype=torch.long))


class _HalveNorm(PreStage):
    """A toy pre-aggregator used to test composition: scales every row by 1/2 and marks it clipped."""

    def __call__(self, updates, weights=None, *, generator=None, client_ids=None):
        info = AggregateInfo.all_accepted(updates.shape[0])
        info.clipped[:] = True
        info.reasons = ["halved"] * updates.shape[0]
        return updates * 0.5, weights, info


def test_pipeline_composes_pre_stage_and_maps_info_back():
    u = torch.tensor([[2.0, 2.0], [float("nan"), 1.0], [4.0, 4.0]])
    agg = Pipeline(pre=[_HalveNorm()], aggregator=FedAvg(weighted=False))(u)
    torch.testing.assert_close(agg.vector, torch.tensor([1.5, 1.5]))
    assert agg.info.clipped.tolist() == [True, False, True]
    assert agg.info.reasons[0] == "halved" and "non-finite" in agg.info.reasons[1]
    assert Pipeline(pre=[_HalveNorm()]).requires_individual_updates
    assert not Pipeline().requires_individual_updates


def test_registry():
    assert "fedavg" in available_aggregators()
    assert isinstance(make_aggregator("FedAvg", weighted=False), FedAvg)
    with pytest.raises(ValueError, match=r"unknown aggregator 'krumm'; valid names: \[.*'fedavg'"):
        make_aggregator("krumm")
    with pytest.raises(ValueError, match="already registered"):
        register_aggregator("fedavg", FedAvg)
    with pytest.raises(ValueError, match="bad options"):
        make_aggregator("fedavg", wieghted=False)


def test_star_imports():
    import trustfl.attacks
    import trustfl.audits
    import trustfl.defenses
    import trustfl.federation
    import trustfl.models

    for module in (trustfl.defenses, trustfl.federation, trustfl.models, trustfl.attacks, trustfl.audits):
        assert list(module.__all__) == sorted(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
