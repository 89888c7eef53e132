"""Faults in a real Flower deployment on loopback (SuperLink + 4 SuperNodes as processes), under SecAgg+.

One deployment, four ``flwr run``s of a small test app (written below) whose ClientApp is
trustfl's handlers plus two test-only Flower mods, driven by the run config: ``slow-client`` sleeps
``slow-seconds`` in ``slow-round`` (the mod sits inside ``secaggplus_when_asked``, so under SecAgg+
the client is slow exactly in the stage where it trains), and ``crash = "round:client,..."`` fails
SecAgg+'s setup stage. Library code has no test branch.

1. Round 1: client 3 sleeps past ``round_timeout``; SecAgg+ drops it after it shared its keys (its
   masks are rebuilt from the others' shares); the round goes on and the run records why. Round 2:
   clients 1 and 2 fail setup (before sharing keys: Flower 1.41 alone would crash every other
   node's unmask, see ``trustfl.federation.flower.secaggplus``); 2 < ``min_clients = 3`` is one clear
   error and the run stays at round 1.
2. ``resume=true``: round 2 is committed, then the ``flwr-serverapp`` process is SIGKILLed in round 3.
3. ``resume=true`` again finishes round 3; rounds 1-2 are untouched.
4. Without SecAgg+ (trustfl's own train messages, ``save_client_updates = true``): client 3 sleeps
   past ``round_timeout``, is dropped and recorded, and the global adapter is exactly FedAvg of the
   three stored updates.

Every round's step equals plain unweighted FedAvg of the included clients, trained again in this
process from the run's own previous global adapter, within Flower's quantization error 2c/Q, and
the run directory holds no individual update.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from trustfl.rundir import RunDir

from flower_nodes import node_config, node_configs, write_node_files

pytest.importorskip("flwr")
pytest.importorskip("psutil")

# round_timeout: honest clients (a fresh ClientApp process per message: torch, the model, the data) must finish
# well within it also on a loaded machine; the slow client sleeps 5 s longer
# (12 s per unit of load average, at least 90 s: about 110 s of honest training per round were measured at load 15)
TIMEOUT = float(os.environ.get("TRUSTFL_TEST_ROUND_TIMEOUT") or min(400, max(90, round(12 * os.getloadavg()[0]))))

CONFIG = """
name = "faults"
seed = 2
[model]
name = "{model}"
max_length = 24
[lora]
r = 2
top_layers = 2
[data]
name = "sms_spam"
max_records = 120
holdout_fraction = 0.1
[partition]
num_clients = 4
scheme = "iid"
[client]
batch_size = 8
max_steps = 2
lr = 5e-3
[server]
aggregator = "fedavg"
aggregator_options = {{ weighted = false }}
[federation]
rounds = {rounds}
engine = "flower"
save_client_updates = {save}
[federation.flower]
round_timeout = {timeout}
connect_timeout = {connect}  # after the server kill, nodes may still be busy with the killed run's messages
min_clients = {min_clients}
secure_aggregation = "{secure}"
"""

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "trustfl-fault-app"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["faultapp"]

[tool.flwr.app]
publisher = "trustfl-tests"

[tool.flwr.app.components]
serverapp = "faultapp.server_app:app"
clientapp = "faultapp.client_app:app"

[tool.flwr.app.config]
config = "federation.toml"
out-dir = "runs/faults"
resume = false
overwrite = false
slow-client = -1
slow-round = -1
slow-seconds = 0.0
crash = ""
"""

