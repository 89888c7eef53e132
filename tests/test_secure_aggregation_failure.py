"""A compute party that dies mid-run: a clear error, the run directory intact, ``--resume`` finishes the run.

Its own module (and party pools): the test kills a party process for real.
"""

from __future__ import annotations

import pytest
import torch

from trustfl.config import RunConfig
from trustfl.defenses.secure_aggregation import PartyFailure
from trustfl.errors import ConfigError
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


# ---------------------------------------------------------------- parties started by hand (launch = "external")
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_external_launch_parties_started_by_hand_compute_the_sum(monkeypatch):
    """The operator's flow: a shared key in TRUSTFL_MPC_AUTHKEY, a fixed port and rendezvous; start() prints the
    party commands and waits; parties started from those commands (here: subprocesses) join and sum."""
    import os
    import secrets
    import subprocess
    import threading

    from trustfl.defenses.secure_aggregation import MPCSecureAggregator, PartyPool

    key = secrets.token_hex(32)
    monkeypatch.setenv("TRUSTFL_MPC_AUTHKEY", key)
    pool = PartyPool(parties=2, launch="external", port=_free_port(), rendezvous=f"tcp://127.0.0.1:{_free_port()}",
                     timeout=240)
    commands = [pool.party_command(r) for r in range(3)]  # known before start(): what the operator is told
    errors: list[BaseException] = []
    starter = threading.Thread(target=lambda: _start(pool, errors))
    starter.start()
    env = {**os.environ, "TRUSTFL_MPC_AUTHKEY": key, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(c, env=env, stdin=subprocess.DEVNULL) for c in commands]
    try:
        starter.join(timeout=300)
        assert not errors and pool.started, errors
        x = torch.randn(3, 50, generator=torch.Generator().manual_seed(1)) * 0.1
        out = MPCSecureAggregator(pool=pool).secure_sum(x)
        assert (out.total - x.double().sum(0)).abs().max() < 3 * 2.0 ** -16
    finally:
        pool.close()
        for p in procs:
            p.terminate()
            p.wait(timeout=30)


def _start(pool, errors) -> None:
    try:
        pool.start()
    except BaseException as exc:  # reported to the test thread
        errors.append(exc)


def test_external_launch_without_a_key_port_or_rendezvous_is_one_clear_error(monkeypatch):
    from trustfl.defenses.secure_aggregation import PartyPool

    monkeypatch.delenv("TRUSTFL_MPC_AUTHKEY", raising=False)
    with pytest.raises(ConfigError, match="TRUSTFL_MPC_AUTHKEY"):
        PartyPool(launch="external", port=_free_port(), rendezvous="tcp://127.0.0.1:29500")
    monkeypatch.setenv("TRUSTFL_MPC_AUTHKEY", "ab" * 8)  # 8 bytes: too short
    with pytest.raises(ConfigError, match=">= 32 bytes"):
        PartyPool(launch="external", port=_free_port(), rendezvous="tcp://127.0.0.1:29500")
    monkeypatch.setenv("TRUSTFL_MPC_AUTHKEY", "ab" * 32)
    with pytest.raises(ConfigError, match="set port"):
        PartyPool(launch="external", rendezvous="tcp://127.0.0.1:29500")
    with pytest.raises(ConfigError, match="set port"):
        PartyPool(launch="external", port=_free_port())  # loopback rendezvous
    with pytest.raises(ConfigError, match="secure_aggregation.port"):
        PartyPool(port=70000)
