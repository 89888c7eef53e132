"""Data section: the cross-client duplicate summary of a deduplicated run, and the results of a
synthetic-data origin report (``trustfl origin``) stored with the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trustfl.audits.report.result import Finding, NotChecked, SectionResult
from trustfl.audits.report.settings import AuditSettings

__all__ = ["audit", "find_origin_report"]

ORIGIN_FORMAT = "trustfl-origin-report/1"


def find_origin_report(run: Any, settings: AuditSettings) -> Path | None:
    """``settings.options["origin_report"]``, else the first origin ``report.json`` in the run directory
    (``origin/``, ``audit/origin/`` or any top-level folder holding one)."""
    given = settings.options.get("origin_report")
    if given:
        return Path(given)
    root = Path(run.path)
    candidates = [root / "origin" / "report.json", root / "audit" / "origin" / "report.json",
                  *sorted(root.glob("*/report.json"))]
    for p in candidates:
        if p.is_file():
            try:
                if json.loads(p.read_bytes()).get("format") == ORIGIN_FORMAT:
                    return p
            except (OSError, ValueError, AttributeError):
                continue
    return None


def _origin_headline(rep: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"status": rep.get("status")}
    copies = rep.get("copies") or {}
    if copies:
        flagged = copies.get("findings") or []
        out["copies_flagged"] = copies.get("counts", {}).get("flagged", len(flagged)) \
            if isinstance(copies.get("counts"), dict) else len(flagged)
    for d in rep.get("dcr") or []:
        out[f"dcr_{d.get('space')}"] = {k: d.get(k) for k in ("fraction_closer_to_train", "expected_fraction",
                                                                "binomial_p", "mannwhitney_p")}
    for a in rep.get("attribution") or []:
        out[f"attribution_{a.get('score')}"] = {"auc": a.get("auc")}
    if rep.get("notes"):
        out["notes"] = rep["notes"]
    return out


def audit(run: Any, settings: AuditSettings) -> SectionResult:
    res = SectionResult(name="data", status="pass", verdict="")
    manifest = run.manifest
    extra = manifest.get("extra") or {}
    config = manifest.get("config") or {}
    parts: list[str] = []

    dedup = extra.get("dedup")
    res.checked.append("cross-client near-duplicate detection recorded by the run (extra.dedup)")
    if isinstance(dedup, dict):
        summary = {k: dedup.get(k) for k in ("methods", "thresholds", "records_before", "records_after", "dropped",
                                             "clusters", "cross_client_clusters", "pairs", "dropped_per_client")
                   if k in dedup}
        res.data["dedup"] = summary
        cross = int(dedup.get("cross_client_clusters") or 0)
        dropped = int(dedup.get("dropped") or 0)
        parts.append(f"dedup ({', '.join(dedup.get('methods') or [])}): {dropped} of "
                     f"{dedup.get('records_before')} records dropped, {dedup.get('clusters')} cluster(s), "
                     f"{cross} across clients")
        if cross:
            res.findings.append(Finding(f"{cross} duplicate cluster(s) span several clients (shared records)",
                                        "info", {"cross_client_clusters": cross,
                                                 "pair_counts": dedup.get("pair_counts")}))
        per_client = dedup.get("dropped_per_client") or {}
        before = dedup.get("records_before") or 0
        for cid, n in per_client.items():
            if before and n and n > 0.5 * before / max(1, len(per_client)):
                res.findings.append(Finding(f"client {cid}: {n} records dropped as duplicates (over half its share)",
                                            "warn", {"client": cid, "dropped": n}))
    elif (config.get("dedup") or {}).get("enabled"):
        res.findings.append(Finding("the config enables dedup but the manifest records no dedup summary", "warn"))
        res.not_checked.append(NotChecked("cross-client duplicates", "dedup was enabled but recorded no summary"))
    else:
        res.not_checked.append(NotChecked("cross-client duplicates",
                                          "the run did not deduplicate (dedup.enabled is not set)"))

    res.checked.append("synthetic-data origin report stored with the run (trustfl origin)")
    path = find_origin_report(run, settings)
    if path is None:
        res.not_checked.append(NotChecked(
            "synthetic-data origin (copies, DCR, model attribution)",
            "no origin report in the run directory (run `trustfl origin ... --out RUN_DIR/origin`)"))
    else:
        try:
            rep = json.loads(Path(path).read_bytes())
            head = _origin_headline(rep)
            res.data["origin"] = {"report": str(path), **head}
            parts.append(f"origin report ({rep.get('status')}): {head.get('copies_flagged', 0)} copies flagged")
            if head.get("copies_flagged"):
                res.findings.append(Finding(f"{head['copies_flagged']} synthetic record(s) flagged as copies of "
                                            "training records", "warn", {"report": str(path)}))
        except (OSError, ValueError) as e:
            res.findings.append(Finding(f"origin report {path} unreadable: {e}", "warn"))
            res.not_checked.append(NotChecked("synthetic-data origin", f"report {path} unreadable"))

    warns = [f for f in res.findings if f.severity == "warn"]
    if not parts:
        res.status = "warn" if warns else "unavailable"
        res.verdict = ("nothing to check: the run did not deduplicate and has no origin report"
                       + (f"; {warns[0].title}" if warns else ""))
    else:
        res.status = "warn" if warns else "pass"
        res.verdict = "; ".join(parts) + (f"; {warns[0].title}" if warns else "")
    return res