CLIENT_APP = '''
"""trustfl's ClientApp with one more Flower mod: the run config's slow client sleeps in the slow round."""
import time

from flwr.clientapp import ClientApp

from trustfl.federation.flower.client_app import handle_query, handle_train, secaggplus_when_asked


def _round(content):
    for key in ("fitins.config", "task"):  # SecAgg+'s FitIns, or trustfl's own train message
        if key in content.config_records:
            return content.config_records[key].get("round")
    return None


def slow_client(message, context, call_next):
    cfg = context.run_config
    if (context.node_config.get("client-id") == cfg["slow-client"]
            and _round(message.content) == cfg["slow-round"]):
        time.sleep(float(cfg["slow-seconds"]))
    return call_next(message, context)


def crash_in_setup(message, context, call_next):
    configs = message.content.config_records.get("secaggplus_configs")
    me = f"{message.metadata.group_id}:{context.node_config.get('client-id')}"  # "round:client"
    if configs is not None and configs.get("stage") == "setup" and me in context.run_config["crash"].split(","):
        raise RuntimeError("crash plan: this node fails SecAgg+'s setup stage")
    return call_next(message, context)


app = ClientApp()
app.train(mods=[crash_in_setup, secaggplus_when_asked, slow_client])(handle_train)
app.query()(handle_query)
'''

SERVER_APP = '''
from pathlib import Path

from trustfl.federation.flower.server_app import make_server_app

app = make_server_app(Path(__file__).resolve().parent.parent)
'''


def _write_app(folder: Path, config_text: str) -> Path:
    (folder / "faultapp").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (folder / "federation.toml").write_text(config_text)
    (folder / "faultapp" / "__init__.py").write_text("")
    (folder / "faultapp" / "client_app.py").write_text(CLIENT_APP)
    (folder / "faultapp" / "server_app.py").write_text(SERVER_APP)
    return folder


def _plain_mean(config_path: Path, files: list[Path], round: int, clients: list[int],
                global_vector: torch.Tensor) -> torch.Tensor:
    """Unweighted FedAvg of ``clients`` trained in this process (each from its own node file) from ``global_vector``."""
    from trustfl.config import load_config
    from trustfl.federation.flower.codec import TrainTask
    from trustfl.federation.flower.node import node_clients

    text = json.dumps(load_config(config_path, {"federation.engine": "flower"}).to_dict(), sort_keys=True)
    deltas = []
    for cid in clients:
        node = node_clients(text, node_config(cid, files[cid]), 2)
        result, _ = node.train(TrainTask(round=round, client_id=cid, config_json=text, num_labels=2,
                                         global_vector=global_vector.clone(), privacy_state=None))
        deltas.append(result.delta.double())
    return torch.stack(deltas).mean(0)


