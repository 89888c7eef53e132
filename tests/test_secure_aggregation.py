"""Secure aggregation by MPC: real CrypTen parties (separate processes over gloo), one pool per module.

Fixed-point error bounds used below (p = 16 precision bits, K = 3 parties):
* plain secure sum of n clients with integer weights w: each entry is encoded with |error| < 2^-p
  (truncation) and the ring sum is exact, so |secure - float64 sum| < (sum_i w_i) 2^-p per entry;
* with norm bounding, clients share y = x / B (encoding error < 2^-p in units of B), the clip factor
  f_i is computed on shares with a relative error eps_f <= 2^-(p-4) (the quadratic's 6.4e-6 plus five
  truncations at 2^-p on values of order 1 and the constants' rounding, about 2^-p each) and shrunk by
  (1 - 2^-(p-4)) so that a clipped norm never exceeds B, and the product is revealed untruncated: per
  entry |secure - sum_i clip_B(x_i)| <= n * 4 * 2^-p * B + 2 * 2^-(p-4) * sum_i f_i |x_ij|.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustfl.defenses.dp.client_level import clip_rows
from trustfl.defenses.secure_aggregation import (MPCSecureAggregator, PartyPool, decode, share_update,
                                                 sum_error_bound)
from trustfl.errors import ConfigError, UpdateError

P = 16
ULP = 2.0 ** -P


@pytest.fixture(scope="module")
def pool():
    torch.set_num_threads(1)
    with PartyPool(parties=3, timeout=600) as p:
        yield p


def _rows(n: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) * scale).float()


def _clip_bound(x: torch.Tensor, b: float) -> torch.Tensor:
    """The derived per-entry bound of the norm-bounded secure sum (module docstring)."""
    clipped, _ = clip_rows(x.double(), b)
    return x.shape[0] * 4 * ULP * b + 2 * 2.0 ** -(P - 4) * clipped.abs().sum(0)


# ---------------------------------------------------------------------------------------------- the sum
def test_secure_sum_equals_plaintext_sum_within_the_fixed_point_bound(pool):
    agg = MPCSecureAggregator(pool=pool)
    for n, d in [(1, 1), (7, 513), (60, 20_000)]:
        x = _rows(n, d, seed=n, scale=0.05)
        out = agg.secure_sum(x)
        err = (out.total - x.double().sum(0)).abs().max()
        assert err < sum_error_bound(n, precision_bits=P), (n, d, float(err))
        assert out.client_ids == list(range(n)) and out.dropped == [] and out.weight_sum == n
    # integer weights (FedAvg's sample counts) are applied exactly in the ring
    x = _rows(5, 300, seed=9, scale=0.1)
    w = torch.tensor([1.0, 3.0, 10.0, 2.0, 7.0])
    out = agg.secure_sum(x, w)
    assert (out.total - w.double() @ x.double()).abs().max() < float(w.sum()) * ULP
    assert out.weight_sum == pytest.approx(23.0)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), d=st.integers(1, 700), scale=st.sampled_from([1e-4, 1e-2, 1.0, 30.0]),
       seed=st.integers(0, 2 ** 16))
def test_secure_sum_property(pool, n, d, scale, seed):
    x = _rows(n, d, seed=seed, scale=scale / math.sqrt(d))
    out = MPCSecureAggregator(pool=pool).secure_sum(x)
    assert (out.total - x.double().sum(0)).abs().max() < sum_error_bound(n, precision_bits=P)


# ---------------------------------------------------------------------------------------------- norm bounding
@pytest.mark.parametrize("bound", [0.01, 1.0, 50.0])
def test_norm_bounding_in_mpc_equals_plaintext_clipping(pool, bound):
    ratios = torch.tensor([1e-3, 0.5, 0.999, 1.001, 2.0, 3.9, 4.1, 17.0, 100.0, 1e3, 4e3])
    x = _rows(len(ratios), 300, seed=3).double()
    x = (x / x.norm(dim=1, keepdim=True) * (ratios * bound).unsqueeze(1).double()).float()
    agg = MPCSecureAggregator(pool=pool, norm_bound=bound)
    out = agg.secure_sum(x)
    reference = clip_rows(x.double(), bound)[0].sum(0)
    assert bool(((out.total - reference).abs() <= _clip_bound(x, bound)).all())
    # one client alone: its clipped update, to the same bound (the norm is B for every over-bound ratio)
    for i in [2, 3, 10]:
        alone = agg.secure_sum(x[i:i + 1]).total
        torch.testing.assert_close(alone, clip_rows(x[i:i + 1].double(), bound)[0][0], rtol=0,
                                   atol=float(_clip_bound(x[i:i + 1], bound).max()))


def test_norm_bounding_is_exact_at_every_range_reduction_bucket_edge(pool):
    """The clip factor is computed per bucket ``S in (2^(k/8), 2^((k+1)/8)]`` (norm ratios 2^(k/16)): updates
    just below and just above every edge (and at the pre-clip limit 2^R) are clipped as in plaintext."""
    from trustfl.defenses.secure_aggregation.mpc import BUCKETS_PER_OCTAVE, RANGE_STEPS

    edges = [2.0 ** (k / (2 * BUCKETS_PER_OCTAVE)) for k in range(2 * BUCKETS_PER_OCTAVE * RANGE_STEPS + 1)]
    ratios = torch.tensor([e * f for e in edges for f in (1 - 1e-6, 1 + 1e-6)] + [0.0, 1e-4, 0.5], dtype=torch.float64)
    x = _rows(len(ratios), 64, seed=17).double()
    x = (x / x.norm(dim=1, keepdim=True) * ratios.unsqueeze(1)).float()
    out = MPCSecureAggregator(pool=pool, norm_bound=1.0).secure_sum(x)
    reference = clip_rows(x.double(), 1.0)[0].sum(0)
    assert bool(((out.total - reference).abs() <= _clip_bound(x, 1.0)).all())


@pytest.mark.parametrize("bound", [0.05, 1.0, 7.0])
def test_a_clipped_update_never_exceeds_the_bound(pool, bound):
    """The DP noise is calibrated to sensitivity B: every client's clipped contribution has norm <= B, also
    where the clip factor's error is largest (just above each bucket edge). Each client writes its own 8
    coordinates, so one secure sum shows every client's contribution."""
    from trustfl.defenses.secure_aggregation.mpc import BUCKETS_PER_OCTAVE, RANGE_STEPS

    edges = [2.0 ** (k / (2 * BUCKETS_PER_OCTAVE)) for k in range(2 * BUCKETS_PER_OCTAVE * RANGE_STEPS + 1)]
    ratios = [e * f for e in edges for f in (1 + 1e-6, 1 + 0.03)] + [1.0 + 1e-4, 3.3, 29.0, 1e3]
    n, width = len(ratios), 8
    x = torch.zeros(n, n * width, dtype=torch.float64)
    rows = _rows(n, width, seed=23).double()
    for i, r in enumerate(ratios):
        x[i, i * width:(i + 1) * width] = rows[i] / rows[i].norm() * r * bound
    out = MPCSecureAggregator(pool=pool, norm_bound=bound).secure_sum(x.float())
    norms = out.total.view(n, width).norm(dim=1)
    assert bool((norms <= bound * (1 + 1e-9)).all()), float((norms / bound).max() - 1)
    assert bool((norms >= bound * (1 - 2 * 2.0 ** -(P - 4) - 4 * ULP)).all())  # and not clipped much harder


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), d=st.integers(1, 400), bound=st.sampled_from([0.02, 1.0, 30.0]),
       log_ratios=st.lists(st.floats(-3.0, 3.6), min_size=12, max_size=12), seed=st.integers(0, 2 ** 16))
