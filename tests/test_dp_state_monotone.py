"""A DP accountant state loaded into the sample-level hook never lowers the budget already spent.

The Flower engine loads each client's accountant state from the client's own reply; a node that
sends a shorter history (or one at another σ / sampling rate) must be refused, not believed.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from trustfl.defenses.dp import DPAdapterTraining
from trustfl.errors import UpdateError
from trustfl.federation.client import local_steps

Z, Q = 1.1, 0.05


def _hook(history=None):
    hook = DPAdapterTraining(noise_multiplier=Z, rounds=3)
    if history is not None:
        hook.load_state_json({"0": {"noise_multiplier": Z, "sample_rate": Q, "history": history}})
    return hook


def test_extending_history_is_accepted_and_epsilon_grows():
    hook = _hook([[Z, Q, 10]])
    before = hook.epsilons()[0]
    hook.load_state_json({"0": {"noise_multiplier": Z, "sample_rate": Q, "history": [[Z, Q, 25]]}})
    assert hook.epsilons()[0] > before
    assert hook.state_json()["0"]["history"] == [[Z, Q, 25]]


@pytest.mark.parametrize("history", [[[Z, Q, 9]], [], [[Z, Q, 5], [Z, Q, 4]]])
def test_history_that_drops_steps_is_refused_and_nothing_changes(history):
    hook = _hook([[Z, Q, 10]])
    held = json.dumps(hook.state_json())
    with pytest.raises(UpdateError, match="client 0"):
        hook.load_state_json({"0": {"noise_multiplier": Z, "sample_rate": Q, "history": history}})
    assert json.dumps(hook.state_json()) == held


@pytest.mark.parametrize("field,value", [("noise_multiplier", 2.0), ("sample_rate", 0.5)])
def test_changed_sigma_or_rate_is_refused(field, value):
    hook = _hook([[Z, Q, 10]])
    entry = {"noise_multiplier": Z, "sample_rate": Q, "history": []}
    entry[field] = value  # (a history at the new value is refused too: see the malformed cases)
    with pytest.raises(UpdateError, match=field):
        hook.load_state_json({"0": entry})


@pytest.mark.parametrize("bad", [
    {"noise_multiplier": float("nan"), "sample_rate": Q, "history": []},
    {"noise_multiplier": Z, "sample_rate": float("inf"), "history": []},
    {"noise_multiplier": Z, "sample_rate": 1.5, "history": []},
    {"noise_multiplier": -1.0, "sample_rate": Q, "history": []},
    {"noise_multiplier": Z, "sample_rate": Q, "history": [[Z, Q, 0]]},
    {"noise_multiplier": Z, "sample_rate": Q, "history": [[Z, Q, 2.5]]},
    {"noise_multiplier": Z, "sample_rate": Q, "history": [[Z, Q]]},
    {"noise_multiplier": Z, "sample_rate": Q, "history": [[3.4e38 * 10, Q, 1]]},
    {"noise_multiplier": Z, "sample_rate": Q, "history": [[Z * 2, Q, 3]]},  # steps at another σ
    {"noise_multiplier": None, "sample_rate": None, "history": [[Z, Q, 3]]},
    {"noise_multiplier": Z, "sample_rate": Q},
    "not a state",
])
def test_malformed_state_gives_a_clear_error(bad):
    with pytest.raises(UpdateError, match="DP accountant state"):
        DPAdapterTraining(noise_multiplier=Z, rounds=1).load_state_json({"0": bad})


def test_non_integer_client_id_and_non_mapping():
    with pytest.raises(UpdateError, match="not an integer"):
        _hook().load_state_json({"x": {"noise_multiplier": Z, "sample_rate": Q, "history": []}})
    with pytest.raises(UpdateError, match="mapping"):
        _hook().load_state_json([])  # type: ignore[arg-type]


def test_replace_takes_the_authoritative_state():
    hook = _hook([[Z, Q, 30]])
    hook.load_state_json({"0": {"noise_multiplier": Z, "sample_rate": Q, "history": [[Z, Q, 10]]}}, replace=True)
    assert hook.state_json()["0"]["history"] == [[Z, Q, 10]]
    hook.load_state_json({"0": {"noise_multiplier": None, "sample_rate": None, "history": []}}, replace=True)
    assert hook.epsilons()[0] == 0.0


@settings(max_examples=40, deadline=None)
@given(held=st.integers(1, 500), new=st.integers(1, 500))
def test_loaded_epsilon_never_falls_below_held(held, new):
    """Property: whatever a client reports, the hook's ε afterwards is >= the ε it held."""
    hook = _hook([[Z, Q, held]])
    before = hook.epsilons()[0]
    try:
        hook.load_state_json({"0": {"noise_multiplier": Z, "sample_rate": Q, "history": [[Z, Q, new]]}})
    except UpdateError:
        assert new < held
    after = hook.epsilons()[0]
    assert after >= before and math.isfinite(after)


