"""`trustfl demo`: the main job's packaged config runs end to end (training, then the audit) and prints the summary."""

from __future__ import annotations

from pathlib import Path

from trustfl.cli import demo_config_path, main
from trustfl.config import load_config


def test_demo_config_is_packaged_and_valid():
    path = demo_config_path()
    assert path.is_file() and path.name == "demo.toml"
    cfg = load_config(path)
    assert cfg.attack.attackers == [3] and cfg.privacy.sample is not None
    assert cfg.federation.save_client_updates  # the audit needs the stored updates
    assert "trustfl demo" in (Path(__file__).resolve().parents[1] / "Makefile").read_text()


def test_demo_runs_training_and_audit_on_a_tiny_model(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--quiet", "--set", f"model.name={tiny_bert_dir}",
                 "--set", "data.max_records=240", "--set", "federation.rounds=1", "--set", "client.epochs=1",
                 "--set", "client.batch_size=16"])
    printed = capsys.readouterr().out
    assert code == 0
    for row in ("clean accuracy", "backdoor attack success", "sample-level DP", "clients the defense rejected",
                "top contributors", "audit: integrity", "audit: robustness", "audit: contribution", "report"):
        assert row in printed, row
    assert (out / "audit" / "report.html").is_file() and (out / "audit" / "report.json").is_file()
