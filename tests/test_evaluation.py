"""`trustfl eval`: matrix spec validation, cell expansion, resumable runs, reports, Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trustfl.errors import ConfigError
from trustfl.evaluation import load_matrix, run_matrix, write_report

ROOT = Path(__file__).resolve().parents[1]


def _matrix(tmp_path, model_dir, extra: str = "") -> Path:
    path = tmp_path / "m.toml"
    path.write_text(f"""
name = "t"
[base]
[base.model]
name = "{model_dir}"
max_length = 16
[base.lora]
r = 2
top_layers = 1
[base.data]
name = "sms_spam"
max_records = 150
[base.partition]
num_clients = 5
[base.client]
max_steps = 1
[base.federation]
rounds = 1
[[attacks]]
label = "none"
[[attacks]]
label = "backdoor"
data = {{name = "backdoor", target = 1}}
[[defenses]]
label = "fedavg"
[grid]
fractions = [0.2, 0.4]
{extra}
""")
    return path


def test_cells_expand_with_one_no_attack_row_per_defense(tmp_path, tiny_bert_dir):
    spec = load_matrix(_matrix(tmp_path, tiny_bert_dir))
    cells = spec.cells()
    assert len(cells) == 3  # none x 1 + backdoor x 2 fractions
    assert len({c.cell_id for c in cells}) == 3
    cfg = cells[-1].run_config()
    assert cfg.attack.fraction == 0.4 and cfg.attack.data["name"] == "backdoor" and cfg.name == cells[-1].cell_id


def test_bad_matrices_are_named(tmp_path, tiny_bert_dir):
    with pytest.raises(ConfigError, match="does not exist"):
        load_matrix(tmp_path / "missing.toml")
    bad = _matrix(tmp_path, tiny_bert_dir).read_text().replace('label = "backdoor"\ndata = {name = "backdoor"',
                                                                 'label = "backdoor"\ndata = {name = "bckdoor"')
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ConfigError, match=r"cell backdoor__fedavg__f0\.2.*unknown data attack 'bckdoor'"):
        load_matrix(tmp_path / "bad.toml")
    dup = _matrix(tmp_path, tiny_bert_dir).read_text() + '\n[[defenses]]\nlabel = "fedavg"\n'
    (tmp_path / "dup.toml").write_text(dup)
    with pytest.raises(ConfigError, match=r"defenses: duplicate labels \['fedavg'\]"):
        load_matrix(tmp_path / "dup.toml")


def test_run_is_resumable_and_reports(tmp_path, tiny_bert_dir):
    spec = load_matrix(_matrix(tmp_path, tiny_bert_dir))
    seen: list[str] = []
    rows = run_matrix(spec, tmp_path / "out", workers=1, progress=False, on_row=lambda r: seen.append(r["cell"]))
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows), rows
    assert rows[0]["asr"] is None and rows[1]["asr"] is not None
    # a finished cell is skipped; a torn result file is rerun
    (tmp_path / "out" / "cells" / rows[1]["cell"] / "result.json").write_text("{torn")
    seen.clear()
    again = run_matrix(spec, tmp_path / "out", workers=1, progress=False, on_row=lambda r: seen.append(r["cell"]))
    assert seen == [rows[1]["cell"]]
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]  # same seed, same result
    paths = write_report(again, tmp_path / "out", attacks=["none", "backdoor"], defenses=["fedavg"],
                         fractions=[0.2, 0.4], alphas=[0.5])
    assert paths["accuracy_f0.2_a0.5"].read_bytes()[:4] == b"\x89PNG"
    md = paths["md"].read_text()
    assert "| backdoor |" in md and "| none |" in md
    csv_lines = paths["csv"].read_text().strip().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("cell,attack,defense")
    assert len(json.loads(paths["json"].read_text())) == 3


def test_parallel_workers_match_sequential(tmp_path, tiny_bert_dir):
    spec = load_matrix(_matrix(tmp_path, tiny_bert_dir))
    seq = run_matrix(spec, tmp_path / "seq", workers=1, progress=False)
    spec.threads_per_worker = None
    par = run_matrix(spec, tmp_path / "par", workers=2, progress=False)
    assert [r["cell"] for r in par] == [r["cell"] for r in seq]
    assert all(r["status"] == "ok" for r in par)


@pytest.mark.integration
def test_ray_backend(tmp_path, tiny_bert_dir):
    spec = load_matrix(_matrix(tmp_path, tiny_bert_dir))
    rows = run_matrix(spec, tmp_path / "ray", ray_address="local", progress=False)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows), rows
