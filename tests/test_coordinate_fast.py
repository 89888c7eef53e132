"""The cache-blocked coordinate median / trimmed mean (issue 14): same outputs as Flower's ``aggregate_median``
(exactly) and ``aggregate_trimmed_avg`` (float tolerance), per-client counts equal to a plain numpy reference,
whatever the tile size and thread count; ties, n = 1/2, float32-max values, hostile input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.server.strategy import aggregate as flower
from hypothesis import given, settings
from hypothesis import strategies as st

from trustfl.defenses import CoordinateMedian, Pipeline, TrimmedMean
from trustfl.defenses._coordinate_kernels import column_order_stats
from trustfl.errors import ToleranceError, UpdateError

F32_MAX = float(np.finfo(np.float32).max)


def _updates(seed: int, n: int, d: int, dtype=np.float32, ties: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: many exact ties per column, including at the selected ranks
        return rng.integers(-2, 3, size=(n, d)).astype(dtype) * dtype(0.5)
    return rng.normal(size=(n, d)).astype(dtype)


def ref_inside(u: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Per row: columns whose value lies in [rank lo, rank hi] of the sorted column (ties count)."""
    s = np.sort(u, axis=0)
    return ((u >= s[lo]) & (u <= s[hi])).sum(axis=1)


def flower_trimmed(u: np.ndarray, f: int) -> np.ndarray:
    cut = (f + 1e-9) / len(u)  # Flower trims int(cut * n) = f per side (f / n may round down)
    return flower.aggregate_trimmed_avg([([row], 1) for row in u], cut)[0]


# ----------------------------------------------------------------------------- the kernel


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 300), st.sampled_from([np.float32, np.float64]), st.booleans(),
       st.integers(1, 97), st.sampled_from([1, 2, 3]), st.integers(0, 10_000), st.data())
def test_column_order_stats_matches_a_full_sort(n, d, dtype, ties, tile_cols, threads, seed, data):
    u = _updates(seed, n, d, dtype, ties)
    lo = data.draw(st.integers(0, n - 1))
    hi = data.draw(st.integers(lo, n - 1))
    got = column_order_stats(u, lo, hi, middle_mean=True, threads=threads, tile_cols=tile_cols)
    s = np.sort(u, axis=0)
    assert got.low.dtype == dtype and np.array_equal(got.low, s[lo]) and np.array_equal(got.high, s[hi])
    np.testing.assert_allclose(got.middle_mean, s[lo:hi + 1].astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)
    assert np.array_equal(got.inside, ref_inside(u, lo, hi))


def test_threads_and_tiles_do_not_change_the_result():
    u = _updates(1, 23, 20_011)  # a width no tile size divides
    ref = column_order_stats(u, 5, 17, middle_mean=True, threads=1)
    for threads, cols in ((2, None), (2, 64), (3, 129), (1, 7)):
        got = column_order_stats(u, 5, 17, middle_mean=True, threads=threads, tile_cols=cols)
        for a, b in ((got.low, ref.low), (got.high, ref.high), (got.middle_mean, ref.middle_mean),
                     (got.inside, ref.inside)):
            assert np.array_equal(a, b)


def test_both_cores_through_the_aggregators_give_the_single_thread_result():
    u = torch.from_numpy(_updates(2, 9, (1 << 22) // 9 + 5))  # above the size where the default goes parallel
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = (CoordinateMedian()(u), TrimmedMean(f=2)(u))
        torch.set_num_threads(2)
        two = (CoordinateMedian()(u), TrimmedMean(f=2)(u))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert torch.equal(a.vector, b.vector)
        assert all(torch.equal(a.info.scores[k], b.info.scores[k]) for k in a.info.scores)


def test_kernel_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"need 0 <= lo <= hi < n=3, got lo=2, hi=1"):
        column_order_stats(np.zeros((3, 4), np.float32), 2, 1)
    with pytest.raises(ValueError, match="hi=3"):
        column_order_stats(np.zeros((3, 4), np.float32), 0, 3)
    with pytest.raises(TypeError, match="float32/float64"):
        column_order_stats(np.zeros((3, 4), np.int32), 0, 1)
    with pytest.raises(TypeError, match="float32/float64"):
        column_order_stats(np.zeros(4, np.float32), 0, 0)


# ----------------------------------------------------------------------------- against Flower


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 25), st.integers(1, 200), st.booleans(), st.integers(0, 10_000))
def test_median_equals_flower_exactly_and_counts_match(n, d, ties, seed):
    u = _updates(seed, n, d, ties=ties)
    out = CoordinateMedian()(torch.from_numpy(u))
    ref = flower.aggregate_median([([row], 1) for row in u])[0]
    assert out.vector.dtype == torch.float32 and np.array_equal(out.vector.numpy(), ref)
    want = ref_inside(u, (n - 1) // 2, n // 2) / d
    assert np.array_equal(out.info.scores["median_frac"].numpy(), want)
    assert out.info.accepted.all() and not out.info.flagged.any()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 25), st.integers(1, 200), st.booleans(), st.integers(0, 10_000), st.data())
