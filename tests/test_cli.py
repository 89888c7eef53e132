"""The command line: help lists the commands, runs print a summary, errors are clear, corrupt runs are named."""

from __future__ import annotations

import json
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
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" in err and "overwrite=True" not in err and "RunWriter" not in err
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
    capsys.readouterr()
    # resuming with another config names every differing leaf key in full, with CLI advice
    assert main(["run", str(cfg), "--out", str(out), "-q", "--set", "federation.rounds=3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "federation.rounds: recorded 2, given 3" in err and "config=None" not in err and "--out" in err


# ---------------------------------------------------------------------- clean errors: one line, no traceback
@pytest.mark.parametrize("files, argv_tail, expected", [
    ({"c.toml": "seed = 0\n"}, ["--set", "seed.x=3"], "--set seed.x: seed is 0, not a table"),
    ({"c.yaml": 'seed: !!python/object/apply:os.system ["echo pwned"]\n'}, [], "!!python/object/apply:os.system is refused"),
    ({"c.yaml": "name: x\n  federation: [1,\n"}, [], "is not valid YAML: line 2"),
    ({"c.toml": b'name = "\xff"\n'}, [], "is not UTF-8 text"),
    ({"c.toml/": None}, [], "is a directory"),
    ({"c.toml": 'name = "../../x"\n'}, [], "name: must be a simple file name"),
    ({"c.toml": "[client]\nlr = nan\n"}, [], "client.lr: must be a finite number, got nan"),
    ({"c.toml": '[server]\naggregator = "krum"\naggregator_options = {f = 3}\n'}, [],
     "server.aggregator: krum: Byzantine tolerance violated"),
])
def test_config_mistakes_exit_2_with_one_line(tmp_path, capsys, files, argv_tail, expected):
    (name, content), = files.items()
    path = tmp_path / name.rstrip("/")
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), *argv_tail]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def _signed_run(path: Path, key: Path) -> None:
    import torch

    from trustfl.rundir import RunWriter

    w = RunWriter.create(path, config={"name": "x", "federation": {"rounds": 1}}, layout={"shapes": [[3]]},
                         seeds={"seed": 0}, signing_key=key)
    w.write_initial(torch.zeros(3))
    w.write_round(1, global_vector=torch.ones(3))


def test_keygen_then_verify_key(tmp_path, capsys):
    key = tmp_path / "op.key"
    assert main(["keygen", "--out", str(key)]) == 0
    out = capsys.readouterr().out
    assert str(key) in out and f"{key}.pub" in out and "ed25519:" in out
    assert main(["keygen", "--out", str(key)]) == 2 and "already exists" in capsys.readouterr().err
    run = tmp_path / "run"
    _signed_run(run, key)
    assert main(["verify", str(run), "--key", f"{key}.pub"]) == 0
    assert "verified with the given key" in capsys.readouterr().out
    # edit the recorded config: verify --key fails naming it
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["federation"]["rounds"] = 5
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(run), "--key", f"{key}.pub"]) == 2
    assert "manifest.json config: field was modified after signing" in capsys.readouterr().err


def test_verify_key_on_an_unsigned_run_says_unsigned(tmp_path, capsys):
    import torch

    from trustfl.rundir import RunWriter

    assert main(["keygen", "--out", str(tmp_path / "op.key")]) == 0
    w = RunWriter.create(tmp_path / "run", config={}, layout={"shapes": [[3]]}, seeds={})
    w.write_initial(torch.zeros(3))
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "run")]) == 0 and "unsigned" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "run"), "--key", str(tmp_path / "op.key.pub")]) == 2
    err = capsys.readouterr().err
    assert "is unsigned" in err and "--sign-key FILE" in err and "signing_key=" not in err


def test_sign_key_problems_fail_before_the_run_starts(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nname = "/no/such/model"\n')  # never reached: the key is checked first
    out = tmp_path / "run"
    out.mkdir()
    (out / "op.key").write_text("x")
    assert main(["run", str(cfg), "--out", str(out), "--sign-key", str(out / "op.key")]) == 2
    assert "is inside the run directory" in capsys.readouterr().err
    key = tmp_path / "op.key"
    assert main(["keygen", "--out", str(key)]) == 0
    signed = tmp_path / "signed"
    _signed_run(signed, key)
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(signed), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "is signed by ed25519:" in err and "--sign-key FILE" in err and "signing_key" not in err


def test_signed_run_end_to_end(tmp_path, tiny_bert_dir, capsys):
    cfg = _tiny_config(tmp_path, tiny_bert_dir)
    key, out = tmp_path / "op.key", tmp_path / "run"
    assert main(["keygen", "--out", str(key)]) == 0
    assert main(["run", str(cfg), "--out", str(out), "-q", "--sign-key", str(key)]) == 0
    assert main(["verify", str(out), "--key", f"{key}.pub"]) == 0
    assert main(["run", str(cfg), "--out", str(out), "-q", "--resume", "--sign-key", str(key)]) == 0
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out), "-q", "--resume"]) == 2
    assert "--sign-key FILE" in capsys.readouterr().err
