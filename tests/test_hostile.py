"""Hostile updates against every registered aggregator, pre-stage and a few pipelines.

The per-stage hostile-input contract (NaN / +-Inf / 1e30 / float32-max rows, wrong shapes, n = 0..2,
float16 / bfloat16 / float64: a clear error or a finite result in the input dtype) lives in
``tests/test_contracts.py`` (``test_hostile_input_gives_a_clear_error_or_a_finite_result``). This file
adds what that contract cannot say on its own:

* the same hostile rows through pipelines (``norm_clip+nnm+krum``, ``norm_clip+fedavg``, ...) and with
  an inflated claimed sample count (weight 1e12 on one row);
* exactness where float32 overflows (every row near the float32 maximum: Bulyan, trimmed mean,
  median, ... return the representable true aggregate, computed in float64 as the reference);
* half precision: results in the input dtype, close to the float64 result;
* FoolsGold's bound against one unbounded client (it used to let a 1e30 row through);
* the bound on how far one row can move each aggregate, as docs/defenses.md states it, checked
  numerically against attackers from 1000x the honest norm to the float32 maximum;
* issue 16: a median ``norm_clip`` in front of a distance-based selector hides an outlier whose only
  anomaly is its norm (measured over seeds), and the clip reason keeps the original norm.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustfl.defenses import (FLAME, NNM, Bulyan, CenteredClipping, CoordinateMedian, DnC, FedAvg, FLTrust,
                              FoolsGold, GeometricMedian, Krum, MultiKrum, NormClip, Pipeline, TrimmedMean,
                              available_stages, make_stage)
from trustfl.errors import ToleranceError, TrustFLError, UpdateError

N, D = 9, 10
F32_MAX = torch.finfo(torch.float32).max
AGG = {"fedavg": {"weighted": False}, "median": {}, "trimmed_mean": {"f": 1}, "krum": {"f": 1},
       "multi_krum": {"f": 1}, "bulyan": {"f": 1}, "geometric_median": {}, "centered_clipping": {"tau": 1.0},
       "dnc": {"f": 1}, "fltrust": {}, "flame": {"noise_lambda": 0.0}, "foolsgold": {}}
PRE = {"norm_clip": {"max_norm": "median"}, "nnm": {"f": 1}, "bucketing": {"s": 2}, "dp_clip": {"clip_norm": 1.0}}
PIPES = {
    "norm_clip+nnm+krum": ([("norm_clip", {"max_norm": "median"}), ("nnm", {"f": 1})], ("krum", {"f": 1})),
    "norm_clip+fedavg": ([("norm_clip", {"max_norm": "median"})], ("fedavg", {})),
    "nnm+norm_clip+multi_krum": ([("nnm", {"f": 1}), ("norm_clip", {"max_norm": "median"})], ("multi_krum", {"f": 1})),
    "bucketing+median": ([("bucketing", {"s": 2})], ("median", {})),
    "fedavg": ([], ("fedavg", {})),
}


def _honest(seed=0, n=N - 1, d=D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).float() * 0.1 + 0.05


def _agg(name, d=D):
    stage = make_stage("aggregator", name, **AGG[name])
    if isinstance(stage, FLTrust):
        stage.set_server_update(torch.full((d,), 0.05))
    return stage


def _run(stage, x, w=None):
    return stage(x, w, generator=torch.Generator().manual_seed(0), client_ids=list(range(100, 100 + x.shape[0])))


def _attackers(h):
    """One hostile row each: 1e30, the float32 maximum, 1000x an honest row, -1000x the honest mean."""
    return {"1e30": torch.full((h.shape[1],), 1e30), "float32_max": torch.full((h.shape[1],), F32_MAX),
            "-float32_max": torch.full((h.shape[1],), -F32_MAX), "1000x_honest": h[0] * 1000,
            "-1000x_mean": -1000 * h.mean(0)}


def test_every_registered_stage_is_covered():
    assert set(available_stages("aggregator")) == set(AGG)
    assert set(available_stages("pre")) == set(PRE)


# ------------------------------------------------------------------------------------------- pipelines
ROWS = {"nan": float("nan"), "+inf": float("inf"), "-inf": -float("inf"), "1e30": 1e30, "float32_max": F32_MAX}


@pytest.mark.parametrize("row", sorted(ROWS))
@pytest.mark.parametrize("pipe", sorted(PIPES))
def test_pipelines_never_release_nan_or_inf(pipe, row):
    pre, (agg, opts) = PIPES[pipe]
    pipeline = Pipeline(pre=[make_stage("pre", p, **o) for p, o in pre], aggregator=make_stage("aggregator", agg, **opts))
    x = torch.cat([torch.full((1, D), ROWS[row]), _honest(1)])
    try:
        out = _run(pipeline, x)
    except (TrustFLError, ValueError) as exc:  # FedAvg alone: a 1e30 mean is finite, float32 max is refused
        assert "fedavg" in pipe and "norm_clip" not in pipe and len(str(exc)) > 20
        return
    assert torch.isfinite(out.vector).all()
    if row in ("nan", "+inf", "-inf"):
        assert not out.info.accepted[0] and "non-finite" in out.info.reasons[0]
    if "norm_clip" in pipe:  # the clip bounds every row by the median norm, whatever the attacker sends
        assert float(out.vector.double().norm()) <= float(_honest(1).double().norm(dim=1).max()) * (1 + 1e-5)


@pytest.mark.parametrize("pipe", sorted(PIPES))
@pytest.mark.parametrize("n", [0, 1, 2])
def test_pipelines_with_zero_one_or_two_clients(pipe, n):
    pre, (agg, opts) = PIPES[pipe]
    pipeline = Pipeline(pre=[make_stage("pre", p, **o) for p, o in pre], aggregator=make_stage("aggregator", agg, **opts))
    try:
        out = _run(pipeline, _honest(2, n=n))
    except (UpdateError, ToleranceError) as exc:
        assert n == 0 or isinstance(exc, ToleranceError), exc
        return
    assert out.vector.shape == (D,) and torch.isfinite(out.vector).all()


def test_fedavg_called_directly_refuses_nan_and_inf():  # issue 10 item 7
    for value in (float("nan"), float("inf"), -float("inf")):
        x = _honest(3)
        x[2, 4] = value
        with pytest.raises(UpdateError, match=r"rows \[2\] contain NaN/Inf"):
            FedAvg()(x)
        with pytest.raises(UpdateError, match="NaN/Inf"):
            FedAvg(weighted=False)(x, torch.ones(x.shape[0]))


# ------------------------------------------------------------------------------------------- inflated weights
@pytest.mark.parametrize("name", sorted(AGG))
def test_inflated_sample_count_moves_only_the_aggregators_that_use_weights(name):
    h = _honest(4)
    x = torch.cat([torch.full((1, D), 5.0), h])
    w = torch.ones(N)
    w[0] = 1e12  # one client claims a trillion samples
    plain, inflated = _run(_agg(name), x, torch.ones(N)), _run(_agg(name), x, w)
    assert torch.isfinite(inflated.vector).all()
    torch.testing.assert_close(inflated.vector, plain.vector)  # every registered aggregator ignores claimed counts
    # ... except weighted FedAvg / GeometricMedian(weighted=True), where the claim is the documented lever:
    share = 1e12 / (1e12 + N - 1)
    weighted = FedAvg()(x, w).vector.double()
    moved = float((weighted - FedAvg()(torch.cat([torch.zeros(1, D), h]), w).vector.double()).norm())
    assert moved == pytest.approx(share * float(x[0].double().norm()), rel=1e-5)  # w_j / sum(w) * ||x_j||
    gm = GeometricMedian(weighted=True)(x, w).vector
    assert float((gm - x[0]).norm()) < 1e-3  # a claimed majority of the weight takes the geometric median over


# ------------------------------------------------------------------------------------------- near float32 max
@pytest.mark.parametrize("name", ["median", "trimmed_mean", "bulyan", "multi_krum", "geometric_median", "dnc",
                                  "fedavg", "krum"])
def test_rows_near_float32_max_give_the_true_aggregate(name):  # issue 10 item 8
    g = torch.Generator().manual_seed(5)
    x = (F32_MAX * (0.9 + 0.1 * torch.rand(N, D, generator=g, dtype=torch.float64))).float()  # every row huge
    x[:, ::2] *= -1
    out = _run(_agg(name), x)
    assert torch.isfinite(out.vector).all() and out.vector.dtype == torch.float32
    ref = _run(_agg(name), x.double()).vector  # the same rule in float64, where nothing overflows
    torch.testing.assert_close(out.vector.double(), ref, rtol=1e-5, atol=0.0)


def test_trimmed_mean_and_bulyan_overflow_only_when_the_true_result_does():
    rows = torch.full((N, D), F32_MAX)
    for agg in (TrimmedMean(f=1), Bulyan(f=1), CoordinateMedian()):
        torch.testing.assert_close(agg(rows).vector, rows[0])  # the mean of equal maxima is the maximum
    torch.testing.assert_close(CoordinateMedian()(rows[1:]).vector, rows[0])  # even n: the midpoint of two maxima
    ref = TrimmedMean(f=1)(torch.full((N, D), 3e38, dtype=torch.float64)).vector
    assert float(ref[0]) == pytest.approx(3e38)


# ------------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", sorted(AGG))
def test_any_float_dtype_in_the_input_dtype_out(name, dtype):  # issue 10 item 9
    x = _honest(6, n=N)
    out = _run(_agg(name), x.to(dtype))
    ref = _run(_agg(name), x.double()).vector
    assert out.vector.dtype == dtype and torch.isfinite(out.vector).all()
    tol = {torch.float16: 2e-2, torch.bfloat16: 6e-2, torch.float64: 1e-6}[dtype]  # input rounding only
    assert float((out.vector.double() - ref).abs().max()) <= tol * float(x.abs().max()), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", sorted(PRE))
def test_pre_stages_keep_the_input_dtype(name, dtype):
    rows, _, _ = make_stage("pre", name, **PRE[name])(_honest(7, n=N).to(dtype), generator=torch.Generator().manual_seed(0))
    assert rows.dtype == dtype and torch.isfinite(rows).all()


# ------------------------------------------------------------------------------------------- FoolsGold (item 6)
@pytest.mark.parametrize("attack", ["1e30", "float32_max", "1000x_honest"])
def test_foolsgold_bounds_one_unbounded_client(attack):
    h = _honest(8)
    x = torch.cat([_attackers(h)[attack][None], h])
    out = FoolsGold()(x, client_ids=list(range(N)))
    tau = out.info.stats["clip_norm"]
    assert tau <= float(h.double().norm(dim=1).max())  # median norm: set by the honest majority
    assert float(out.vector.double().norm()) <= tau * (1 + 1e-6)  # ||aggregate|| <= tau (docs/defenses.md)
    assert float(out.vector.double().norm()) < 2 * float(h.double().mean(0).norm())  # was 5e28 / 24.7 before
    assert bool(out.info.clipped[0]) and "clipped from" in out.info.reasons[0]
    # the attacker's own contribution is at most tau * alpha_j / sum(alpha)
    alpha = out.info.scores["foolsgold_weight"]
    clipped = x.double() * (tau / x.double().norm(dim=1)).clamp(max=1.0)[:, None]
    without = (alpha[1:, None] * clipped[1:]).sum(0) / alpha.sum()
    assert float((out.vector.double() - without).norm()) <= tau * float(alpha[0] / alpha.sum()) + 1e-6 * tau
    history = FoolsGold()
    for _ in range(3):  # histories sum clipped updates: bounded state, no overflow over rounds
        history(x, client_ids=list(range(N)))
    assert all(torch.isfinite(v).all() for v in history.history.values())


def test_foolsgold_tolerance_follows_the_clip_norm():
    with pytest.raises(ToleranceError, match="2f < n"):
        FoolsGold().check_tolerance(10, 5)
    FoolsGold(clip_norm=1.0).check_tolerance(10, 9)  # a fixed clip bounds any number of attackers
    with pytest.raises(ValueError, match="clip_norm"):
        FoolsGold(clip_norm="mean")


# ------------------------------------------------------------------------------------------- documented bounds
def _sorted_others(h):
    return np.sort(h.double().numpy(), axis=0)


@pytest.mark.parametrize("attack", ["1e30", "float32_max", "-float32_max", "1000x_honest", "-1000x_mean"])
def test_documented_bound_on_how_far_one_row_moves_each_aggregate(attack):
    """The bounds of docs/defenses.md ("how far one row moves it"), with one hostile row among N."""
    h = _honest(9)
    a = _attackers(h)[attack]
    x = torch.cat([a[None], h])
    y = _sorted_others(h)  # the other n - 1 values of every coordinate, sorted
    n = N

    # fedavg(weighted=False): exactly ||x_j - x'_j|| / n against any replacement x'_j (here 0)
    moved = (FedAvg(weighted=False)(x).vector.double() - FedAvg(weighted=False)(torch.cat([torch.zeros(1, D), h])).vector.double())
    assert float(moved.norm()) == pytest.approx(float(a.double().norm()) / n, rel=1e-5)

    # median: every coordinate between the neighbouring order statistics of the other n - 1 values
    lo, hi = (n - 1) // 2, n // 2
    med = CoordinateMedian()(x).vector.double().numpy()
    assert np.all(med >= y[lo - 1] - 1e-7) and np.all(med <= y[hi] + 1e-7)

    # trimmed mean (f = 1): every coordinate between the trimmed means with the row at -inf and at +inf
    f = 1
    tm = TrimmedMean(f=f)(x).vector.double().numpy()
    assert np.all(tm >= y[f - 1:n - f - 1].mean(0) - 1e-7) and np.all(tm <= y[f:n - f].mean(0) + 1e-7)

    # krum: an input row; a far row is never chosen, so it moves the result by 0
    k = Krum(f=1)(x)
    assert not k.info.accepted[0]
    torch.testing.assert_close(k.vector, Krum(f=1)(torch.cat([torch.full((1, D), 1e6), h])).vector, rtol=0, atol=0)
    assert float(min((k.vector - r).norm() for r in h)) ** 2 <= float(k.info.scores["krum_score"].min()) + 1e-9

    # multi_krum: a far row is not kept: 0
    mk = MultiKrum(f=1)(x)
    assert not mk.info.accepted[0]
    torch.testing.assert_close(mk.vector, MultiKrum(f=1)(torch.cat([torch.full((1, D), -1e6), h])).vector, rtol=0, atol=0)

    # bulyan (n >= 4f + 3): every coordinate within the honest values' range
    b = Bulyan(f=1)(x).vector.double().numpy()
    assert np.all(b >= y[0] - 1e-7) and np.all(b <= y[-1] + 1e-7)

    # geometric median: ||GM - c|| <= C r with c the honest mean, r the largest honest distance to c,
    # C = (1 - 1/n) / sqrt(1 - 2/n) (Minsker 2015, Lemma 2.1 with alpha = 1/n; smoothed Weiszfeld: +1e-3 r)
    c = h.double().mean(0)
    r = float((h.double() - c).norm(dim=1).max())
    gm = GeometricMedian(tol=1e-9, max_iter=1000)(x).vector.double()
    assert float((gm - c).norm()) <= ((1 - 1 / n) / math.sqrt(1 - 2 / n) + 1e-3) * r

    # centered clipping: at most 2 L tau / n against any replacement of the row (each iteration is 1-Lipschitz)
    for iters in (1, 3):
        tau = 0.2
        got = CenteredClipping(tau=tau, iters=iters)(x).vector.double()
        other = CenteredClipping(tau=tau, iters=iters)(torch.cat([h[:1], h])).vector.double()
        assert float((got - other).norm()) <= 2 * iters * tau / n * (1 + 1e-5)

    # dnc (all coordinates, d <= sub_dim): the far row is removed, so it moves the mean of the kept rows by 0
    dnc = DnC(f=1)(x)
    assert not dnc.info.accepted[0]
    torch.testing.assert_close(dnc.vector, DnC(f=1)(torch.cat([torch.full((1, D), 1e6), h])).vector)

    # fltrust: every row is rescaled to ||g0||: ||aggregate|| <= ||g0||
    ft = FLTrust()
    ft.set_server_update(torch.full((D,), 0.05))
    assert float(ft(x).vector.double().norm()) <= float(torch.full((D,), 0.05).norm()) * (1 + 1e-6)

    # flame (no noise): admitted rows clipped to S_t, the median norm: ||aggregate|| <= S_t <= max honest norm
    fl = FLAME(noise_lambda=0.0)(x)
    s_t = fl.info.stats["clip_norm"]
    assert float(fl.vector.double().norm()) <= s_t * (1 + 1e-6) and s_t <= float(h.double().norm(dim=1).max())

    # foolsgold: ||aggregate|| <= tau (the median norm)
    fg = FoolsGold()(x, client_ids=list(range(n)))
    assert float(fg.vector.double().norm()) <= fg.info.stats["clip_norm"] * (1 + 1e-6)

    # norm_clip: every row <= tau = the median norm <= the largest honest norm
    rows, _, info = NormClip(max_norm="median")(x)
    assert float(rows.double().norm(dim=1).max()) <= info.stats["clip_norm"] * (1 + 1e-6)
    assert info.stats["clip_norm"] <= float(h.double().norm(dim=1).max())

    # nnm: a row farther than every honest pair enters no honest row's mix (the honest mixes move by 0)
    mixed, _, _ = NNM(f=1)(x)
    mixed_other, _, _ = NNM(f=1)(torch.cat([torch.full((1, D), 1e6), h]))
    torch.testing.assert_close(mixed[1:], mixed_other[1:])


# ------------------------------------------------------------------------------------------- issue 16 item 5
def _heterogeneous_round(seed, scale, n=12, d=200):
    """Honest LoRA-like updates with no shared direction and heterogeneous norms (log-normal step sizes);
    one attacker whose only anomaly is its norm: a random direction, ``scale`` x the median honest norm."""
    g = torch.Generator().manual_seed(seed)
    h = torch.exp(torch.randn(n - 1, 1, generator=g) * 0.7) * torch.randn(n - 1, d, generator=g) * 0.025
    a = torch.randn(d, generator=g)
    return torch.cat([(a / a.norm() * h.norm(dim=1).median() * scale)[None], h])


def test_median_clip_in_front_of_multi_krum_hides_a_norm_only_outlier():
    """Measured (docs/defenses.md, "What composes"): 20 seeds, attacker at 440x the median norm
    (158 vs 0.359). Without the clip Multi-Krum drops it every time; a median clip in front puts it on
    the median-norm sphere, where it looks like any honest row; NNM before the clip keeps detection."""
    caught = {"multi_krum": 0, "norm_clip>multi_krum": 0, "nnm>norm_clip>multi_krum": 0}
    for seed in range(20):
        x = _heterogeneous_round(seed, 440.0)
        caught["multi_krum"] += not bool(Pipeline(aggregator=MultiKrum(f=2))(x).info.accepted[0])
        caught["norm_clip>multi_krum"] += not bool(
            Pipeline(pre=[NormClip(max_norm="median")], aggregator=MultiKrum(f=2))(x).info.accepted[0])
        caught["nnm>norm_clip>multi_krum"] += not bool(
            Pipeline(pre=[NNM(f=2), NormClip(max_norm="median")], aggregator=MultiKrum(f=2))(x).info.accepted[0])
    assert caught["multi_krum"] == 20 and caught["nnm>norm_clip>multi_krum"] == 20
    assert caught["norm_clip>multi_krum"] <= 10  # measured 8/20


def test_clip_reason_keeps_the_original_norm():
    h = torch.randn(11, 200, generator=torch.Generator().manual_seed(0)) * 0.025
    tau = float(h.norm(dim=1).median())
    a = torch.randn(200, generator=torch.Generator().manual_seed(1))
    x = torch.cat([(a / a.norm() * 158.0)[None], h])
    out = Pipeline(pre=[NormClip(max_norm="median")], aggregator=MultiKrum(f=2))(x)
    clip = float(out.info.stats["clip_norm"])
    assert f"norm clipped from 158 to {clip:.4g}" in out.info.reasons[0]
    assert float(out.info.scores["norm"][0]) == pytest.approx(158.0, rel=1e-5)  # the norm before clipping
    assert 0.5 * tau < clip < 2 * tau


def detection_table(seeds=range(20), scales=(2.0, 5.0, 20.0, 440.0)):
    """The measurement behind docs/defenses.md's table (``python tests/test_hostile.py``; ~20 s, not a test)."""
    pre = {"": [], "norm_clip → ": ["clip"], "nnm → ": ["nnm"], "norm_clip → nnm → ": ["clip", "nnm"],
           "nnm → norm_clip → ": ["nnm", "clip"]}
    make = {"clip": lambda: NormClip(max_norm="median"), "nnm": lambda: NNM(f=2)}
    print("| pipeline | " + " | ".join(f"×{s:g}" for s in scales) + " |")
    print("|---|" + "---|" * len(scales))
    for agg in ("krum", "multi_krum"):
        for prefix, stages in pre.items():
            cells = []
            for scale in scales:
                caught = 0
                for seed in seeds:
                    x = _heterogeneous_round(seed, scale)
                    out = Pipeline(pre=[make[s]() for s in stages],
                                   aggregator=Krum(f=2) if agg == "krum" else MultiKrum(f=2))(x)
                    caught += (int(out.info.scores["krum_score"].argmax()) == 0 if agg == "krum"
                               else not bool(out.info.accepted[0]))
                cells.append(f"{caught}/{len(seeds)}")
            print(f"| `{prefix}{agg}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    detection_table()