def test_norm_bounding_property(pool, n, d, bound, log_ratios, seed):
    """Hypothesis: the in-MPC clip equals plaintext clipping within the stated bound, norms 1e-3 B .. 4e3 B."""
    ratios = torch.tensor(log_ratios[:n], dtype=torch.float64).exp2().mul(3.32)  # 2^(3.32 r) ~ 10^r
    x = _rows(n, d, seed=seed).double()
    x = (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) * (ratios * bound).unsqueeze(1)).float()
    out = MPCSecureAggregator(pool=pool, norm_bound=bound).secure_sum(x)
    reference = clip_rows(x.double(), bound)[0].sum(0)
    assert bool(((out.total - reference).abs() <= _clip_bound(x, bound)).all())


def test_norm_bound_zero_mode_drops_over_bound_updates(pool):
    x = _rows(4, 200, seed=5).double()
    x = (x / x.norm(dim=1, keepdim=True) * torch.tensor([0.5, 0.99, 1.01, 40.0]).unsqueeze(1).double()).float()
    out = MPCSecureAggregator(pool=pool, norm_bound=1.0, over_bound="zero").secure_sum(x)
    assert (out.total - x[:2].double().sum(0)).abs().max() < 4 * 2 * ULP


def test_huge_update_is_preclipped_by_the_client_and_bounded_in_mpc(pool):
    x = torch.zeros(2, 50)
    x[0, 0], x[1, 1] = 1e9, 0.5  # far beyond the fixed-point range: the client's loose pre-clip keeps it representable
    out = MPCSecureAggregator(pool=pool, norm_bound=1.0).secure_sum(x)
    assert out.total[0] == pytest.approx(1.0, abs=1e-3) and out.total[1] == pytest.approx(0.5, abs=1e-3)


