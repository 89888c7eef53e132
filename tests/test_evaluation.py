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


# ---------------------------------------------------------------------------- issue 16: grids and reports
def _iid(tmp_path, model_dir, grid: str, scheme: str = "iid") -> Path:
    text = _matrix(tmp_path, model_dir).read_text().replace("[base.partition]\n",
                                                             f'[base.partition]\nscheme = "{scheme}"\n')
    text = text.replace("[grid]\nfractions = [0.2, 0.4]\n", f"[grid]\nfractions = [0.2, 0.4]\n{grid}\n")
    path = tmp_path / f"{scheme}.toml"
    path.write_text(text)
    return path


def test_iid_partition_has_no_alpha_axis(tmp_path, tiny_bert_dir):
    for grid in ("", "alphas = []"):
        spec = load_matrix(_iid(tmp_path, tiny_bert_dir, grid))
        assert spec.alphas == [None]
        cells = spec.cells()
        assert len(cells) == 3 and all(c.alpha is None and "__a" not in c.cell_id for c in cells)
        cfg = cells[-1].run_config()
        assert cfg.partition.scheme == "iid" and cfg.partition.alpha is None
    with pytest.raises(ConfigError, match=r"grid\.alphas: only applies to base\.partition\.scheme = 'dirichlet', "
                                          r"not 'iid'"):
        load_matrix(_iid(tmp_path, tiny_bert_dir, "alphas = [0.5]"))
    # dirichlet: alphas unset or [] -> the base's alpha (default 0.5); given -> one axis value each
    spec = load_matrix(_iid(tmp_path, tiny_bert_dir, "alphas = []", scheme="dirichlet"))
    assert spec.alphas == [0.5] and spec.cells()[0].cell_id.endswith("__a0.5__s0")
    spec = load_matrix(_iid(tmp_path, tiny_bert_dir, "alphas = [0.1, 1.0]", scheme="dirichlet"))
    assert [c.run_config().partition.alpha for c in spec.cells()[:2]] == [0.1, 1.0]
    with pytest.raises(ConfigError, match=r"grid\.alphas: need values > 0"):
        load_matrix(_iid(tmp_path, tiny_bert_dir, "alphas = [0.0]", scheme="dirichlet"))


def _rows() -> list[dict]:
    """A grid whose model never leaves the majority class (83.3 %), as in issue 16, plus Multi-Krum catching
    the scaling attacker every round."""
    common = {"status": "ok", "alpha": None, "seed": 0, "baseline_accuracy": 0.8333, "majority_label": 0,
              "majority_class": "ham", "accuracy": 0.8333, "best_accuracy": 0.8333, "macro_f1": 0.4545}
    rows = []
    for defense, (prec, rec) in (("fedavg", (None, 0.0)), ("multi_krum", (1.0, 1.0))):
        rows.append({**common, "cell": f"none__{defense}", "attack": "none", "defense": defense, "fraction": 0.0,
                     "asr": None, "attack_target": None, "flag_precision": None if defense == "fedavg" else 0.0,
                     "flag_recall": None})
        rows.append({**common, "cell": f"bd__{defense}", "attack": "backdoor+scaling", "defense": defense,
                     "fraction": 0.2, "asr": 1.0, "attack_target": 0, "flag_precision": prec, "flag_recall": rec,
                     "detection": {"tp": 2, "fp": 0, "fn": 0, "tn": 8}})
    return rows


def test_report_shows_baseline_f1_detection_and_warns(tmp_path):
    from trustfl.evaluation import markdown_table

    rows = _rows()
    md = markdown_table(rows, ["none", "backdoor+scaling"], ["fedavg", "multi_krum"], 0.2, None, "iid")
    assert "partition iid (no alpha)" in md and "Majority-class baseline" in md and "83.3 %" in md
    assert "| backdoor+scaling | 83.3 ≤b / 100.0 t | 83.3 ≤b / 100.0 t |" in md
    assert "Macro-F1 %" in md and "| none | 45.5 | 45.5 |" in md
    assert "| backdoor+scaling | – / 0.0 | 100.0 / 100.0 |" in md  # multi-krum caught the attacker
    assert "WARNING: 4 of 4 cells never beat the majority-class baseline (every cell)" in md
    assert "WARNING: attack 'backdoor+scaling' targets class 0 (ham), the majority class" in md
    # a model that learnt: no warnings, no marks
    good = [{**r, "accuracy": 0.95, "best_accuracy": 0.96, "attack_target": 1 if r["attack_target"] is not None
             else None} for r in rows]
    md = markdown_table(good, ["none", "backdoor+scaling"], ["fedavg", "multi_krum"], 0.2, None, "iid")
    assert "WARNING" not in md and " ≤b /" not in md and "0 t |" not in md and "| 95.0 / 100.0 |" in md
    paths = write_report(rows, tmp_path / "out", attacks=["none", "backdoor+scaling"],
                         defenses=["fedavg", "multi_krum"], fractions=[0.2], alphas=[None], scheme="iid")
    for metric in ("accuracy", "asr", "macro_f1", "flag_precision", "flag_recall"):
        assert paths[f"{metric}_f0.2"].read_bytes()[:4] == b"\x89PNG"
    assert "never beat the majority-class baseline" in paths["md"].read_text()
    header = paths["csv"].read_text().splitlines()[0]
    assert "baseline_accuracy" in header and "attack_target" in header


def _doc_matrix() -> str:
    text = (ROOT / "docs" / "eval.md").read_text()
    return text.split("```toml\n", 1)[1].split("```", 1)[0]


def test_docs_minimal_matrix_parses_and_runs(tmp_path, tiny_bert_dir, capsys):
    """docs/eval.md's minimal matrix: parsed as written, then run through `trustfl eval` with a tiny model."""
    from trustfl.cli import main

    (tmp_path / "minimal_matrix.toml").write_text(_doc_matrix())
    spec = load_matrix(tmp_path / "minimal_matrix.toml")
    assert spec.scheme == "iid" and spec.alphas == [None] and len(spec.cells()) == 4
    assert {c.cell_id for c in spec.cells()} >= {"backdoor__fedavg__f0.2__s0", "none__median__f0__s0"}
    text = _doc_matrix().replace('name = "minilm"', f'name = "{tiny_bert_dir}"').replace("max_records = 400",
                                                                                          "max_records = 120")
    text = text.replace("rounds = 2", "rounds = 1").replace("max_steps = 3", "max_steps = 1")
    (tmp_path / "tiny.toml").write_text(text)
    out = tmp_path / "out"
    assert main(["eval", str(tmp_path / "tiny.toml"), "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "iid partition" in printed and "Majority-class baseline" in printed and "Macro-F1" in printed
    row = json.loads((out / "cells" / "backdoor__fedavg__f0.2__s0" / "result.json").read_text())
    assert row["status"] == "ok" and row["alpha"] is None and row["attack_target"] == 1
    assert row["majority_label"] == 0 and row["best_accuracy"] is not None
    assert (out / "heatmap_macro_f1_f0.2.png").is_file()
    # the documented verify command: the cell folder is not a run directory, its run/ is
    cell = out / "cells" / "backdoor__fedavg__f0.2__s0"
    assert main(["verify", str(cell)]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory" in err and f"did you mean {cell / 'run'}?" in err and "corrupt" not in err
    assert main(["verify", str(cell / "run")]) == 0
    assert main(["verify", str(out)]) == 2
    assert "did you mean one of" in capsys.readouterr().err
