"""Run the audit sections on a run directory and collect one :class:`AuditReport`.

Sections are looked up lazily by ``"module:function"`` (a section whose module is not there yet is
reported ``unavailable`` with the import error); one that raises becomes a ``fail`` result with
its traceback, and never hides the others. Integrity runs first; a corrupt run still lets the
other sections run as far as their own (hash-checked) reads allow.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from trustfl.audits.report.result import SectionResult
from trustfl.audits.report.settings import AuditError, AuditSettings

__all__ = ["AUDIT_DIR", "SECTIONS", "AuditReport", "jsonable", "parse_sections", "run_audit"]

AUDIT_DIR = "audit"  # RUN_DIR/audit/report.html, report.json (ignored by RunDir.verify)

# name -> "module:function" with signature audit(run: RunDir, settings: AuditSettings) -> SectionResult
SECTIONS: dict[str, str] = {
    "integrity": "trustfl.audits.report.sections.integrity:audit",
    "privacy": "trustfl.audits.report.sections.privacy:audit",
    "robustness": "trustfl.audits.robustness:audit",
    "contribution": "trustfl.audits.contribution:audit",
    "data": "trustfl.audits.report.sections.data:audit",
    "unlearning": "trustfl.audits.report.sections.unlearning:audit",
}


def parse_sections(sections: str | Sequence[str] | None) -> list[str]:
    """Section names in registry order (integrity first); ``None``/empty: all.

    Raises:
        AuditError: an unknown section name (one line, listing the known ones).
    """
    if sections is None:
        return list(SECTIONS)
    names = [s.strip() for s in (sections.split(",") if isinstance(sections, str) else sections)]
    names = [s for s in names if s]
    if not names:
        return list(SECTIONS)
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        raise AuditError(f"unknown audit section(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in names]


def short_reason(reason: str) -> str:
    """``"sha256 mismatch; truncated or unparsable safetensors"`` from a long ``CorruptRunError`` reason."""
    return ", ".join(part.split(":", 1)[0].split(" (")[0].strip() for part in reason.split("; "))


def _resolve(target: str) -> Callable[..., SectionResult]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def jsonable(obj: Any) -> Any:
    """A JSON-safe copy of ``obj``: dataclasses and mappings to dicts (str keys), tuples/sets to
    lists, NaN/Inf to ``None``, tensors and numpy values to lists/numbers, bytes and paths to text."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (bytes, bytearray)):
        return f"<{len(obj)} bytes>"
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # torch / numpy
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return str(obj)