def test_trimmed_mean_equals_flower_and_counts_match(n, d, ties, seed, data):
    u = _updates(seed, n, d, ties=ties)
    f = data.draw(st.integers(0, (n - 1) // 2))
    agg = TrimmedMean(f=f, flag_above=0.3)
    out = agg(torch.from_numpy(u))
    np.testing.assert_allclose(out.vector.numpy(), flower_trimmed(u, f), rtol=1e-5, atol=1e-6)
    trimmed = (d - ref_inside(u, f, n - f - 1)) / d if f else np.zeros(n)
    assert np.array_equal(out.info.scores["trimmed_frac"].numpy(), trimmed)
    assert out.info.accepted.tolist() == (trimmed < 1.0).tolist()
    assert out.info.flagged.tolist() == (trimmed > 0.3).tolist()
    assert [bool(r) for r in out.info.reasons] == (trimmed > 0.3).tolist()


@pytest.mark.parametrize("n", [1, 2])
def test_one_and_two_clients(n):
    u = torch.tensor([[1.0, -2.0, 5.0], [3.0, -2.0, -5.0]])[:n]
    med = CoordinateMedian()(u)
    torch.testing.assert_close(med.vector, u.mean(0), rtol=0, atol=0)  # n <= 2: median = mean, exactly here
    assert med.vector.data_ptr() != u.data_ptr()
    assert med.info.scores["median_frac"].tolist() == [1.0] * n  # both middle values when n = 2
    tm = TrimmedMean(f=0)(u)
    torch.testing.assert_close(tm.vector, u.mean(0))
    assert tm.info.scores["trimmed_frac"].tolist() == [0.0] * n
    with pytest.raises(ToleranceError, match=rf"n={n}, f=1"):
        TrimmedMean(f=1)(u)


def test_float64_half_and_non_contiguous_inputs():
    u = _updates(3, 11, 301, np.float64)
    t = torch.from_numpy(u)
    assert torch.equal(CoordinateMedian()(t).vector,
                       torch.from_numpy(flower.aggregate_median([([r], 1) for r in u])[0]))
    assert CoordinateMedian()(t).vector.dtype == torch.float64
    np.testing.assert_allclose(TrimmedMean(f=3)(t).vector.numpy(), flower_trimmed(u, 3), rtol=1e-12)
    for dtype in (torch.float16, torch.bfloat16):  # computed in float32, returned in the input dtype
        h = t.to(dtype)
        assert torch.equal(CoordinateMedian()(h).vector, CoordinateMedian()(h.float()).vector.to(dtype))
        assert TrimmedMean(f=2)(h).vector.dtype == dtype
    wide = torch.from_numpy(np.ascontiguousarray(u.T)).T  # a transposed view: strides (1, n)
    assert not wide.is_contiguous()
    assert torch.equal(CoordinateMedian()(wide).vector, CoordinateMedian()(t).vector)
    assert torch.equal(TrimmedMean(f=3)(wide).info.scores["trimmed_frac"],
                       TrimmedMean(f=3)(t).info.scores["trimmed_frac"])


# ----------------------------------------------------------------------------- hostile input


def test_float32_max_values_give_finite_exact_results():
    u = np.array([[F32_MAX, -F32_MAX, F32_MAX, 1.0],
                  [F32_MAX, -F32_MAX, F32_MAX, 2.0],
                  [F32_MAX, -F32_MAX, -F32_MAX, 3.0],
                  [F32_MAX, -F32_MAX, 1.0, 4.0],
                  [F32_MAX, 0.0, 2.0, 1e30]], dtype=np.float32)
    med = CoordinateMedian()(torch.from_numpy(u[:4])).vector.numpy()  # even n: midpoint without overflow
    assert np.isfinite(med).all()
    np.testing.assert_array_equal(med, np.array([F32_MAX, -F32_MAX, (F32_MAX + 1.0) / 2, 2.5], np.float32))
    tm = TrimmedMean(f=1)(torch.from_numpy(u)).vector.numpy()  # the float32 sum of 3 x max overflows
    ref = np.sort(u.astype(np.float64), axis=0)[1:4].mean(axis=0)
    assert np.isfinite(tm).all()
    np.testing.assert_allclose(tm, ref.astype(np.float32), rtol=1e-6)


def test_attackers_at_the_float32_maximum_stay_outside_the_result():
    rng = np.random.default_rng(4)
    benign = rng.normal(size=(8, 500)).astype(np.float32)
    evil = np.where(rng.random((3, 500)) < 0.5, F32_MAX, -F32_MAX).astype(np.float32)
    u = torch.from_numpy(np.concatenate([evil[:1], benign, evil[1:]]))
    for agg in (CoordinateMedian(), TrimmedMean(f=3)):
        v = agg(u).vector.numpy()
        assert (v >= benign.min(0)).all() and (v <= benign.max(0)).all()
    frac = TrimmedMean(f=3)(u).info.scores["trimmed_frac"].numpy()
    assert (frac[[0, 9, 10]] == 1.0).all() and (frac[1:9] < 1.0).all()
    assert not TrimmedMean(f=3)(u).info.accepted[[0, 9, 10]].any()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_rows_are_rejected_as_before(bad):
    u = torch.randn(5, 7)
    u[3, 2] = bad
    for agg, owner in ((CoordinateMedian(), "median"), (TrimmedMean(f=1), "trimmed_mean")):
        with pytest.raises(UpdateError, match=rf"{owner}: rows \[3\] contain NaN/Inf.*Pipeline"):
            agg(u)
    out = Pipeline(aggregator=TrimmedMean(f=1))(u)  # the pipeline drops the row and says why
    assert torch.isfinite(out.vector).all() and not out.info.accepted[3]


@pytest.mark.parametrize("shape", [(0, 4), (4,), (2, 3, 4), (3, 0)])
def test_wrong_shapes_give_one_clear_error(shape):
    for agg in (CoordinateMedian(), TrimmedMean(f=0)):
        with pytest.raises(UpdateError, match=r"shape|coordinates"):
            agg(torch.zeros(shape))
    with pytest.raises(UpdateError, match="floating dtype"):
        CoordinateMedian()(torch.zeros(3, 4, dtype=torch.int64))


def test_weights_are_untrusted_and_the_input_is_not_mutated():
    u = torch.from_numpy(_updates(5, 9, 64))
    before = u.clone()
    for agg in (CoordinateMedian(), TrimmedMean(f=2)):
        plain = agg(u)
        inflated = agg(u, torch.tensor([1e9] + [1.0] * 8))  # a client claiming a billion examples
        assert torch.equal(plain.vector, inflated.vector)
        assert all(torch.equal(plain.info.scores[k], inflated.info.scores[k]) for k in plain.info.scores)
        assert plain.vector.data_ptr() != u.data_ptr()
    assert torch.equal(u, before)


def test_public_configuration_is_unchanged():
    assert CoordinateMedian().get_config() == {}
    assert TrimmedMean(f=2, flag_above=0.25).get_config() == {"f": 2, "flag_above": 0.25}
    with pytest.raises(ToleranceError, match=r"2f < n.*n=4, f=2"):
        CoordinateMedian().check_tolerance(4, 2)
    with pytest.raises(ToleranceError, match="configured for at most f=1"):
        TrimmedMean(f=1).check_tolerance(10, 2)