def _wait_for(predicate, timeout: float, what: str, proc=None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"flwr run ended (exit {proc.returncode}) before {what}:\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.5)


def _completed(run_dir: Path) -> int:
    try:
        return RunDir(run_dir).completed_rounds
    except Exception:  # not created yet
        return 0


@pytest.fixture(scope="module")
def deployment(tiny_bert_dir, tmp_path_factory):
    """One loopback deployment (SuperLink + 4 SuperNodes, each with its own data file) for this module."""
    from trustfl.federation.flower.loopback import LoopbackDeployment

    base = tmp_path_factory.mktemp("faults")
    config = base / "federation.toml"
    config.write_text(_config_text(tiny_bert_dir))
    files = write_node_files(config, base / "nodes")
    nodes = node_configs(files)
    with LoopbackDeployment(base / "flwr", nodes) as running:
        running.files = files
        yield running


def _config_text(model: str, *, secure: str = "secaggplus", min_clients: int = 3, rounds: int = 3) -> str:
    return CONFIG.format(model=model, timeout=TIMEOUT, connect=3 * TIMEOUT, min_clients=min_clients, secure=secure,
                         rounds=rounds,
                         save="false" if secure != "none" else "true")


@pytest.mark.integration
def test_deployment_timeouts_crashes_too_few_and_server_kill(deployment, tiny_bert_dir, tmp_path):
    from trustfl.errors import TrustFLError

    app = _write_app(tmp_path / "app", _config_text(tiny_bert_dir))
    files = deployment.files
    out, log = tmp_path / "run", deployment.work / "flwr_run.log"
    faults = {"slow-client": 3, "slow-round": 1, "slow-seconds": TIMEOUT + 5.0, "crash": "2:1,2:2"}
    # run 1: client 3 times out in round 1 (dropped, round goes on); clients 1 and 2 fail SecAgg+'s setup
    # in round 2, which leaves 2 < min_clients = 3: one clear error, the run stays at round 1
    with pytest.raises(TrustFLError, match="round 2: 2 of 4 sampled clients replied, fewer than "
                                           "federation.flower.min_clients = 3") as err:
        deployment.run(app, {"out-dir": str(out), **faults}, timeout=TIMEOUT + 600)
    assert "crashed in SecAgg+ stage 'setup'" in str(err.value) and "crash plan" in str(err.value)
    assert _completed(out) == 1
    round_1 = RunDir(out).global_vector(1)
    # run 2: resume; the ServerApp process is SIGKILLed after it committed round 2, during round 3
    proc = deployment.submit(app, {"out-dir": str(out), "resume": True})
    try:
        _wait_for(lambda: _completed(out) >= 2, 600, "round 2's commit", proc, log)
        pids = deployment.kill_server_app()
    finally:
        proc.kill()
        proc.wait(10)
    assert pids and _completed(out) == 2
    round_2 = RunDir(out).global_vector(2)
    # run 3: resume again; it finishes round 3
    deployment.run(app, {"out-dir": str(out), "resume": True}, timeout=600)
    # run 4 (one deployment for the module: make test runs it with xdist): the same timeout without SecAgg+
    _plain_round_survives_a_timeout(deployment, tiny_bert_dir, tmp_path)

    run = RunDir(out)
    run.verify()
    metrics = run.metrics()
    assert [m["round"] for m in metrics] == [1, 2, 3]
    assert torch.equal(run.global_vector(1), round_1) and torch.equal(run.global_vector(2), round_2)
    first = metrics[0]["engine"]
    assert first["replied"] == [0, 1, 2] and list(first["dropped"]) == ["3"]
    assert first["dropped"]["3"].startswith(f"no reply within {TIMEOUT:g} s in SecAgg+ stage 'collect_masked_vectors'")
    assert [m["engine"]["replied"] for m in metrics[1:]] == [[0, 1, 2, 3]] * 2
    c, q = 8.0, 4194304
    bound = 2 * c / q
    for m in metrics:
        r = m["round"]
        assert m["engine"]["secure_aggregation"]["included"] == m["engine"]["replied"]
        assert run.client_ids(r) == [] and "update_norms" not in m and "client_metrics" not in m
        step = run.global_vector(r).double() - run.global_vector(r - 1).double()
        plain = _plain_mean(app / "federation.toml", files, r, m["engine"]["replied"], run.global_vector(r - 1))
        err = (step - plain).abs().max().item()
        assert err < bound + 1e-6, f"round {r}: |SecAgg+ - FedAvg| = {err:.3g} > 2c/Q = {bound:.3g}"
        assert plain.abs().max().item() > 100 * bound


def _plain_round_survives_a_timeout(deployment, tiny_bert_dir, tmp_path):
    """Without SecAgg+: client 3 sleeps past round_timeout, is dropped and recorded, and the round's
    global adapter is exactly FedAvg of the three stored updates."""
    app = _write_app(tmp_path / "plain_app", _config_text(tiny_bert_dir, secure="none", rounds=1))
    out = tmp_path / "plain_run"
    deployment.run(app, {"out-dir": str(out), "slow-client": 3, "slow-round": 1, "slow-seconds": TIMEOUT + 5.0},
                   timeout=TIMEOUT + 600)
    run = RunDir(out)
    run.verify()
    (m,) = run.metrics()
    assert m["clients"] == [0, 1, 2, 3] and m["engine"]["replied"] == [0, 1, 2]
    assert m["engine"]["dropped"] == {"3": f"no reply within {TIMEOUT:g} s (federation.flower.round_timeout)"}
    assert sorted(run.client_ids(1)) == ["0", "1", "2"]
    deltas = torch.stack([run.client_update(1, c)[0].double() for c in ("0", "1", "2")])
    torch.testing.assert_close(run.global_vector(1).double(), run.global_vector(0).double() + deltas.mean(0),
                               rtol=1e-5, atol=1e-6)