@dataclass
class AuditReport:
    """Every section's result for one run directory, plus where the report was written."""

    run_dir: str
    sections: list[SectionResult]
    created: str = ""
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # "html"/"json" -> written file

    def section(self, name: str) -> SectionResult:
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(f"no section {name!r} in this report; sections: {[s.name for s in self.sections]}")

    def summary(self) -> list[tuple[str, str, str]]:
        """``(section, status, verdict)`` rows."""
        return [(s.name, s.status, s.verdict) for s in self.sections]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (figures excluded; their names kept)."""
        out = []
        for s in self.sections:
            d = jsonable({f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name != "figures"})
            d["figure_names"] = sorted(s.figures)
            out.append(d)
        return {"format": "trustfl-audit-report/1", "run_dir": self.run_dir, "created": self.created,
                "seconds": round(self.seconds, 3), "versions": jsonable(self.versions),
                "summary": [{"section": n, "status": st, "verdict": v} for n, st, v in self.summary()],
                "sections": out}

    def write(self, out_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
        """Write ``report.json`` and ``report.html`` atomically (default: ``RUN_DIR/audit/``)."""
        from trustfl.audits.report.html import render_html
        from trustfl.rundir import atomic_write_bytes

        out = Path(out_dir) if out_dir is not None else Path(self.run_dir) / AUDIT_DIR
        out.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.to_dict(), indent=2, allow_nan=False, ensure_ascii=False).encode() + b"\n"
        atomic_write_bytes(out / "report.json", data)
        atomic_write_bytes(out / "report.html", render_html(self).encode("utf-8"))
        self.paths = {"html": str(out / "report.html"), "json": str(out / "report.json")}
        return self.paths


def _unavailable(name: str, why: str) -> SectionResult:
    from trustfl.audits.report.result import NotChecked

    return SectionResult(name=name, status="unavailable", verdict=f"not run: {why}",
                         not_checked=[NotChecked(f"the {name} section", why)])


def _run_one(name: str, run: Any, settings: AuditSettings) -> SectionResult:
    target = SECTIONS[name]
    try:
        func = _resolve(target)
    except (ImportError, AttributeError) as e:
        return _unavailable(name, f"the section's module is not available ({target}: {type(e).__name__}: {e})")
    t0 = time.perf_counter()
    try:
        result = func(run, settings)
        if not isinstance(result, SectionResult):
            raise TypeError(f"{target} returned {type(result).__name__}, expected SectionResult")
    except Exception as e:  # noqa: BLE001 - a crashing section must never hide the others
        problems = getattr(e, "problems", None)  # CorruptRunError: name the files, not the boilerplate
        first = ("; ".join(f"{p}: {short_reason(r)}" for p, r in problems) if problems
                 else (str(e).splitlines() or [""])[0])
        result = SectionResult(name=name, status="fail", verdict=f"section crashed: {type(e).__name__}: {first}",
                               data={"traceback": traceback.format_exc()})
    result.name = name
    result.seconds = result.seconds or (time.perf_counter() - t0)
    return result


def run_audit(run_dir: str | os.PathLike[str], *, sections: str | Sequence[str] | None = None,
              settings: AuditSettings | None = None, progress: bool | None = None,
              write: bool = True) -> AuditReport:
    """Audit the run directory ``run_dir`` and (``write=True``) write ``RUN_DIR/audit/report.{html,json}``.

    Args:
        sections: names or "a,b" (default: ``settings.sections``, else all).
        settings: thresholds and options (``AuditSettings()`` if omitted).
        progress: a tqdm bar over the sections (default: ``settings.progress``).

    Raises:
        AuditError: an unknown section.
        RunDirError: ``run_dir`` is not a run directory (no ``manifest.json``). A run whose
            manifest is there but corrupt is audited: integrity fails, the rest say why they cannot run.
    """
    from tqdm.auto import tqdm

    from trustfl.rundir import CorruptRunError, RunDir, RunDirError

    settings = dataclasses.replace(settings) if settings is not None else AuditSettings()
    if progress is not None:
        settings.progress = progress
    names = parse_sections(sections if sections is not None else settings.sections)
    settings.sections = names
    root = Path(run_dir)
    if not (root / "manifest.json").is_file():
        raise RunDirError(f"{root} is not a run directory (no manifest.json; a run directory is written by "
                          "`trustfl run` or trustfl.rundir.RunWriter)")
    t0 = time.perf_counter()
    try:
        run: Any = RunDir(root)
        manifest_problem = None
    except CorruptRunError as e:
        run, manifest_problem = None, e
    results: list[SectionResult] = []
    bar = tqdm(names, desc="audit", unit="section", disable=not settings.progress, leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        if run is None:
            if name == "integrity":
                from trustfl.audits.report.result import Finding

                results.append(SectionResult(
                    name=name, status="fail",
                    verdict="CORRUPT: " + "; ".join(f"{p}: {r}" for p, r in manifest_problem.problems),
                    checked=["manifest.json parsed and structurally valid"],
                    findings=[Finding(f"{p}: {r}", "fail", {"file": p, "reason": r})
                              for p, r in manifest_problem.problems]))
            else:
                results.append(_unavailable(name, "manifest.json cannot be read (see integrity)"))
            continue
        results.append(_run_one(name, run, settings))
    bar.close()
    from trustfl._version import __version__

    report = AuditReport(run_dir=str(root), sections=results,
                         created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                         seconds=time.perf_counter() - t0, versions={"trustfl": __version__})
    if write:
        report.write()
    return report
