"""examples/compose_your_own_loop.py runs end to end (tiny model) and leaves a verified run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "compose_your_own_loop.py"


def test_compose_your_own_loop_example_runs(tmp_path):
    from trustfl.rundir import RunDir

    out = tmp_path / "run"
    env = {**os.environ, "TRUSTFL_EXAMPLE_TINY": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--rounds", "2", "--records", "200", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round 2: accuracy" in proc.stdout and "verified" in proc.stdout
    assert "audit integrity: pass" in proc.stdout and "audit robustness:" in proc.stdout
    assert (out / "audit" / "report.html").is_file()
    run = RunDir(out)
    report = run.verify()
    assert report.completed_rounds == 2
    metrics = run.metrics()
    assert sorted(metrics[-1]["epsilon"]) == ["0", "1", "2", "3", "4"]  # int client ids in metrics
    for cid, eps in metrics[-1]["epsilon"].items():
        assert metrics[0]["epsilon"][cid] < eps <= 8.0 + 1e-6  # one accountant per client across rounds
    assert len(run.manifest["rounds"][2]["updates"]) == 5
    # Opacus's per-client warnings: explained once in the log, never printed raw
    assert proc.stderr.count("Secure RNG turned off") == 1 and "UserWarning" not in proc.stderr
