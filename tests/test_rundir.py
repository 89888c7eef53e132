"""Tests of trustfl.rundir: roundtrip, integrity checks, atomicity and resume."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from trustfl.rundir import (
    ConfigMismatchError,
    CorruptRunError,
    InvalidTensorError,
    RoundOrderError,
    RunDir,
    RunDirError,
    RunDirExistsError,
    RunWriter,
    layout_size,
)

LAYOUT = {"names": ["a.lora_A", "a.lora_B"], "shapes": [[2, 3], [3, 2]], "dtype": "float32"}
D = 12
CONFIG = {"rounds": 3, "lr": 0.1, "aggregator": {"name": "krum", "f": 1}, "layers": [0, 1]}
SEEDS = {"global": 0}


def vec(seed: int, d: int = D) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def make_run(path: Path, rounds: int = 2, **kw) -> RunWriter:
    w = RunWriter.create(path, config=CONFIG, layout=LAYOUT, seeds=SEEDS, **kw)
    w.write_initial(vec(0))
    for r in range(1, rounds + 1):
        w.write_round(
            r,
            global_vector=vec(100 + r),
            client_updates={3: (vec(10 * r + 3), 7 + r), "alice": (vec(10 * r + 4), 2)},
            metrics={"loss": 1.0 / r, "acc": np.float32(0.5), "n": np.int64(r)},
            state={"momentum": vec(200 + r), "step": torch.tensor([r], dtype=torch.int64)},
        )
    return w


def manifest_bytes(path: Path) -> bytes:
    return (path / "manifest.json").read_bytes()


# ----------------------------------------------------------------------------- roundtrip
def test_layout_size():
    assert layout_size(LAYOUT) == D
    with pytest.raises(RunDirError, match="shapes"):
        layout_size({"names": ["x"]})


def test_roundtrip_exact(tmp_path):
    path = tmp_path / "run"
    make_run(path, rounds=2, fingerprints={"train": "ab" * 32}, extra={"note": "x"})
    run = RunDir(path)
    assert run.completed_rounds == 2
    assert run.config == CONFIG and run.layout == LAYOUT
    assert torch.equal(run.global_vector(0), vec(0))
    for r in (1, 2):
        assert torch.equal(run.global_vector(r), vec(100 + r))
        assert run.client_ids(r) == ["3", "alice"]
        delta, n = run.client_update(r, 3)
        assert torch.equal(delta, vec(10 * r + 3)) and n == 7 + r
        delta, n = run.client_update(r, "alice")
        assert torch.equal(delta, vec(10 * r + 4)) and n == 2
        state = run.state(r)
        assert torch.equal(state["momentum"], vec(200 + r))
        assert torch.equal(state["step"], torch.tensor([r]))
    assert run.metrics() == [
        {"round": 1, "loss": 1.0, "acc": 0.5, "n": 1},
        {"round": 2, "loss": 0.5, "acc": 0.5, "n": 2},
    ]
    assert (path / "updates/round_0001/client_0003.safetensors").is_file()
    assert (path / "updates/round_0001/client_alice.safetensors").is_file()
    m = run.manifest
    assert m["format"] == "trustfl-run/1"
    assert m["fingerprints"] == {"train": "ab" * 32} and m["extra"] == {"note": "x"}
    assert set(m["versions"]) >= {"python", "torch", "safetensors", "numpy", "platform", "peft"}
    assert m["versions"]["torch"] is not None and m["versions"]["python"] is not None
    report = run.verify()
    assert report.untracked == () and report.incomplete == ()
    assert len(report.checked) == len(m["files"])


def test_manifest_sha256_matches_file_bytes(tmp_path):
    path = tmp_path / "run"
    make_run(path)
    files = json.loads(manifest_bytes(path))["files"]
    on_disk = {
        p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != "manifest.json"
    }
    assert set(files) == on_disk  # every file written is listed, incl. metrics.jsonl
    assert "metrics.jsonl" in files
    for rel, sha in files.items():
        assert sha == hashlib.sha256((path / rel).read_bytes()).hexdigest(), rel


def test_metric_nan_written_as_null_and_bad_metric_rejected(tmp_path):
    path = tmp_path / "run"
    w = RunWriter.create(path, config=CONFIG, layout=LAYOUT, seeds=SEEDS)
    w.write_initial(vec(0))
    w.write_round(1, global_vector=vec(1), metrics={"loss": float("nan"), "t": torch.tensor(2.5)})
    assert RunDir(path).metrics() == [{"round": 1, "loss": None, "t": 2.5}]
    with pytest.raises(RunDirError, match="not JSON-serializable"):
        w.write_round(2, global_vector=vec(2), metrics={"obj": object()})
    assert w.completed_rounds == 1


def test_update_extra(tmp_path):
    path = tmp_path / "run"
    w = make_run(path, rounds=1, extra={"a": 1})
    w.update_extra(dp={"epsilon": np.float64(2.5), "delta": 1e-5})
    assert RunDir(path).manifest["extra"] == {"a": 1, "dp": {"epsilon": 2.5, "delta": 1e-5}}
    RunDir(path).verify()


# ----------------------------------------------------------------------------- corruption
def test_tampered_byte_is_named(tmp_path):
    path = tmp_path / "run"
    make_run(path)
    rel = "updates/round_0002/client_alice.safetensors"
    data = bytearray((path / rel).read_bytes())
    data[-1] ^= 0xFF  # flip one byte of the tensor payload; still parses
    (path / rel).write_bytes(bytes(data))
    with pytest.raises(CorruptRunError, match="sha256 mismatch") as ei:
        RunDir(path).verify()
    assert [p for p, _ in ei.value.problems] == [rel]
    assert rel in str(ei.value)
    with pytest.raises(CorruptRunError, match=rel):
        RunDir(path).client_update(2, "alice")
    # the untouched files are still readable
    assert torch.equal(RunDir(path).client_update(2, 3)[0], vec(23))


def test_truncated_and_deleted_files_are_named(tmp_path):
    path = tmp_path / "run"
    make_run(path)
    trunc, gone = "globals/round_0001.safetensors", "state/round_0002.safetensors"
    data = (path / trunc).read_bytes()
    (path / trunc).write_bytes(data[: len(data) // 2])
    (path / gone).unlink()
    with pytest.raises(CorruptRunError) as ei:
        RunDir(path).verify()
    problems = dict(ei.value.problems)
    assert set(problems) == {trunc, gone}
    assert "truncated or unparsable" in problems[trunc]
    assert problems[gone] == "missing"
    with pytest.raises(CorruptRunError, match="missing"):
        RunDir(path).state(2)


def test_tampered_metrics_named(tmp_path):
    path = tmp_path / "run"
    make_run(path)
    (path / "metrics.jsonl").write_text('{"round": 1, "loss": 0.0}\n{"round": 2, "loss": 0.0}\n')
    with pytest.raises(CorruptRunError, match="metrics.jsonl"):
        RunDir(path).verify()
    with pytest.raises(CorruptRunError, match="metrics.jsonl"):
        RunDir(path).metrics()


def test_missing_or_unparsable_manifest(tmp_path):
    with pytest.raises(CorruptRunError, match="manifest.json"):
        RunDir(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptRunError, match="unparsable"):
        RunDir(tmp_path)


def test_untracked_file_is_a_warning(tmp_path):
    path = tmp_path / "run"
    make_run(path)
    (path / "updates/round_0001/client_9999.safetensors").write_bytes(st_save({"delta": vec(1)}))
    report = RunDir(path).verify()
    assert report.untracked == ("updates/round_0001/client_9999.safetensors",)


def test_reader_reads_verified_file_once_then_detects_later_change(tmp_path):
    path = tmp_path / "run"
    make_run(path)
    run = RunDir(path)
    run.global_vector(2)
    rel = path / "globals/round_0002.safetensors"
    data = bytearray(rel.read_bytes())
    data[-1] ^= 0x01
    st_ = rel.stat()
    rel.write_bytes(bytes(data))
    os.utime(rel, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000))  # coarse-mtime filesystems
    with pytest.raises(CorruptRunError, match="sha256 mismatch"):
        run.global_vector(2)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_vector_rejected_previous_round_intact(tmp_path, bad):
    path = tmp_path / "run"
    w = make_run(path, rounds=1)
    before = manifest_bytes(path)
    files_before = sorted(p.relative_to(path) for p in path.rglob("*"))
    poisoned = vec(5).clone()
    poisoned[4] = bad
    with pytest.raises(InvalidTensorError, match=r"client '7'.*round 2"):
        w.write_round(2, global_vector=vec(102), client_updates={1: (vec(1), 1), 7: (poisoned, 3)})
    with pytest.raises(InvalidTensorError, match="global_vector of round 2"):
        w.write_round(2, global_vector=poisoned)
    assert manifest_bytes(path) == before
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == files_before
    assert w.completed_rounds == 1
    run = RunDir(path)
    assert run.completed_rounds == 1 and torch.equal(run.global_vector(1), vec(101))
    run.verify()
    w.write_round(2, global_vector=vec(102))  # the writer is still usable
    assert RunDir(path).completed_rounds == 2


def test_misshaped_and_wrong_dtype_rejected(tmp_path):
    w = RunWriter.create(tmp_path / "run", config=CONFIG, layout=LAYOUT, seeds=SEEDS)
    with pytest.raises(InvalidTensorError, match=r"shape \(13,\).*\(12,\)"):
        w.write_initial(torch.zeros(D + 1))
    with pytest.raises(InvalidTensorError, match="shape"):
        w.write_initial(torch.zeros(3, 4))
    with pytest.raises(InvalidTensorError, match="float64"):
        w.write_initial(torch.zeros(D, dtype=torch.float64))
    w.write_initial(torch.zeros(D))
    with pytest.raises(RunDirError, match="num_samples"):
        w.write_round(1, global_vector=vec(1), client_updates={0: (vec(2), -1)})
    with pytest.raises(RunDirError, match="collides"):
        w.write_round(1, global_vector=vec(1), client_updates={3: (vec(2), 1), "3": (vec(3), 1)})
    with pytest.raises(RunDirError, match="filename-safe"):
        w.write_round(1, global_vector=vec(1), client_updates={"../x": (vec(2), 1)})
    assert w.completed_rounds == 0


def test_out_of_order_rounds_rejected(tmp_path):
    path = tmp_path / "run"
    w = RunWriter.create(path, config=CONFIG, layout=LAYOUT, seeds=SEEDS)
    with pytest.raises(RoundOrderError, match="write_initial"):
        w.write_round(1, global_vector=vec(1))
    w.write_initial(vec(0))
    with pytest.raises(RoundOrderError, match="already written"):
        w.write_initial(vec(0))
    with pytest.raises(RoundOrderError, match="next round must be 1"):
        w.write_round(2, global_vector=vec(2))
    w.write_round(1, global_vector=vec(1))
    with pytest.raises(RoundOrderError, match="next round must be 2"):
        w.write_round(1, global_vector=vec(1))
    with pytest.raises(RunDirError, match="valid rounds: 0..1"):
        RunDir(path).global_vector(2)


# ----------------------------------------------------------------------------- create/resume
def test_create_refuses_existing_dir(tmp_path):
    path = tmp_path / "run"
    make_run(path, rounds=1)
    with pytest.raises(RunDirExistsError, match=r"overwrite=True.*resume"):
        RunWriter.create(path, config=CONFIG, layout=LAYOUT, seeds=SEEDS)
    # overwrite=True replaces a trustfl run directory
    w = RunWriter.create(path, config={"new": 1}, layout=LAYOUT, seeds=SEEDS, overwrite=True)
    assert w.completed_rounds == 0 and not (path / "globals").exists()
    assert RunDir(path).config == {"new": 1}
    # an empty directory is fine without overwrite
    (tmp_path / "empty").mkdir()
    RunWriter.create(tmp_path / "empty", config=CONFIG, layout=LAYOUT, seeds=SEEDS)


def test_overwrite_refuses_non_run_directory(tmp_path):
    other = tmp_path / "home"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    (other / "globals").mkdir()
    with pytest.raises(RunDirExistsError, match="refusing to overwrite"):
        RunWriter.create(other, config=CONFIG, layout=LAYOUT, seeds=SEEDS, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious" and (other / "globals").is_dir()
    # a real run dir into which the user put a foreign file is refused too
    path = tmp_path / "run"
    make_run(path, rounds=1)
    (path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirExistsError, match="notes.txt"):
        RunWriter.create(path, config=CONFIG, layout=LAYOUT, seeds=SEEDS, overwrite=True)
    assert (path / "notes.txt").exists() and RunDir(path).completed_rounds == 1


def test_resume_after_kill_mid_round(tmp_path):
    path = tmp_path / "run"
    make_run(path, rounds=2)
    before = manifest_bytes(path)
    # simulate a kill during round 3: tensors (and metrics) written, manifest not committed
    (path / "globals/round_0003.safetensors").write_bytes(
        st_save({"vector": vec(999)}, metadata={"round": "3", "kind": "global"})
    )
    (path / "updates/round_0003").mkdir()
    (path / "updates/round_0003/client_0042.safetensors").write_bytes(st_save({"delta": vec(42)}))
    (path / "state/round_0003.safetensors").write_bytes(b"half a fi")
    (path / "globals/.tmp-abc.part").write_bytes(b"partial")
    with open(path / "metrics.jsonl", "ab") as f:
        f.write(b'{"round": 3, "loss": 0.1}\n')
    assert manifest_bytes(path) == before

    report = RunDir(path).verify()  # leftovers are not corruption
    assert report.untracked == ()
    assert len(report.incomplete) == 5
    w = RunWriter.resume(path, config=CONFIG)
    assert w.completed_rounds == 2
    assert not (path / "updates/round_0003").exists()
    assert not (path / "globals/.tmp-abc.part").exists()
    assert RunDir(path).verify().incomplete == ()

    w.write_round(3, global_vector=vec(103), client_updates={5: (vec(35), 1)}, metrics={"loss": 0.3})
    run = RunDir(path)
    assert run.completed_rounds == 3
    assert torch.equal(run.global_vector(3), vec(103))
    assert run.client_ids(3) == ["5"]
    assert [m["round"] for m in run.metrics()] == [1, 2, 3]
    assert run.metrics()[2]["loss"] == 0.3
    assert torch.equal(run.global_vector(1), vec(101))
    report = run.verify()
    assert report.untracked == () and report.incomplete == ()


def test_resume_rejects_corruption(tmp_path):
    path = tmp_path / "run"
    make_run(path, rounds=2)
    (path / "globals/round_0001.safetensors").unlink()
    with pytest.raises(CorruptRunError, match="globals/round_0001.safetensors"):
        RunWriter.resume(path)


def test_resume_config_mismatch(tmp_path):
    path = tmp_path / "run"
    make_run(path, rounds=1)
    other = {**CONFIG, "lr": 0.2, "extra_key": True}
    with pytest.raises(ConfigMismatchError) as ei:
        RunWriter.resume(path, config=other)
    msg = str(ei.value)
    assert "lr: recorded 0.1, given 0.2" in msg and "extra_key: not in the recorded config, given true" in msg
    assert "rounds" not in msg and "layers" not in msg and "aggregator" not in msg
    assert len(ei.value.differences) == 2
    # tuples vs lists and identical configs are equal after JSON conversion
    RunWriter.resume(path, config={**CONFIG, "layers": (0, 1)}).write_round(2, global_vector=vec(2))


def test_atomic_writes_leave_no_temp_files(tmp_path):
    path = tmp_path / "run"
    w = make_run(path, rounds=3)
    w.update_extra(k=1)
    leftovers = [p for p in path.rglob("*") if p.name.startswith(".tmp-") or p.suffix == ".part"]
    assert leftovers == []


def test_failed_manifest_write_keeps_previous_round(tmp_path, monkeypatch):
    """A crash at the commit point (after tensors, before the manifest) loses only that round."""
    import trustfl.rundir.writer as writer_mod

    path = tmp_path / "run"
    w = make_run(path, rounds=1)
    before = manifest_bytes(path)
    real = writer_mod.atomic_write_bytes

    def boom(p, data):
        if Path(p).name == "manifest.json":
            raise OSError("disk full")
        return real(p, data)

    monkeypatch.setattr(writer_mod, "atomic_write_bytes", boom)
    with pytest.raises(OSError, match="disk full"):
        w.write_round(2, global_vector=vec(2), metrics={"loss": 0.1})
    monkeypatch.undo()
    assert manifest_bytes(path) == before and w.completed_rounds == 1
    assert RunDir(path).metrics() == RunDir(path).metrics()[:1]
    assert len(RunDir(path).verify().incomplete) == 2  # round-2 global + metrics line
    w.write_round(2, global_vector=vec(22), metrics={"loss": 0.2})  # retry in-process
    run = RunDir(path)
    assert torch.equal(run.global_vector(2), vec(22))
    assert [m.get("loss") for m in run.metrics()] == [1.0, 0.2]
    assert run.verify().incomplete == ()


# ----------------------------------------------------------------------------- property
@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=64
    ),
    n=st.integers(min_value=0, max_value=2**40),
)
def test_random_vectors_roundtrip_exactly(tmp_path_factory, values, n):
    path = tmp_path_factory.mktemp("prop") / "run"
    layout = {"shapes": [[len(values)]]}
    v = torch.tensor(values, dtype=torch.float32)
    w = RunWriter.create(path, config={}, layout=layout, seeds={})
    w.write_initial(v)
    w.write_round(1, global_vector=-v, client_updates={"c": (v * 0.5, n)})
    run = RunDir(path)
    assert torch.equal(run.global_vector(0), v)
    assert torch.equal(run.global_vector(1), -v)
    delta, got_n = run.client_update(1, "c")
    assert torch.equal(delta, v * 0.5) and got_n == n
    # bitwise: -0.0 and subnormals survive
    assert run.global_vector(0).view(torch.int32).tolist() == v.view(torch.int32).tolist()


def test_sigkill_at_a_random_moment_leaves_a_resumable_run(tmp_path):
    """A real process killed mid-run: the last committed round verifies and resume continues."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    path = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import torch
        from trustfl.rundir import RunWriter
        w = RunWriter.create({str(path)!r}, config={{}}, layout={{"shapes": [[20000]]}}, seeds={{}})
        w.write_initial(torch.zeros(20000))
        print("ready", flush=True)
        for r in range(1, 100000):
            g = torch.full((20000,), float(r))
            w.write_round(r, global_vector=g, client_updates={{c: (g + c, c) for c in range(4)}},
                          metrics={{"r": r}}, state={{"s": g[:10]}})
        """
    )
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=repo, env=env)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.4)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    w = RunWriter.resume(path)
    k = w.completed_rounds
    assert k >= 1
    run = RunDir(path)
    assert torch.equal(run.global_vector(k), torch.full((20000,), float(k)))
    assert [m["r"] for m in run.metrics()] == list(range(1, k + 1))
    w.write_round(k + 1, global_vector=torch.zeros(20000))
    report = RunDir(path).verify()
    assert report.untracked == () and report.incomplete == ()


def test_metrics_accept_int_keys_like_client_updates(tmp_path):
    """Per-client metrics keyed by the same int ids as client_updates are written with str keys."""
    w = RunWriter.create(tmp_path / "run", config={}, layout={"shapes": [[2]]}, seeds={})
    w.write_initial(torch.zeros(2))
    w.write_round(1, global_vector=torch.ones(2), client_updates={0: (torch.ones(2), 3), 7: (torch.ones(2), 4)},
                  metrics={"client_loss": {0: 0.5, np.int64(7): 0.25}, 3: [{1: "x"}]})
    run = RunDir(tmp_path / "run")
    run.verify()
    assert run.metrics()[0]["client_loss"] == {"0": 0.5, "7": 0.25}
    assert run.metrics()[0]["3"] == [{"1": "x"}]
    with pytest.raises(RunDirError, match="collide"):
        w.write_round(2, global_vector=torch.ones(2), metrics={"per_client": {0: 1.0, "0": 2.0}})
    with pytest.raises(RunDirError, match="non-str key"):
        w.write_round(2, global_vector=torch.ones(2), metrics={(1, 2): 1.0})
    assert w.completed_rounds == 1


def test_check_client_records_against_the_manifest_fingerprints(tmp_path):
    """The one check every audit that rebuilds a run's client records uses."""
    from datasets import Dataset

    from trustfl.data import fingerprint_dataset
    from trustfl.rundir import RecordsMismatchError, RunDir, RunWriter

    train = Dataset.from_dict({"text": ["a b", "c d"], "label": [0, 1]})
    holdout = Dataset.from_dict({"text": ["e f"], "label": [1]})
    layout = {"names": ["w"], "shapes": [[2]], "dtype": "float32"}
    RunWriter.create(tmp_path / "none", config={"data": {"name": "x"}}, seeds={"global": 0}, layout=layout)
    assert RunDir(tmp_path / "none").check_client_records({0: (train, holdout)}) is False  # nothing recorded
    prints = {"client_0_train": fingerprint_dataset(train), "client_0_holdout": fingerprint_dataset(holdout)}
    RunWriter.create(tmp_path / "run", config={"data": {"name": "x"}}, seeds={"global": 0}, layout=layout,
                     fingerprints=prints)
    run = RunDir(tmp_path / "run")
    assert run.check_client_records({0: (train, holdout)}) is True
    with pytest.raises(RecordsMismatchError, match="client 0's holdout records .* do not match .*'x'"):
        run.check_client_records({0: (train, Dataset.from_dict({"text": ["e g"], "label": [1]}))})
    with pytest.raises(RecordsMismatchError, match="no fingerprint client_1_train"):
        run.check_client_records({0: (train, holdout), 1: (train, holdout)})