# ---------------------------------------------------------------------------------------------- privacy of shares
def test_a_partys_shares_of_two_different_updates_are_indistinguishable():
    """Two-sample Kolmogorov-Smirnov test on what one party holds for two very different updates."""
    from scipy.stats import ks_2samp

    d = 20_000
    a = torch.zeros(d)
    b = torch.full((d,), 100.0)
    sa, sb = share_update(a, num_parties=3), share_update(b, num_parties=3)
    for party in range(3):  # key-expanded shares (0, 1) and the dense share (2)
        ua = sa.share(party).double() / 2.0 ** 64 + 0.5
        ub = sb.share(party).double() / 2.0 ** 64 + 0.5
        assert ks_2samp(ua.numpy(), ub.numpy()).pvalue > 1e-3, party
        assert ks_2samp(ua.numpy(), torch.rand(d, dtype=torch.float64).numpy()).pvalue > 1e-3  # uniform
    # and all K shares together reconstruct the encoding exactly
    assert torch.equal(decode(sum(sb.share(j) for j in range(3))), b.double())


def test_distributed_noise_has_the_calibrated_std_even_with_a_dropout(pool):
    """Each of m clients adds N(0, z^2 B^2 / m); the parties top up the variance a dropped client took away."""
    z, bound, d = 1.5, 0.5, 40_000
    agg = MPCSecureAggregator(pool=pool, norm_bound=bound, noise_multiplier=z)
    x = torch.zeros(4, d)
    out = agg.secure_sum(x)
    assert out.total.std().item() == pytest.approx(z * bound, rel=0.03)
    secure = agg.open_round(1, [0, 1, 2, 3], dim=d)
    for cid in range(3):
        secure.submit(cid, x[cid])
    shares, noise = secure.client_shares(3, x[3])
    secure.deliver(3, shares, noise, parties=[0])  # client 3 crashes after reaching one party
    out = secure.finish()
    assert out.client_ids == [0, 1, 2] and out.dropped == [3]
    assert out.revealed == {"secure_dropped": 1.0, "secure_norm_bound": bound, "secure_noise_std": z * bound}
    # 3/4 of the variance from the clients, plus K = 3 parties x 1/4 top-up: (3/4 + 3/4) z^2 B^2
    assert out.total.std().item() == pytest.approx(z * bound * math.sqrt(1.5), rel=0.03)


# ---------------------------------------------------------------------------------------------- dropouts
def test_a_dropped_client_is_excluded_and_the_sum_is_correct_for_the_others(pool):
    agg = MPCSecureAggregator(pool=pool, norm_bound=2.0)
    x = _rows(5, 400, seed=11, scale=0.2)
    secure = agg.open_round(7, [10, 11, 12, 13, 14], dim=400)
    for i, cid in enumerate([10, 11, 13]):
        secure.submit(cid, x[[0, 1, 3][i]])
    shares, _ = secure.client_shares(12, x[2])
    secure.deliver(12, shares, parties=[0, 2])  # never reaches party 1
    # client 14 never sends anything
    out = secure.finish()
    assert out.client_ids == [10, 11, 13] and out.dropped == [12, 14]
    kept = x[[0, 1, 3]]
    assert bool(((out.total - clip_rows(kept.double(), 2.0)[0].sum(0)).abs() <= _clip_bound(kept, 2.0)).all())
    # the pool serves the next round normally
    assert (agg.secure_sum(x[:2]).total - clip_rows(x[:2].double(), 2.0)[0].sum(0)).abs().max() < 1e-3


def test_no_client_arrives_gives_an_empty_result(pool):
    secure = MPCSecureAggregator(pool=pool).open_round(1, [0, 1], dim=10)
    out = secure.finish()
    assert out.total is None and out.client_ids == [] and out.dropped == [0, 1]


