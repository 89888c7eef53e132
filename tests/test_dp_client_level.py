"""Client-level DP-FedAvg stages: clipping, noise calibration (statistical), adaptive C, shares."""

from __future__ import annotations

import math

import pytest
import torch

from trustfl.defenses import FedAvg, Pipeline, build_pipeline
from trustfl.defenses.dp import ClientClip, GaussianNoise, clip_rows, noise_share, update_noise_multiplier


def test_clip_rows_matches_per_row_reference_and_does_not_mutate():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 11, generator=g) * torch.tensor([0.1, 1, 3, 0.5, 10, 0.01, 2]).unsqueeze(1)
    before = x.clone()
    out, norms = clip_rows(x, 1.0)
    assert torch.equal(x, before)
    for i in range(7):
        n = float(torch.linalg.vector_norm(x[i]))
        ref = x[i] * min(1.0, 1.0 / n)
        torch.testing.assert_close(out[i], ref)
        assert norms[i].item() == pytest.approx(n, rel=1e-6)


def test_noise_std_is_z_c_over_m_statistically():
    z, c, m, d = 1.3, 0.5, 5, 20_000
    pipe = Pipeline(pre=[ClientClip(clip_norm=c)], aggregator=FedAvg(weighted=False),
                    post=[GaussianNoise(noise_multiplier=z)])
    updates = torch.zeros(m, d)
    agg = pipe(updates, torch.ones(m), generator=torch.Generator().manual_seed(1))
    std = float(agg.vector.double().std())
    expected = z * c / m
    # sample std of d normals: relative sd ≈ 1/sqrt(2d) ≈ 0.5 %; allow 5 sigma
    assert abs(std / expected - 1) < 5 / math.sqrt(2 * d)
    assert agg.info.stats["dp_noise_std"] == pytest.approx(expected)


def test_mean_of_clipped_updates_is_what_gets_noised():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.1], [6.0, 8.0]])
    pipe = build_pipeline(aggregator="fedavg", aggregator_options={"weighted": False},
                          pre=[{"name": "dp_clip", "clip_norm": 1.0}], post=[{"name": "dp_fedavg", "noise_multiplier": 1e-9}])
    agg = pipe(x, torch.tensor([1.0, 5.0, 9.0]), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(agg.vector, torch.tensor([0.6 + 0 + 0.6, 0.8 + 0.1 + 0.8]) / 3, atol=1e-6, rtol=0)
    assert agg.info.clipped.tolist() == [True, False, True]


def test_noise_without_clipping_or_with_unequal_weights_fails_loudly():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="dp_clip"):
        Pipeline(aggregator=FedAvg(weighted=False), post=[GaussianNoise(noise_multiplier=1.0)])(x)
    with pytest.raises(ValueError, match="weighted = false"):
        Pipeline(pre=[ClientClip(clip_norm=1.0)], aggregator=FedAvg(),
                 post=[GaussianNoise(noise_multiplier=1.0)])(x, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="noise_multiplier"):
        GaussianNoise(noise_multiplier=0.0)


def test_adaptive_clipping_follows_andrew_et_al_update():
    c0, eta, gamma, sb = 1.0, 0.2, 0.5, 0.25
    stage = ClientClip(clip_norm=c0, adaptive=True, target_quantile=gamma, clip_lr=eta, count_noise_std=sb)
    x = torch.tensor([[0.5, 0.0], [2.0, 0.0], [3.0, 0.0], [0.1, 0.0]])  # 2 of 4 under C
    _, _, info = stage(x, generator=torch.Generator().manual_seed(7))
    noise = float(torch.randn((), generator=torch.Generator().manual_seed(7), dtype=torch.float64)) * sb
    b = (2 + noise) / 4
    assert info.stats["dp_noisy_unclipped_fraction"] == pytest.approx(b)
    assert stage.current_clip_norm == pytest.approx(c0 * math.exp(-eta * (b - gamma)))
    other = ClientClip(clip_norm=5.0, adaptive=True, count_noise_std=sb)
    other.load_state_dict(stage.state_dict())
    assert other.current_clip_norm == stage.current_clip_norm
    # all updates tiny -> C shrinks over rounds towards the median norm
    small = torch.full((20, 3), 1e-3)
    st = ClientClip(clip_norm=1.0, adaptive=True, count_noise_std=1.0)
    for r in range(30):
        st(small, generator=torch.Generator().manual_seed(r))
    assert st.current_clip_norm < 0.05


def test_update_noise_multiplier_composes_back_to_z():
    z, sb = 1.0, 2.5
    zd = update_noise_multiplier(z, sb)
    assert (zd ** -2 + (2 * sb) ** -2) ** -0.5 == pytest.approx(z)
    assert zd > z
    with pytest.raises(ValueError, match="count_noise_std"):
        update_noise_multiplier(1.0, 0.4)


def test_noise_shares_sum_to_central_noise_statistically():
    z, c, k, d = 0.8, 2.0, 10, 20_000
    g = torch.Generator().manual_seed(3)
    total = sum(noise_share((d,), noise_multiplier=z, clip_norm=c, num_shares=k, generator=g).double()
                for _ in range(k))
    assert abs(float(total.std()) / (z * c) - 1) < 5 / math.sqrt(2 * d)


def test_dp_stages_keep_input_and_state_roundtrip_through_pipeline():
    pipe = build_pipeline(aggregator="fedavg", aggregator_options={"weighted": False},
                          pre=[{"name": "dp_clip", "clip_norm": 0.5, "adaptive": True, "count_noise_std": 1.0}],
                          post=[{"name": "dp_fedavg", "noise_multiplier": 1.0}])
    x = torch.randn(4, 6)
    before = x.clone()
    pipe(x, None, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    state = pipe.state_dict()
    assert state and all(k.startswith("0.") for k in state)
    fresh = build_pipeline(aggregator="fedavg", aggregator_options={"weighted": False},
                           pre=[{"name": "dp_clip", "clip_norm": 0.5, "adaptive": True, "count_noise_std": 1.0}],
                           post=[{"name": "dp_fedavg", "noise_multiplier": 1.0}])
    fresh.load_state_dict(state)
    assert fresh.pre[0].current_clip_norm == pipe.pre[0].current_clip_norm
