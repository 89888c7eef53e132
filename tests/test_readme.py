"""The README's library code blocks run as written (on a tiny model, substituted in, for speed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _library_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Library")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def _substitute(code: str, old: str, new: str) -> str:
    assert code.count(old) == 1, f"README block no longer contains {old!r}; update this test with it"
    return code.replace(old, new)


def test_readme_starts_with_the_two_make_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[:4] == ["# trustfl", "", "```bash", "make demo    # creates .venv, installs everything "
                         "(offline-capable), runs the main job: trustfl demo"]
    assert lines[4].startswith("make test ")


def test_library_section_has_both_blocks():
    blocks = _library_blocks()
    assert len(blocks) == 2
    assert "Federation(" in blocks[0] and "make_private(" in blocks[1] and "RunWriter.create(" in blocks[1]


def test_ten_line_block_runs(tiny_bert_dir, tmp_path, monkeypatch):
    code = _substitute(_library_blocks()[0], 'load_config("examples/quickstart.toml")',
                       "load_config(QUICKSTART, OVERRIDES)")
    monkeypatch.chdir(tmp_path)
    overrides = {"model.name": tiny_bert_dir, "data.max_records": 200, "federation.rounds": 1,
                 "partition.num_clients": 4, "client.max_steps": 2}
    exec(compile(code, "README.md[library block 1]", "exec"),
         {"QUICKSTART": str(REPO / "examples" / "quickstart.toml"), "OVERRIDES": overrides})
    assert (tmp_path / "runs" / "qs" / "manifest.json").exists()


def test_your_own_loop_block_runs(tiny_bert_dir, tmp_path, monkeypatch):
    from trustfl.rundir import RunDir

    code = _substitute(_library_blocks()[1], 'load_fm("minilm"', "load_fm(TINY")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md[library block 2]", "exec"), {"TINY": tiny_bert_dir})
    run = RunDir(tmp_path / "runs" / "own_loop")
    assert run.verify().completed_rounds == 2
    last = run.metrics()[-1]
    assert sorted(last["epsilon"]) == ["0", "1", "2", "3", "4"]  # int client ids, stored as str
    assert max(last["epsilon"].values()) <= 8.0 + 1e-6
    assert min(m["epsilon"]["0"] for m in run.metrics()) < last["epsilon"]["0"]  # accumulates across rounds
    assert run.client_update(2, 0)[1] == 50


@pytest.mark.parametrize("name", ["load_fm", "resolve_model_path"])
def test_readme_names_the_model_loader(name):
    assert f"`{name}" in README.read_text(encoding="utf-8")