# ---------------------------------------------------------------------------------------------- anomaly bit
def test_cosine_anomaly_bit_matches_plaintext(pool):
    d = 300
    agg = MPCSecureAggregator(pool=pool, cosine_threshold=0.2)
    g0 = torch.zeros(d)
    direction = _rows(1, d, seed=1)[0]
    agg.open_round(0, [0], dim=d, global_vector=g0).finish()  # first round: no reference yet
    x = torch.stack([direction, -direction, direction + 0.1 * _rows(1, d, seed=2)[0], _rows(1, d, seed=3)[0],
                     0.5 * direction + _rows(1, d, seed=4)[0] * 0.2])
    secure = agg.open_round(1, list(range(5)), dim=d, global_vector=g0 + 0.01 * direction)
    for i in range(5):
        secure.submit(i, x[i] * 0.01)
    out = secure.finish()
    cos = torch.nn.functional.cosine_similarity(x.double(), direction.double().unsqueeze(0))
    assert out.anomalous == [i for i in range(5) if cos[i] < 0.2]
    assert out.anomalous == [1, 3]


# ---------------------------------------------------------------------------------------------- hostile input
def test_hostile_updates_and_settings_give_clear_errors(pool):
    agg = MPCSecureAggregator(pool=pool)
    secure = agg.open_round(1, [0, 1], dim=4)
    with pytest.raises(UpdateError, match="NaN/Inf"):
        secure.submit(0, torch.tensor([0.0, float("nan"), 0.0, 0.0]))
    with pytest.raises(UpdateError, match="NaN/Inf"):
        secure.submit(0, torch.tensor([0.0, float("inf"), 0.0, 0.0]))
    with pytest.raises(UpdateError, match="L2 norm"):
        secure.submit(0, torch.tensor([torch.finfo(torch.float32).max, 0.0, 0.0, 0.0]))
    with pytest.raises(UpdateError, match="expected \\(4,\\)"):
        secure.submit(0, torch.zeros(5))
    with pytest.raises(UpdateError, match="not sampled"):
        secure.submit(7, torch.zeros(4))
    with pytest.raises(UpdateError, match="weight"):
        secure.submit(1, torch.zeros(4), float("inf"))
    secure.finish()
    with pytest.raises(UpdateError, match="distinct"):
        agg.open_round(2, [1, 1], dim=4)
    with pytest.raises(UpdateError, match="distinct"):
        agg.open_round(2, [], dim=4)
    with pytest.raises(UpdateError, match="dim"):
        agg.open_round(2, [1], dim=0)
    with pytest.raises(UpdateError, match=r"\[n >= 1, d\]"):
        agg.secure_sum(torch.zeros(0, 3))
    with pytest.raises(ConfigError, match="noise_multiplier"):
        MPCSecureAggregator(pool=pool, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="norm_bound"):
        MPCSecureAggregator(pool=pool, norm_bound=float("nan"))
    with pytest.raises(ConfigError, match="parties"):
        PartyPool(parties=1)
    with pytest.raises(ConfigError, match="rendezvous"):
        PartyPool(rendezvous="udp://x")
    with pytest.raises(ValueError, match="at least 2"):
        share_update(torch.zeros(3), num_parties=1)


# ---------------------------------------------------------------------------------------------- in the loop
def _config(model_dir: str, **over):
    from trustfl.config import RunConfig

    data = {
        "name": "t", "seed": 0,
        "model": {"name": model_dir, "max_length": 24},
        "lora": {"r": 2, "top_layers": 2},
        "data": {"name": "sms_spam", "max_records": 240, "holdout_fraction": 0.1},
        "partition": {"num_clients": 4, "scheme": "dirichlet", "alpha": 1.0},
        "client": {"batch_size": 8, "max_steps": 2, "lr": 5e-3},
        "federation": {"rounds": 2, "save_client_updates": False},
    }
    for key, value in over.items():
        section, field = key.split("__")
        data.setdefault(section, {})[field] = value
    return RunConfig.from_dict(data)


