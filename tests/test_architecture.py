"""The architecture contract: one-way layers, cheap imports, plug-in config sections, run components,
an orchestrating loop without feature branches, and the silent failures the architecture issue listed."""

from __future__ import annotations


import ast
import os
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trustfl.config import RunConfig, load_config
from trustfl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(m for m in sys.modules if m.startswith('trustfl'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_importing_attacks_loads_no_loop_and_no_defense():
    loaded = _modules_after("import trustfl.attacks")
    assert "trustfl.federation.loop" not in loaded
    assert not {m for m in loaded if m.startswith("trustfl.defenses")}, loaded


def test_import_trustfl_is_cheap():
    loaded = _modules_after("import trustfl")
    assert loaded <= {"trustfl", "trustfl._version", "trustfl.lazy"}, loaded
    assert "torch" not in subprocess.run([sys.executable, "-c", "import trustfl, sys; print(list(sys.modules))"],
                                         capture_output=True, text=True, check=True).stdout


def test_types_layer_imports_nothing_else_of_trustfl():
    for path in (ROOT / "trustfl" / "types").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trustfl"):
                assert node.module.startswith("trustfl.types"), f"{path.name} imports {node.module}"


def test_core_never_imports_a_plugin():
    core = [p for p in (ROOT / "trustfl").rglob("*.py") if p.name != "cli.py"]
    for path in core:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not name.startswith(("trustfl.attacks", "trustfl.defenses", "trustfl.audits")), \
                    f"{path.relative_to(ROOT)} imports {name}"


def test_loop_is_an_orchestrator_without_probing():
    source = (ROOT / "trustfl" / "federation" / "loop.py").read_text()
    assert len(source.splitlines()) <= 200
    for banned in ("getattr(", "hasattr(", "privacy.enabled", "dedup", "attack"):
        if banned == "attack":  # metrics name the round's attackers; no attack-specific branch
            assert "update_attack" not in source and "data_attack" not in source
            continue
        assert banned not in source, banned
    for path in [ROOT / "defenses" / "pipeline.py", ROOT / "trustfl" / "federation" / "server.py"]:
        text = path.read_text()
        assert "getattr(" not in text and "hasattr(" not in text, path.name


# ---------------------------------------------------------------------- config sections from plug-ins
def _write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_plugin_sections_load_and_round_trip(tmp_path):
    cfg = load_config(_write(tmp_path, '[privacy.client]\nnoise_multiplier = 1.0\n'
                                       '[server]\naggregator_options = {weighted = false}\n'
                                       '[federation]\nsampling = "poisson"\n'  # client-level DP accounts Poisson
                                       '[dedup]\nenabled = true\n[attack]\nupdate = {name = "alie"}\nfraction = 0.25\n'))
    assert cfg.privacy.client.noise_multiplier == 1.0 and cfg.dedup.enabled and cfg.attack.fraction == 0.25
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()


def test_unknown_section_lists_plugin_sections(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['privcy'\].*'privacy'"):
        load_config(_write(tmp_path, "[privcy]\nx = 1\n"))


def test_plugin_section_field_errors_carry_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"^privacy\.client\.clip_norm: must be > 0"):
        load_config(_write(tmp_path, "[privacy.client]\nnoise_multiplier = 1.0\nclip_norm = -1\n"
                                     "[server]\naggregator_options = {weighted = false}\n"))
    with pytest.raises(ConfigError, match=r"^attack\.update: unknown update attack 'alei'"):
        load_config(_write(tmp_path, '[attack]\nupdate = {name = "alei"}\nfraction = 0.2\n'))
    with pytest.raises(ConfigError, match=r"^server: unknown aggregator 'krumm'"):
        load_config(_write(tmp_path, '[server]\naggregator = "krumm"\n'))


def test_yaml_syntax_error_is_one_clear_line(tmp_path):
    path = _write(tmp_path, "federation:\n  rounds: [1, 2\n", "c.yaml")
    with pytest.raises(ConfigError, match=r"is not valid YAML"):
        load_config(path)


def test_top_layers_with_explicit_layers_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^lora\.top_layers: set either top_layers \(2\) or an explicit layers"):
        load_config(_write(tmp_path, "[lora]\ntop_layers = 2\nlayers = [0, 1]\n"))


def test_fltrust_from_a_config_is_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"^server\.aggregator: 'fltrust' needs the server's root-data update"):
        load_config(_write(tmp_path, '[server]\naggregator = "fltrust"\n'))


def test_manifest_records_stage_configs_not_lossy_reprs(tiny_bert_dir, tmp_path):
    from trustfl.defenses import Bucketing, Pipeline, TrimmedMean
    from trustfl.federation import Federation
    from trustfl.rundir import RunDir

    cfg = RunConfig.from_dict({"model": {"name": tiny_bert_dir, "max_length": 16}, "lora": {"r": 2, "top_layers": 1},
                               "data": {"max_records": 120}, "partition": {"num_clients": 4},
                               "client": {"max_steps": 1}, "federation": {"rounds": 1}})
    pipe = Pipeline(pre=[Bucketing(s=2, seed=7)], aggregator=TrimmedMean(f=0, flag_above=0.3))
    Federation(cfg, out_dir=tmp_path / "r", pipeline=pipe, progress=False).run()
    recorded = RunDir(tmp_path / "r").manifest["extra"]["pipeline_config"]
    text = json.dumps(recorded)
    assert '"seed": 7' in text and '"flag_above": 0.3' in text


# ---------------------------------------------------------------------- trustfl eval: failures are not success
def test_eval_exits_nonzero_and_separates_refusals_from_crashes(tmp_path, tiny_bert_dir, monkeypatch):
    from trustfl.evaluation import runner

    base = {"model": {"name": tiny_bert_dir, "max_length": 16}, "data": {"max_records": 60},
            "partition": {"num_clients": 3}, "client": {"max_steps": 1}, "federation": {"rounds": 1}}
    refused = runner.run_cell({**base, "server": {"aggregator": "krum", "aggregator_options": {"f": 5}}}, {},
                              str(tmp_path / "refused"))
    # impossible Byzantine settings are refused at config load (a ConfigError naming the field), before any data
    assert refused["status"] == "error" and "server.aggregator: krum: Byzantine tolerance violated" in refused["error"]

    def boom(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr("trustfl.federation.loop.Federation.run", boom)
    crashed = runner.run_cell(base, {}, str(tmp_path / "crashed"))
    assert crashed["status"] == "crashed" and "KeyError" in crashed["traceback"]


def test_plugin_folders_live_only_at_the_root():
    """attacks/, defenses/, audits/ sit at the repository root (DESIGN.md); no copy or link under trustfl/."""
    for name in ("attacks", "defenses", "audits"):
        assert (ROOT / name / "__init__.py").is_file(), name
        assert not os.path.lexists(ROOT / "trustfl" / name), f"trustfl/{name} must not exist (copy or link)"
