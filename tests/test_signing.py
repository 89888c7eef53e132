"""Run-directory integrity beyond file hashes: Ed25519 signatures, the round hash chain, deterministic bytes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trustfl.rundir import (
    CorruptRunError,
    RunDir,
    RunWriter,
    SignatureError,
    SigningKeyError,
    UnsignedRunError,
    generate_key,
    key_id,
    load_public_key,
    verify_signature,
)
from trustfl.rundir.atomic import sha256_bytes
from trustfl.rundir.errors import RunDirExistsError, cli_advice

LAYOUT = {"names": ["w"], "shapes": [[6]], "dtype": "float32"}
CONFIG = {"name": "s", "federation": {"rounds": 3}, "client": {"lr": 0.1}}


def vec(seed: int) -> torch.Tensor:
    return torch.randn(6, generator=torch.Generator().manual_seed(seed))


def make_run(path: Path, rounds: int = 3, signing_key=None) -> RunWriter:
    w = RunWriter.create(path, config=CONFIG, layout=LAYOUT, seeds={"seed": 0}, signing_key=signing_key)
    w.write_initial(vec(0))
    for r in range(1, rounds + 1):
        w.write_round(r, global_vector=vec(r), client_updates={0: (vec(10 + r), 4), 1: (vec(20 + r), 5)},
                      metrics={"loss": 1.0 / r}, state={"m": vec(30 + r)})
    return w


@pytest.fixture
def keys(tmp_path):
    return generate_key(_keydir(tmp_path) / "op.key")  # outside every run directory


def _keydir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    d.mkdir(exist_ok=True)
    return d


def edit_manifest(path: Path, fn) -> None:
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m, indent=2))


# ------------------------------------------------------------------------------------------- keys
def test_keygen_writes_a_private_key_0600_and_a_pub_beside_it(tmp_path, keys):
    private, public = keys
    assert public == private.with_name("op.key.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    assert key_id(load_public_key(public)).startswith("ed25519:")
    with pytest.raises(SigningKeyError, match="already exists"):
        generate_key(private)


def test_private_key_inside_the_run_directory_or_readable_by_others_is_refused(tmp_path, keys):
    private, _ = keys
    run = tmp_path / "run"
    run.mkdir()
    inside = run / "op.key"
    inside.write_bytes(private.read_bytes())
    with pytest.raises(SigningKeyError, match="inside the run directory"):
        RunWriter.create(run, config=CONFIG, layout=LAYOUT, seeds={}, signing_key=inside)
    assert not (run / "manifest.json").exists()
    os.chmod(private, 0o644)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        RunWriter.create(tmp_path / "r2", config=CONFIG, layout=LAYOUT, seeds={}, signing_key=private)
    with pytest.raises(SigningKeyError, match="does not exist"):
        RunWriter.create(tmp_path / "r3", config=CONFIG, layout=LAYOUT, seeds={}, signing_key=tmp_path / "nope")


# ------------------------------------------------------------------------------------- signatures
def test_signed_run_verifies_with_the_operators_key_and_never_stores_the_private_key(tmp_path, keys):
    private, public = keys
    make_run(tmp_path / "run", signing_key=private)
    report = RunDir(tmp_path / "run").verify(public_key=public)
    assert report.signed_by == key_id(load_public_key(public)) and report.signature_trusted
    assert "verified with the given key" in str(report)
    assert verify_signature(tmp_path / "run", public) == report.signed_by
    secret = private.read_bytes().split(b"\n")[1]
    for p in (tmp_path / "run").rglob("*"):
        assert not p.is_file() or secret not in p.read_bytes()
    # without a key the signature is still checked for consistency (against the key it records)
    report = RunDir(tmp_path / "run").verify()
    assert report.signed_by and not report.signature_trusted


def test_tampered_config_fails_verify_with_key_naming_it(tmp_path, keys):
    private, public = keys
    make_run(tmp_path / "run", signing_key=private)
    edit_manifest(tmp_path / "run", lambda m: m["config"]["client"].update(lr=10.0))
    with pytest.raises(SignatureError) as info:
        RunDir(tmp_path / "run").verify(public_key=public)
    assert ("manifest.json config", f"field was modified after signing (signed by {key_id(load_public_key(public))})") \
        in info.value.problems
    with pytest.raises(SignatureError, match="manifest.json config: field was modified"):
        verify_signature(tmp_path / "run", public)
    # resuming it with the key refuses too: the tampered config would drive the rest of the run
    with pytest.raises(SignatureError, match="config"):
        RunWriter.resume(tmp_path / "run", signing_key=private)


def test_swapped_global_with_updated_sha256_fails(tmp_path, keys):
    private, public = keys
    make_run(tmp_path / "run", signing_key=private)
    run = tmp_path / "run"
    # the attacker writes another global (valid safetensors, right metadata) and records its sha256
    forged = RunWriter.create(tmp_path / "forge", config=CONFIG, layout=LAYOUT, seeds={"seed": 0})
    forged.write_initial(vec(0))
    forged.write_round(1, global_vector=vec(1))
    forged.write_round(2, global_vector=vec(2))
    forged.write_round(3, global_vector=torch.zeros(6))
    data = (tmp_path / "forge" / "globals" / "round_0003.safetensors").read_bytes()
    (run / "globals" / "round_0003.safetensors").write_bytes(data)
    edit_manifest(run, lambda m: m["files"].update({"globals/round_0003.safetensors": sha256_bytes(data)}))
    with pytest.raises(SignatureError) as info:
        RunDir(run).verify(public_key=public)
    where = dict(info.value.problems)
    assert "manifest.json files" in where
    assert "the file was replaced after round 3" in where["globals/round_0003.safetensors"]
    # also rewriting the round record's hash moves the break into the signed history
    edit_manifest(run, lambda m: m["rounds"][3]["sha256"].update({"globals/round_0003.safetensors": sha256_bytes(data)}))
    with pytest.raises(SignatureError) as info:
        RunDir(run).verify(public_key=public)
    assert {"manifest.json files", "manifest.json rounds"} <= set(dict(info.value.problems))


def test_run_resigned_by_another_key_fails_against_the_trusted_key(tmp_path, keys):
    private, public = keys
    make_run(tmp_path / "run", signing_key=private)
    other, _ = generate_key(_keydir(tmp_path) / "mallory.key")
    from trustfl.rundir.signing import load_private_key, sign_manifest

    edit_manifest(tmp_path / "run", lambda m: (m["extra"].update(note="evil"),
                                               sign_manifest(m, load_private_key(other))))
    RunDir(tmp_path / "run").verify()  # self-consistent: anyone can sign with their own key ...
    with pytest.raises(SignatureError, match="not by the given key"):  # ... but not with the operator's
        RunDir(tmp_path / "run").verify(public_key=public)


def test_unsigned_runs_verify_as_before_and_verify_with_key_says_unsigned(tmp_path, keys):
    _, public = keys
    make_run(tmp_path / "run")
    report = RunDir(tmp_path / "run").verify()
    assert report.signed_by is None and "unsigned" in str(report)
    with pytest.raises(UnsignedRunError, match="is unsigned"):
        RunDir(tmp_path / "run").verify(public_key=public)
    with pytest.raises(UnsignedRunError, match="is unsigned"):
        verify_signature(tmp_path / "run", public)
    # a run written before the hash chain existed still verifies
    edit_manifest(tmp_path / "run", lambda m: [(r.pop("prev"), r.pop("sha256")) for r in m["rounds"]])
    RunDir(tmp_path / "run").verify()
    RunWriter.resume(tmp_path / "run").write_round(4, global_vector=vec(4))
    assert "prev" not in RunDir(tmp_path / "run").manifest["rounds"][4]


# ------------------------------------------------------------------------------------- hash chain
def _drop_round_1(m):
    del m["rounds"][1]
    for r, rec in enumerate(m["rounds"]):
        rec["round"] = r
    m["completed_rounds"] -= 1


def _swap_rounds_1_2(m):
    m["rounds"][1], m["rounds"][2] = m["rounds"][2], m["rounds"][1]
    m["rounds"][1]["round"], m["rounds"][2]["round"] = 1, 2


@pytest.mark.parametrize("tamper, broken", [(_drop_round_1, 1), (_swap_rounds_1_2, 1)])
def test_dropped_or_reordered_round_breaks_the_chain(tmp_path, tamper, broken):
    make_run(tmp_path / "run")
    edit_manifest(tmp_path / "run", tamper)
    with pytest.raises(CorruptRunError) as info:
        RunDir(tmp_path / "run").verify()
    reasons = dict(info.value.problems)
    assert "hash chain broken" in reasons[f"manifest.json rounds[{broken}]"]


def test_chain_links_each_round_to_the_previous_record(tmp_path):
    from trustfl.rundir.signing import genesis_hash, record_hash

    m = make_run(tmp_path / "run").manifest
    assert m["rounds"][0]["prev"] == genesis_hash(m)
    for r in range(1, 4):
        assert m["rounds"][r]["prev"] == record_hash(m["rounds"][r - 1])
        assert m["rounds"][r]["sha256"][f"globals/round_{r:04d}.safetensors"] == \
            m["files"][f"globals/round_{r:04d}.safetensors"]


# ----------------------------------------------------------------------------------------- resume
def test_resume_of_a_signed_run_needs_its_key_and_resigns_each_commit(tmp_path, keys):
    private, public = keys
    make_run(tmp_path / "run", rounds=2, signing_key=private)
    with pytest.raises(SigningKeyError, match="is signed by ed25519:.*pass signing_key="):
        RunWriter.resume(tmp_path / "run")
    with cli_advice(), pytest.raises(SigningKeyError, match="pass --sign-key FILE"):
        RunWriter.resume(tmp_path / "run")
    other, _ = generate_key(_keydir(tmp_path) / "other.key")
    with pytest.raises(SigningKeyError, match="not by the given key"):
        RunWriter.resume(tmp_path / "run", signing_key=other)
    w = RunWriter.resume(tmp_path / "run", signing_key=private)
    w.write_round(3, global_vector=vec(3))
    w.update_extra(note="x")
    assert RunDir(tmp_path / "run").verify(public_key=public).completed_rounds == 3
    make_run(tmp_path / "plain", rounds=1)
    with pytest.raises(SigningKeyError, match="is unsigned"):
        RunWriter.resume(tmp_path / "plain", signing_key=private)


# ----------------------------------------------------------------------------------- CLI advice
def test_errors_give_cli_flags_under_the_cli_and_library_calls_otherwise(tmp_path):
    make_run(tmp_path / "run", rounds=1)
    with pytest.raises(RunDirExistsError) as lib:
        RunWriter.create(tmp_path / "run", config=CONFIG, layout=LAYOUT, seeds={})
    assert "overwrite=True" in str(lib.value) and "RunWriter.resume" in str(lib.value)
    with cli_advice(), pytest.raises(RunDirExistsError) as cli:
        RunWriter.create(tmp_path / "run", config=CONFIG, layout=LAYOUT, seeds={})
    assert "--overwrite" in str(cli.value) and "--resume" in str(cli.value)
    assert "overwrite=True" not in str(cli.value) and "RunWriter" not in str(cli.value)
    from trustfl.rundir import ConfigMismatchError

    given = {**CONFIG, "federation": {"rounds": 4}, "client": {"lr": 0.1, "note": "x" * 300}}
    with cli_advice(), pytest.raises(ConfigMismatchError) as diff:
        RunWriter.resume(tmp_path / "run", config=given)
    msg = str(diff.value)
    assert "federation.rounds: recorded 3, given 4" in msg and "config=None" not in msg and "--out" in msg
    assert f"client.note: not in the recorded config, given \"{'x' * 300}\"" in msg  # not cut at 120 characters


# ---------------------------------------------------------------------------------- determinism
_WRITE = """
import sys, torch
from trustfl.rundir import RunWriter
w = RunWriter.create(sys.argv[1], config={"a": 1}, layout={"shapes": [[4]]}, seeds={"seed": 0})
w.write_initial(torch.arange(4.0))
w.write_round(1, global_vector=torch.ones(4), client_updates={3: (torch.ones(4), 7), "bob": (torch.zeros(4), 2)},
              state={"m": torch.ones(2), "step": torch.tensor([1])})
"""


def test_same_run_in_two_processes_gives_identical_file_bytes(tmp_path):
    files = []
    for seed, name in (("1", "a"), ("2", "b")):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", _WRITE, str(tmp_path / name)], check=True, env=env)
        files.append(json.loads((tmp_path / name / "manifest.json").read_text())["files"])
    assert files[0] == files[1] and len(files[0]) == 6
