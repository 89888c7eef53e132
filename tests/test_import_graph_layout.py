"""`lint-imports` run from the repository root checks the contracts on the working tree, plug-ins included
(devtools/import_graph_layout.py), and the hook stays out of every other Python process."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
HOOK = ROOT / "devtools" / "import_graph_layout.py"

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="lint-imports is installed by `make install`")


def _lint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_plain_lint_imports_from_the_root_keeps_every_contract():
    done = _lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 kept, 0 broken" in done.stdout


def test_plugins_are_in_the_graph_a_planted_violation_is_caught(tmp_path):
    """audits import defenses (allowed): a contract forbidding it must break, so trustfl.audits and
    trustfl.defenses were analysed from attacks/, defenses/, audits/ at the root."""
    config = tmp_path / "planted.ini"
    config.write_text(textwrap.dedent("""
        [importlinter]
        root_packages =
            trustfl
        [importlinter:contract:planted]
        name = planted: audits never import defenses
        type = forbidden
        source_modules =
            trustfl.audits
        forbidden_modules =
            trustfl.defenses
    """))
    done = _lint("--config", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BROKEN" in done.stdout and "trustfl.audits." in done.stdout and "trustfl.defenses" in done.stdout


def test_new_module_in_a_plugin_is_seen_without_reinstalling(tmp_path):
    """The link tree is rebuilt on every run: a module added to defenses/ that imports the CLI breaks a
    contract at once (no stale copy). Done on a copy of the sources, never in the working tree."""
    for name in ("trustfl", "attacks", "defenses", "audits", "devtools"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", ".importlinter"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "defenses" / "planted.py").write_text("import trustfl.cli\n")
    run = (f"import runpy, sys; runpy.run_path({str(tmp_path / 'devtools' / HOOK.name)!r})['install'](); "
           "sys.argv = ['lint-imports', '--no-cache']; "
           "from importlinter.cli import lint_imports_command; lint_imports_command()")
    done = subprocess.run([sys.executable, "-c", run], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "trustfl.defenses.planted -> trustfl.cli" in done.stdout
    assert (tmp_path / "build" / "import-graph" / "trustfl" / "defenses").resolve() == tmp_path / "defenses"


def test_link_tree_holds_only_symlinks_and_mirrors_package_dir():
    ns = runpy.run_path(str(HOOK))
    tree = ns["link_tree"]()
    entries = {p.name: p for p in tree.iterdir()}
    assert all(p.is_symlink() for p in entries.values()), "the link tree must not hold copies"
    for name in ("attacks", "defenses", "audits"):
        assert entries[name].resolve() == ROOT / name
    core = {p.name for p in (ROOT / "trustfl").iterdir() if p.name != "__pycache__"}
    assert core <= entries.keys()
    assert not os.path.lexists(ROOT / "trustfl" / "attacks")


def test_hook_acts_only_in_the_lint_imports_process():
    code = "import sys; print(any(getattr(f, '__name__', '') == 'InstalledLayoutFinder' for f in sys.meta_path))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    out = subprocess.run([sys.executable, "-c", "import trustfl; print(trustfl.__path__)"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert "import-graph" not in out.stdout
