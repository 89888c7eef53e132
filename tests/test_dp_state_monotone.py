"""A DP accountant state loaded into the sample-level hook never lowers the budget already spent.

The Flower engine loads each client's accountant state from the client's own reply; a node that
sends a shorter history (or one at another σ / sampling rate) must be refused, not believed.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from trustfl.defenses.dp import DPAdapterTraining
from trustfl.errors import UpdateError

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
