"""A compute party that dies mid-run: a clear error, the run directory intact, ``--resume`` finishes the run.

Its own module (and party pools): the test kills a party process for real.
"""

from __future__ import annotations

import pytest

from trustfl.config import RunConfig
from trustfl.defenses.secure_aggregation import PartyFailure
from trustfl.federation import Federation
from trustfl.rundir import RunDir


def _config(model_dir: str) -> RunConfig:
    return RunConfig.from_dict({
        "name": "t", "seed": 0,
        "model": {"name": model_dir, "max_length": 24},
        "lora": {"r": 2, "top_layers": 2},
        "data": {"name": "sms_spam", "max_records": 160, "holdout_fraction": 0.1},
        "partition": {"num_clients": 3, "scheme": "iid"},
        "client": {"batch_size": 8, "max_steps": 1, "lr": 5e-3},
        "federation": {"rounds": 2, "save_client_updates": False},
        "secure_aggregation": {"enabled": True, "parties": 3, "norm_bound": 1.0, "timeout": 300.0},
    })


def test_a_killed_party_ends_the_round_cleanly_and_resume_finishes(tiny_bert_dir, tmp_path):
    cfg = _config(tiny_bert_dir)
    fed = Federation(cfg, out_dir=tmp_path / "run", progress=False)
    pool = fed.secure_aggregation.pool

    def kill_a_party(report):
        if report.round == 1:
            pool.procs[1].kill()  # compute party 1 dies between rounds 1 and 2
        return {}

    fed.callbacks.append(kill_a_party)
    with pytest.raises(PartyFailure, match=r"compute party 1 \(pid \d+\) exited .* --resume"):
        fed.run()
    assert all(p.poll() is not None for p in pool.procs)  # every party process was cleaned up
    run = RunDir(tmp_path / "run")
    run.verify()  # round 1 committed and intact, round 2 never written
    assert run.completed_rounds == 1
    resumed = Federation(cfg, out_dir=tmp_path / "run", resume=True, progress=False)
    summary = resumed.run()
    assert summary.rounds_completed == 2
    RunDir(tmp_path / "run").verify()
    assert all(p.poll() is not None for p in resumed.secure_aggregation.pool.procs)  # closed after the last round