def test_the_server_round_receives_no_plaintext_update(pool, tiny_bert_dir, tmp_path):
    from trustfl.federation import Federation
    from trustfl.rundir import RunDir

    cfg = _config(tiny_bert_dir)
    fed = Federation(cfg, out_dir=tmp_path / "s", secure_aggregation=MPCSecureAggregator(pool=pool), progress=False)
    fed.setup()
    views = []
    run_server = fed.server.run

    def spy(round, view, global_vector):
        views.append(view)
        return run_server(round, view, global_vector)

    fed.server.run = spy
    fed.run()
    assert len(views) == 2
    for r, view in enumerate(views, start=1):  # what the server round receives: a sum and ids, no ClientResult
        assert view.results == [] and view.secure and view.secure_sum.shape == (fed.layout.size,)
        assert view.client_ids == fed.sample_clients(r) and view.secure_weight > 0
    run = RunDir(tmp_path / "s")
    run.verify()
    assert run.client_ids(1) == [] and run.client_ids(2) == []  # no update stored
    for m in run.metrics():  # nor their norms or the clients' self-reported metrics
        assert "update_norms" not in m and "client_metrics" not in m
        assert m["aggregation"]["stats"]["secure_dropped"] == 0.0  # the round's public facts reach the metrics
    plain = Federation(cfg, out_dir=tmp_path / "p", progress=False)
    plain.run()
    # weighted FedAvg with integer sample counts: the mean is within 2^-p of the plaintext mean per entry
    torch.testing.assert_close(run.global_vector(1), RunDir(tmp_path / "p").global_vector(1), rtol=0, atol=2 * ULP)


def test_dp_inside_mpc_accounts_client_level_epsilon_and_checks_the_budget_first(pool, tiny_bert_dir, tmp_path):
    import dp_accounting

    from trustfl.defenses.secure_aggregation import SecureAggregation, SecureAggregationSettings
    from trustfl.federation import Federation
    from trustfl.rundir import RunDir

    z, q = 1.2, 3 / 4
    cfg = _config(tiny_bert_dir, federation__sampling="poisson", federation__clients_per_round=3,
                  federation__rounds=3, server__aggregator="fedavg", server__aggregator_options={"weighted": False})
    one_round = dp_accounting.rdp.RdpAccountant()
    one_round.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), 1)
    two = dp_accounting.rdp.RdpAccountant()
    two.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), 2)
    eps1, eps2 = one_round.get_epsilon(1e-5), two.get_epsilon(1e-5)
    budget = (eps1 + eps2) / 2  # affords one round, not two

    def component():
        settings = SecureAggregationSettings(enabled=True, norm_bound=0.5, noise_multiplier=z, max_epsilon=budget)
        agg = MPCSecureAggregator(pool=pool, norm_bound=0.5, noise_multiplier=z)
        return SecureAggregation(settings, aggregator=agg)

    summary = Federation(cfg, out_dir=tmp_path / "dp", components=[component()], progress=False).run()
    assert summary.rounds_completed == 1 and summary.stopped_reason
    run = RunDir(tmp_path / "dp")
    privacy = run.manifest["extra"]["privacy"]["client"]
    assert privacy["rounds"] == 1 and privacy["sample_rate"] == q
    assert privacy["epsilon"] == pytest.approx(eps1, rel=0.01)  # Google's dp-accounting, independent
    stats = run.metrics()[0]["aggregation"]["stats"]
    assert stats["dp_clip_norm"] == 0.5 and stats["dp_denominator"] == 3.0 and stats["dp_noise_in_mpc"] == 1.0
    # resumed: the budget is checked before round 2 spends anything
    again = Federation(cfg, out_dir=tmp_path / "dp", components=[component()], resume=True, progress=False).run()
    assert again.rounds_completed == 1 and RunDir(tmp_path / "dp").completed_rounds == 1


@pytest.mark.parametrize("over, match", [
    ({"server__aggregator": "geometric_median"}, "individual updates"),
    ({"server__aggregator": "median"}, "individual updates"),
    ({"federation__save_client_updates": True}, "save_client_updates"),
    ({"secure_aggregation__noise_multiplier": 1.0, "secure_aggregation__norm_bound": 1.0}, "weighted"),
    ({"secure_aggregation__noise_multiplier": 1.0}, "norm_bound"),
    ({"secure_aggregation__parties": 1}, "parties"),
    ({"secure_aggregation__rendezvous": "udp://h:1"}, "rendezvous"),
    ({"secure_aggregation__precision_bits": 40}, "precision_bits"),
    ({"secure_aggregation__norm_bound": float("inf")}, "norm_bound"),
    ({"secure_aggregation__cosine_threshold": 2.0}, "cosine_threshold"),
    ({"secure_aggregation__cosine_threshold": 0.1, "secure_aggregation__noise_multiplier": 1.0,
      "secure_aggregation__norm_bound": 1.0}, "outside the Gaussian mechanism"),
    ({"secure_aggregation__max_epsilon": 1.0}, "max_epsilon"),
    ({"secure_aggregation__launch": "external"}, "set port"),
    ({"secure_aggregation__launch": "external", "secure_aggregation__port": 29511}, "rendezvous"),
    ({"secure_aggregation__port": 70000}, "secure_aggregation.port"),
])
def test_secure_aggregation_config_refusals(tiny_bert_dir, over, match):
    """Refused at load, before any party starts: never a plaintext fallback."""
    with pytest.raises(ConfigError, match=match):
        _config(tiny_bert_dir, secure_aggregation__enabled=True, **over)


