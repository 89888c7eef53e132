"""One contract run over every registered aggregator and pre-aggregator (scikit-learn's estimator_checks idea):
no input mutation, output shape [d], finite output (also with a 1e30 attacker), per-client info of length n,
registry round-trip, a stated tolerance, state round-trip for stateful ones, the paper in the docstring."""

from __future__ import annotations

import re

import pytest
import torch

from trustfl.defenses import (AggregateInfo, FLTrust, Pipeline, available_aggregators, available_stages,
                              build_pipeline, make_aggregator, make_stage)
from trustfl.errors import ToleranceError

# options a config would give; every registered aggregator must have an entry (so new ones get tested)
AGGREGATOR_OPTIONS = {
    "fedavg": {},
    "median": {},
    "trimmed_mean": {"f": 2},
    "krum": {"f": 2},
    "multi_krum": {"f": 2},
    "bulyan": {"f": 2},
    "geometric_median": {},
    "centered_clipping": {"tau": 1.0},
    "dnc": {"f": 2, "sub_dim": 16},
    "fltrust": {},
    "flame": {},
    "foolsgold": {},
}
PRE_OPTIONS = {"norm_clip": {"max_norm": "median"}, "nnm": {"f": 2}, "bucketing": {"s": 2}}
N, D = 12, 40
IDS = list(range(100, 100 + N))  # client ids are not row positions


def _updates(seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(N, D, generator=g) * 0.1 + 0.05
    u[0] = 1e30  # an absurd attacker: must be handled by the aggregator itself
    return u


def _make(name):
    agg = make_aggregator(name, **AGGREGATOR_OPTIONS[name])
    if isinstance(agg, FLTrust):
        agg.set_server_update(torch.full((D,), 0.05))
    return agg


def test_every_registered_stage_has_contract_options():
    assert set(available_aggregators()) <= set(AGGREGATOR_OPTIONS), "add the new aggregator to AGGREGATOR_OPTIONS"
    ours = set(PRE_OPTIONS)
    assert ours <= set(available_stages("pre"))


@pytest.mark.parametrize("name", sorted(AGGREGATOR_OPTIONS))
def test_aggregator_contract(name):
    agg = _make(name)
    u = _updates()
    before = u.clone()
    out = agg(u, torch.arange(1.0, N + 1), generator=torch.Generator().manual_seed(1), client_ids=IDS)
    assert torch.equal(u, before), "input mutated"
    assert out.vector.shape == (D,) and out.vector.dtype == u.dtype
    if name != "fedavg":  # FedAvg is not robust: the 1e30 row makes its mean overflow
        assert torch.isfinite(out.vector).all(), name
    info = out.info
    assert isinstance(info, AggregateInfo)
    for t in (info.accepted, info.clipped, info.flagged):
        assert t.shape == (N,) and t.dtype == torch.bool
    assert all(s.shape == (N,) for s in info.scores.values())
    assert len(info.reasons) == N and all(isinstance(r, str) for r in info.reasons)
    assert out.vector.data_ptr() != u.data_ptr()
    # registry round-trip: the same name and options build the same kind of object, and a pipeline
    assert type(make_aggregator(name, **AGGREGATOR_OPTIONS[name])) is type(agg)
    pipe = build_pipeline(aggregator=name, aggregator_options=AGGREGATOR_OPTIONS[name])
    assert type(pipe.aggregator) is type(agg)
    with pytest.raises(ValueError, match=f"aggregator '{name}': bad options"):
        make_aggregator(name, bogus_option=1)


@pytest.mark.parametrize("name", sorted(set(AGGREGATOR_OPTIONS) - {"fedavg"}))
def test_robust_aggregator_states_paper_tolerance_and_ignores_weights(name):
    agg = _make(name)
    doc = type(agg).__doc__ + (__import__(type(agg).__module__, fromlist=["x"]).__doc__ or "")
    assert re.search(r"(19|20)\d\d", doc), f"{name}: cite the paper (authors, year)"
    assert "weight" in type(agg).__doc__.lower(), f"{name}: say what happens to client weights"
    agg.check_tolerance(N, 2)
    with pytest.raises(ToleranceError, match=rf"n={N}, f={N + 1}"):
        agg.check_tolerance(N, N + 1)
    if name in ("geometric_median",):
        return  # uses weights only when weighted=True (RFA's alpha)
    u = _updates(3)
    a = _make(name)(u, torch.ones(N), generator=torch.Generator().manual_seed(0), client_ids=IDS)
    b = _make(name)(u, torch.arange(1.0, N + 1) ** 3, generator=torch.Generator().manual_seed(0), client_ids=IDS)
    torch.testing.assert_close(a.vector, b.vector)  # client-reported weights are untrusted


@pytest.mark.parametrize("name", sorted(AGGREGATOR_OPTIONS))
def test_stateful_aggregators_round_trip_their_state(name):
    agg = _make(name)
    if not agg.stateful:
        assert agg.state_dict() == {}
        return
    agg(_updates(4), client_ids=IDS)
    state = agg.state_dict()
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    fresh = make_aggregator(name, **AGGREGATOR_OPTIONS[name])
    fresh.load_state_dict(state)
    if isinstance(fresh, FLTrust):
        fresh.set_server_update(torch.full((D,), 0.05))
        agg.set_server_update(torch.full((D,), 0.05))
    u = _updates(5)
    torch.testing.assert_close(fresh(u, client_ids=IDS).vector, agg(u, client_ids=IDS).vector)
    pipe = Pipeline(aggregator=fresh)
    assert set(pipe.state_dict()) == {f"0.{k}" for k in fresh.state_dict()}


@pytest.mark.parametrize("pre", sorted(PRE_OPTIONS))
@pytest.mark.parametrize("name", ["median", "krum", "geometric_median", "fedavg"])
def test_pre_aggregator_contract_and_composition(pre, name):
    stage = make_stage("pre", pre, **PRE_OPTIONS[pre])
    u = _updates(6)
    u[0] = 1.0  # finite rows for the mixing stages (NNM averages rows)
    before = u.clone()
    rows, w, info = stage(u, torch.ones(N), generator=torch.Generator().manual_seed(0))
    assert torch.equal(u, before)
    assert rows.ndim == 2 and rows.shape[1] == D and torch.isfinite(rows).all()
    assert info.accepted.shape == (N,) and len(info.reasons) == N
    assert info.groups is None or (info.groups.shape == (N,) and int(info.groups.max()) == rows.shape[0] - 1)
    assert w is None or w.shape == (rows.shape[0],)
    opts = dict(AGGREGATOR_OPTIONS[name])
    if name == "krum" and pre == "bucketing":
        opts["f"] = 1  # 6 buckets: Krum needs 6 > 2f + 2
    out = build_pipeline(aggregator=name, aggregator_options=opts, pre=[{"name": pre, **PRE_OPTIONS[pre]}])(
        u, torch.ones(N), generator=torch.Generator().manual_seed(0))
    assert out.vector.shape == (D,) and torch.isfinite(out.vector).all()
    assert out.info.accepted.shape == (N,) and len(out.info.reasons) == N