# ---------------------------------------------------------------- reports of nodes (Flower engine's server)
def _trained_reports(model_dir, tmp_path, monkeypatch, **over):
    """Real per-round accountant states of a tiny DP federation (snapshotted after every client's round)."""
    from trustfl.config import RunConfig
    from trustfl.federation import Federation

    from tiny_runs import tiny_run

    snapshots: list[tuple[int, dict]] = []
    original = DPAdapterTraining.finish

    def finish(self, *, context):
        out = original(self, context=context)
        snapshots.append((context.client_id, json.loads(json.dumps(self.state_json()[str(context.client_id)]))))
        return out

    monkeypatch.setattr(DPAdapterTraining, "finish", finish)
    cfg = RunConfig.from_dict(tiny_run(model_dir, name="dp-reports", **over))
    Federation(cfg, out_dir=tmp_path / "run", progress=False).run()
    server = DPAdapterTraining.from_settings(cfg.privacy.sample, rounds=cfg.federation.rounds, task="classification")
    steps = functools.partial(local_steps, epochs=cfg.client.epochs, max_steps=cfg.client.max_steps)
    return snapshots, server, steps


@pytest.mark.parametrize("over", [
    {"privacy__sample": {"target_epsilon": 4.0, "delta": 1e-5}},                      # σ solved; max_steps cap
    {"privacy__sample": {"noise_multiplier": 1.3}, "client__max_steps": None},        # fixed σ; epochs x batches
])
def test_reports_of_honest_nodes_are_accepted_round_after_round(tiny_bert_dir, tmp_path, monkeypatch, over):
    over = {k: v for k, v in over.items()}
    sample = over.pop("privacy__sample")
    snapshots, server, steps = _trained_reports(tiny_bert_dir, tmp_path, monkeypatch, replace={
        "privacy": {"sample": sample}}, federation__rounds=2, **over)
    assert len(snapshots) >= 4  # 4 clients x 2 rounds (all sampled)
    for cid, state in snapshots:
        server.load_round_reports({str(cid): state}, local_steps=steps)
    final = {int(c): s for c, s in snapshots}
    assert server.state_json() == {str(c): s for c, s in sorted(final.items())}


def _tampered(state, how):
    s = json.loads(json.dumps(state))
    z, q, n = s["history"][-1]
    if how == "larger sigma":
        s["noise_multiplier"] = z * 10
        s["history"] = [[z * 10, q, n]]
    elif how == "fewer steps":
        s["history"] = [[z, q, n - 1]]
    elif how == "no steps":
        s["history"] = []
    elif how == "rate not 1/batches":
        s["sample_rate"] = q * 0.77
        s["history"] = [[z, q * 0.77, n]]
    return s


@pytest.mark.parametrize("how", ["larger sigma", "fewer steps", "no steps", "rate not 1/batches"])
def test_report_that_under_states_epsilon_is_refused(tiny_bert_dir, tmp_path, monkeypatch, how):
    snapshots, server, steps = _trained_reports(tiny_bert_dir, tmp_path, monkeypatch, replace={
        "privacy": {"sample": {"noise_multiplier": 1.3}}}, federation__rounds=1)
    cid, state = snapshots[0]
    with pytest.raises(UpdateError, match=f"client {cid}"):
        server.load_round_reports({str(cid): _tampered(state, how)}, local_steps=steps)
    assert server.state_json() == {}  # nothing recorded
    server.load_round_reports({str(cid): state}, local_steps=steps)  # the honest one still goes in
    with pytest.raises(UpdateError, match="0 new private steps"):  # the same report twice: a round without steps
        server.load_round_reports({str(cid): state}, local_steps=steps)


def test_one_bad_report_loads_none_of_the_batch(tiny_bert_dir, tmp_path, monkeypatch):
    snapshots, server, steps = _trained_reports(tiny_bert_dir, tmp_path, monkeypatch, replace={
        "privacy": {"sample": {"noise_multiplier": 1.3}}}, federation__rounds=1)
    (a, sa), (b, sb) = snapshots[:2]
    with pytest.raises(UpdateError, match=f"client {b}"):
        server.load_round_reports({str(a): sa, str(b): _tampered(sb, "fewer steps")}, local_steps=steps)
    assert server.state_json() == {}