def test_dp_noise_needs_poisson_sampling(tiny_bert_dir):
    with pytest.raises(ConfigError, match="poisson"):
        _config(tiny_bert_dir, secure_aggregation__enabled=True, secure_aggregation__norm_bound=1.0,
                secure_aggregation__noise_multiplier=1.0, server__aggregator="fedavg",
                server__aggregator_options={"weighted": False})


def test_a_malformed_share_excludes_only_that_client(pool):
    from trustfl.defenses.secure_aggregation import ClientShares

    agg = MPCSecureAggregator(pool=pool)
    x = _rows(3, 50, seed=21, scale=0.1)
    secure = agg.open_round(3, [0, 1, 2], dim=50)
    secure.submit(0, x[0])
    secure.submit(1, x[1])
    good = share_update(x[2], num_parties=3)
    secure.deliver(2, ClientShares(keys=good.keys, last=torch.zeros(7, dtype=torch.int64)))  # wrong length
    out = secure.finish()
    assert out.client_ids == [0, 1] and out.dropped == [2]
    assert (out.total - x[:2].double().sum(0)).abs().max() < sum_error_bound(2)
    # client side: a malformed share key is refused before anything is sent
    secure = agg.open_round(4, [0, 1], dim=50)
    with pytest.raises(UpdateError, match="32-byte"):
        secure.deliver(1, ClientShares(keys=[good.keys[0][:31], good.keys[1]], last=good.last))
    secure.finish()
    # party side: a key of the wrong length or type reaching a party (a hostile client) excludes that client
    for bad_key in (good.keys[0][:31], good.keys[0] + b"\0", 12345, "k" * 32):
        secure = agg.open_round(5, [0, 1], dim=50)
        secure.submit(0, x[0])
        secure.deliver(1, good, parties=[1, 2])
        agg.pool.send(0, ("share", 1, "x", bad_key), what="test")
        out = secure.finish()
        assert out.client_ids == [0] and out.dropped == [1], bad_key
        assert (out.total - x[0].double()).abs().max() < sum_error_bound(1)


def test_library_aggregator_refuses_what_the_config_refuses():
    """MPCSecureAggregator validates through the config section's settings (one mechanism), before any party."""
    with pytest.raises(ConfigError, match="outside the Gaussian mechanism"):
        MPCSecureAggregator(norm_bound=1.0, noise_multiplier=1.0, cosine_threshold=0.1)
    with pytest.raises(ConfigError, match="norm_bound"):
        MPCSecureAggregator(noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="precision_bits"):
        MPCSecureAggregator(precision_bits=40)


def test_anomaly_bits_are_recorded_or_said_missing(pool, tiny_bert_dir, tmp_path):
    """Round 1 has no previous global step to compare with: the metrics say so instead of omitting the bits."""
    from trustfl.defenses.secure_aggregation import SecureAggregation, SecureAggregationSettings
    from trustfl.federation import Federation
    from trustfl.rundir import RunDir

    settings = SecureAggregationSettings(enabled=True, cosine_threshold=0.0)
    comp = SecureAggregation(settings, aggregator=MPCSecureAggregator(pool=pool, cosine_threshold=0.0))
    Federation(_config(tiny_bert_dir), out_dir=tmp_path / "a", components=[comp], progress=False).run()
    first, second = (m["secure_aggregation"] for m in RunDir(tmp_path / "a").metrics())
    assert first["anomalous"] is None and "no previous global step" in first["anomalous_not_computed"]
    assert isinstance(second["anomalous"], list) and set(second["anomalous"]) <= set(second["included"])
