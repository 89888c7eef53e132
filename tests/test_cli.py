"""The command line: help lists the commands, runs print a summary, errors are clear, corrupt runs are named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trustfl.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_commands():
    proc = subprocess.run([sys.executable, "-m", "trustfl.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ("run", "verify"):
        assert command in proc.stdout


def test_bad_config_exits_2_with_field_name(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[federation]\nrounds = 0\n")
    assert main(["run", str(cfg)]) == 2
    assert "federation.rounds: must be >= 1, got 0" in capsys.readouterr().err


def _tiny_config(tmp_path, model_dir) -> Path:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(f"""
name = "cli"
[model]
name = "{model_dir}"
max_length = 16
[lora]
r = 2
top_layers = 1
[data]
name = "sms_spam"
max_records = 120
[partition]
num_clients = 3
[client]
max_steps = 2
[federation]
rounds = 1
""")
    return cfg


def test_run_then_verify_then_tamper(tmp_path, tiny_bert_dir, capsys):
    cfg = _tiny_config(tmp_path, tiny_bert_dir)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "majority-class baseline" in printed and str(out.resolve()) in printed
    assert main(["verify", str(out)]) == 0
    # a second run into the same directory without --overwrite is refused, nothing is lost
    assert main(["run", str(cfg), "--out", str(out), "-q"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["verify", str(out)]) == 0
    # tamper with one update: verify names the file
    victim = sorted((out / "updates" / "round_0001").glob("*.safetensors"))[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert main(["verify", str(out)]) == 2
    assert victim.name in capsys.readouterr().err


def test_override_and_resume_complete_run(tmp_path, tiny_bert_dir, capsys):
    cfg = _tiny_config(tmp_path, tiny_bert_dir)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "-q", "--set", "federation.rounds=2"]) == 0
    capsys.readouterr()
    # resuming a finished run does nothing and succeeds
    assert main(["run", str(cfg), "--out", str(out), "-q", "--set", "federation.rounds=2", "--resume"]) == 0
    with pytest.raises(SystemExit):
        main(["run", str(cfg), "--set", "no_equals_sign"])
