"""Let `lint-imports`, run from the repository root, see trustfl as it is installed.

pyproject's `[tool.setuptools.package-dir]` maps `attacks/`, `defenses/` and `audits/` (at the repository
root, DESIGN.md "Layout") to `trustfl.attacks`, `trustfl.defenses` and `trustfl.audits`. At run time the
editable install's finder resolves them. import-linter, however, puts the current directory first on
`sys.path`, and grimp walks only the folders of the `trustfl` spec it finds there: `./trustfl`, without the
plug-ins ("Module 'trustfl.audits' does not exist").

`make install` writes a `.pth` line that runs this file in the `lint-imports` process only (never in
Python started any other way). It puts a finder first on `sys.meta_path` that answers `trustfl` with the
real `trustfl/__init__.py`, searched in `build/import-graph/trustfl/`: a folder of relative symlinks, one
per entry of `trustfl/` and one per mapped sub-package (`attacks -> ../../../attacks`, ...), rebuilt on every
run. Nothing is copied: grimp reads the working tree's files, so the contracts are checked on the code as
it is now.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from importlib.machinery import ModuleSpec
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "trustfl"
LINK_DIR = ROOT / "build" / "import-graph"


def mapped_subpackages(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Path]:
    """Sub-packages of `trustfl` that pyproject's package-dir maps to folders outside `trustfl/`."""
    with pyproject.open("rb") as f:
        package_dir = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {
        name.removeprefix(PACKAGE + "."): ROOT / folder
        for name, folder in package_dir.items()
        if name.startswith(PACKAGE + ".") and name.count(".") == 1
    }


def link_tree(link_dir: Path = LINK_DIR) -> Path:
    """(Re)build `link_dir/trustfl` as the installed package looks: one relative symlink per entry of
    `trustfl/` plus one per mapped sub-package. Rebuilt on every call, so new modules are seen."""
    tree = link_dir / PACKAGE
    wanted = {
        entry.name: entry for entry in (ROOT / PACKAGE).iterdir() if entry.name != "__pycache__"
    }
    clashes = wanted.keys() & mapped_subpackages().keys()
    if clashes:
        raise RuntimeError(f"trustfl/{sorted(clashes)[0]} exists and is also mapped by package-dir")
    wanted.update(mapped_subpackages())
    tree.mkdir(parents=True, exist_ok=True)
    for entry in tree.iterdir():
        if entry.name not in wanted:
            entry.unlink()
    for name, target in wanted.items():
        link = tree / name
        relative = Path("..", "..", "..", target.relative_to(ROOT))
        if link.is_symlink() and link.readlink() == relative:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(relative, target_is_directory=target.is_dir())
    return tree


class InstalledLayoutFinder:
    """Meta path finder: `trustfl` = `trustfl/__init__.py`, its sub-modules searched in the link tree."""

    @classmethod
    def find_spec(cls, fullname: str, path=None, target=None) -> ModuleSpec | None:  # noqa: ANN001
        if fullname != PACKAGE:
            return None
        return importlib.util.spec_from_file_location(
            PACKAGE,
            ROOT / PACKAGE / "__init__.py",
            submodule_search_locations=[str(link_tree())],
        )


def install() -> None:
    """Put the finder first on `sys.meta_path` (once, even if the .pth line runs twice)."""
    if not any(getattr(f, "__name__", None) == InstalledLayoutFinder.__name__ for f in sys.meta_path):
        sys.meta_path.insert(0, InstalledLayoutFinder)


PTH_NAME = "trustfl_import_graph_layout.pth"


def pth_line(script: Path = Path(__file__).resolve()) -> str:
    """The .pth line: runs `install()` of this file when the process is `lint-imports`, else nothing."""
    return (
        "import sys; sys.argv[:1] and sys.argv[0].endswith('lint-imports') and "
        f"__import__('runpy').run_path({str(script)!r})['install']()\n"
    )


def write_pth() -> Path:
    """Write the .pth line into this interpreter's site-packages (`make install` calls this)."""
    import sysconfig

    target = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text(pth_line())
    return target


if __name__ == "__main__":
    print(f"wrote {write_pth()}")
