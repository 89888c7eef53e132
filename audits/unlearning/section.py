"""The unlearning section of ``trustfl audit``: on an unlearning run, verify it against its parent and the
exact baseline (retrain) of the same request. Any other run: ``unavailable`` (nothing was unlearned)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trustfl.audits.report.result import Finding, NotChecked, SectionResult
from trustfl.audits.robustness.section import section_options
from trustfl.rundir import RunDir, RunDirError, sha256_file

__all__ = ["DEFAULTS", "audit", "find_linked"]

NAME = "unlearning"
DEFAULTS: dict[str, Any] = {"retrain_run": None, "mia_records": 500, "bootstrap": 200}


def find_linked(parent: Path, *, method: str, forgotten: list[int], near: Path | None = None) -> list[Path]:
    """Unlearning runs of ``parent`` with ``method`` that forgot exactly ``forgotten``, among the
    directories next to ``parent`` (and next to ``near``)."""
    sha = sha256_file(parent / "manifest.json")
    found: list[Path] = []
    for folder in {parent.resolve().parent, *( [near.resolve().parent] if near else [])}:
        for cand in sorted(folder.iterdir()):
            if not (cand / "manifest.json").is_file():
                continue
            try:
                link = (RunDir(cand).manifest.get("extra") or {}).get("unlearning") or {}
            except RunDirError:
                continue
            if link.get("parent_manifest_sha256") == sha and link.get("method") == method and \
                    sorted(link.get("forgotten") or []) == sorted(forgotten) and cand not in found:
                found.append(cand)
    return found


def audit(run: RunDir, settings: Any) -> SectionResult:
    """Unlearning section (docs/unlearning.md, "Verification").

    Options (``settings.options``, flat or under ``"unlearning"``): ``retrain_run`` (the retrain run to
    compare with; default: found next to the parent), ``mia_records`` (500), ``bootstrap`` (200).
    """
    from trustfl.audits.unlearning.verify import verify_unlearning

    t0 = time.perf_counter()
    opts = {**DEFAULTS, **section_options(settings, NAME)}
    result = SectionResult(name=NAME, status="pass", verdict="")

    def done(status: str, verdict: str) -> SectionResult:
        result.status, result.verdict = status, verdict  # type: ignore[assignment]
        result.seconds = time.perf_counter() - t0
        return result

    link = (run.manifest.get("extra") or {}).get("unlearning")
    if not link:
        result.not_checked.append(NotChecked("linked unlearning runs", "this run is not an unlearning run (its "
                                             "manifest links no parent); audit a run written by `trustfl unlearn`"))
        return done("unavailable", "not an unlearning run")
    method, forgotten, parent_path = link["method"], list(link["forgotten"]), Path(link["parent"])
    result.checked.append(f"{method} run forgetting client(s) {forgotten} of {parent_path} from round "
                          f"{link['first_round']}")
    if not (parent_path / "manifest.json").is_file():
        result.not_checked.append(NotChecked("comparison with the parent run", f"{parent_path} is gone"))
        return done("unavailable", f"the parent run {parent_path} is not there any more")
    parent = RunDir(parent_path)
    if sha256_file(parent_path / "manifest.json") != link.get("parent_manifest_sha256"):
        result.findings.append(Finding(f"the parent's manifest changed since the unlearning ({parent_path})", "fail"))
        return done("fail", "the parent run changed after the unlearning; its link no longer holds")
    runs = {method: run}
    if method != "retrain":
        given = opts.get("retrain_run")
        candidates = [Path(given)] if given else find_linked(parent_path, method="retrain", forgotten=forgotten,
                                                              near=run.path)
        if candidates:
            runs["retrain"] = RunDir(candidates[0])
        else:
            result.not_checked.append(NotChecked(
                "comparison with retrain (ASR, accuracy, MIA AUC, distances, compute)",
                f"no retrain run of this request found next to {parent_path}; run `trustfl unlearn {parent_path} "
                + " ".join(f"--client {c}" for c in forgotten) + " --method retrain` (or pass option retrain_run)"))
    try:
        v = verify_unlearning(parent, runs, mia_records=int(opts["mia_records"]), bootstrap=int(opts["bootstrap"]),
                              progress=bool(getattr(settings, "progress", False)))
    except ValueError as exc:
        result.findings.append(Finding(str(exc), "fail"))
        return done("fail", f"cannot verify: {exc}")
    result.checked.append(f"final adapters evaluated: clean test accuracy, {'backdoor ASR, ' if v.backdoor else ''}"
                          f"LOSS membership-inference AUC on {v.membership['members']} training records of the "
                          f"forgotten client(s) vs {v.membership['nonmembers']} {v.membership['nonmember_source']}, "
                          "distance to retrain, wall time, client samples processed")
    for row in v.rows:
        result.findings.append(Finding(f"{row.name}: {row.verdict}", "warn" if row.meets_goal is False else "info",
                                       {"row": row.__dict__}))
    result.data = {**v.to_dict(), "table": v.markdown()}
    for note in v.notes:
        result.not_checked.append(NotChecked("part of the comparison", note))
    mine = v.row(method)
    if method == "retrain":
        return done("pass", f"retrain (exact baseline): accuracy {mine.accuracy:.3f}"
                    + (f", ASR {mine.asr:.3f}" if mine.asr is not None else "") + f", MIA AUC {mine.mia_auc:.3f}")
    if mine.meets_goal is None:
        return done("warn", f"{method}: no retrain run to compare with; accuracy {mine.accuracy:.3f}"
                    + (f", ASR {mine.asr:.3f}" if mine.asr is not None else ""))
    return done("pass" if mine.meets_goal else "warn", f"{method}: {mine.verdict}")
