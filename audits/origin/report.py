"""The origin report: one dataclass, written as JSON plus a short Markdown summary.

Files are written atomically (:func:`trustfl.rundir.atomic_write_bytes`: temp file, fsync,
rename). The content is serialised in memory *before* any file is touched, so an error
while building a report leaves every file already in the output folder as it was, and a
crash mid-write leaves at most a ``.tmp-*`` file, never a truncated report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustfl.audits.origin.attribution import AttributionResult
from trustfl.audits.origin.copies import CopyResult
from trustfl.audits.origin.dcr import DcrResult
from trustfl.audits.origin.errors import OriginError

__all__ = ["OriginReport", "dcr_reading", "excerpt", "write_json_atomic", "write_text_atomic"]

FORMAT = "trustfl-origin-report/1"
ALPHA = 0.05  # significance level of the plain-language reading of the DCR p-values
MAX_ROWS = 20  # flagged records / clients listed in report.md (report.json has all)


def excerpt(text: str, width: int = 100) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``width`` characters with an ellipsis."""
    one = " ".join(str(text).split())
    return one if len(one) <= width else one[:max(1, width - 1)].rstrip() + "…"


def _p(p: float) -> str:
    return "–" if p is None or not math.isfinite(p) else f"{p:.3g}"


def dcr_reading(d: DcrResult, alpha: float = ALPHA) -> str:
    """What one DCR test's p-values say, in plain language (significance level ``alpha``)."""
    untied = d.closer_to_train + d.closer_to_holdout
    head = (f"**{d.space}**: {d.closer_to_train} of {untied} untied synthetic records "
            f"({_pct(d.fraction_closer_to_train)}) are closer to a training record than to a holdout record; "
            f"fresh records from the clients would be closer to train in about {_pct(d.expected_fraction)}. ")
    if untied == 0 or not math.isfinite(d.binomial_p):
        return head + "Every record is a tie, so this test says nothing."
    if d.binomial_p < alpha:
        binom = (f"Binomial p = {_p(d.binomial_p)} < {alpha:g}: that many closer-to-train records would rarely happen "
                 "by chance, which is evidence that the generator memorised (or copied from) its training records.")
    else:
        binom = (f"Binomial p = {_p(d.binomial_p)} >= {alpha:g}: no evidence that synthetic records sit closer to the "
                 "training records than fresh records would.")
    if math.isfinite(d.mannwhitney_p) and d.mannwhitney_p < alpha:
        mw = (f" Mann-Whitney p = {_p(d.mannwhitney_p)} < {alpha:g}: synthetic records lie closer to the training "
              "records than held-out real records do (memorisation signal).")
    else:
        mw = (f" Mann-Whitney p = {_p(d.mannwhitney_p)}: synthetic records are not closer to the training records than "
              "held-out real records are.")
    return head + binom + mw


def _pct(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None (strict JSON), tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``; the parent folder is created if missing."""
    from trustfl.rundir import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Serialise ``obj`` (strict JSON, NaN -> null) in memory, then write it atomically."""
    data = json.dumps(_clean(obj), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return write_text_atomic(path, data)


@dataclass
class OriginReport:
    """Everything the origin checks found, plus what they ran on.

    Attributes:
        inputs: names and sizes of the corpora (and files), no texts.
        settings: thresholds and options used.
        copies: copy detection (:class:`CopyResult`) or ``None`` if not run.
        dcr: DCR tests, one per distance space.
        attribution: model attribution, one result per score (empty if not run).
        run: for an end-to-end run, the run directory, training and sampling summaries.
        seconds: wall time per stage.
        status: ``"complete"`` or ``"partial: <stage>"`` while stages are still running.
        notes: plain-language warnings about the inputs (e.g. an unused client column).
        figures: pictures written next to the report, by name (``{"dcr": "dcr.png"}``).
    """

    inputs: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    copies: CopyResult | None = None
    dcr: list[DcrResult] = field(default_factory=list)
    attribution: list[AttributionResult] = field(default_factory=list)
    run: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    status: str = "complete"
    notes: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def to_dict(self, *, per_record: bool = True) -> dict[str, Any]:
        """JSON-ready dict; ``per_record`` keeps per-record distances/scores and all copy findings."""
        return _clean({
            "format": FORMAT, "status": self.status, "inputs": self.inputs, "settings": self.settings,
            "copies": self.copies.to_dict(all_records=per_record) if self.copies else None,
            "dcr": [d.to_dict(per_record=per_record) for d in self.dcr],
            "attribution": [a.to_dict(per_record=per_record) for a in self.attribution],
            "run": self.run, "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "notes": list(self.notes), "figures": dict(self.figures),
        })

    def headline(self) -> dict[str, Any]:
        """The few numbers a reader wants first (copies, DCR fraction and p-values, AUC)."""
        out: dict[str, Any] = {}
        if self.copies:
            out["copies_flagged"] = self.copies.counts()["flagged"]
            out["copies_by_method"] = self.copies.counts()["by_method"]
        for d in self.dcr:
            out[f"dcr_{d.space}"] = {"fraction_closer_to_train": d.fraction_closer_to_train,
                                     "expected": d.expected_fraction, "binomial_p": d.binomial_p,
                                     "mannwhitney_p": d.mannwhitney_p}
        for a in self.attribution:
            out[f"attribution_{a.score}"] = {"auc": a.auc, "auc_all": a.auc_all}
        return _clean(out)

    def markdown(self) -> str:
        """A short human summary (no record texts)."""
        lines = ["# Synthetic-data origin report", "", f"Status: {self.status}", ""]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        if self.inputs:
            lines += ["## Inputs", ""] + [f"- {k}: {self._input_line(v)}" for k, v in self.inputs.items()] + [""]
        per_client = (self.inputs.get("reference") or {}).get("per_client") \
            if isinstance(self.inputs.get("reference"), dict) else None
        if per_client:
            lines += ["## Reference clients", "", "| client | file(s) | records |", "|---|---|---|"]
            for name, entry in list(per_client.items())[:MAX_ROWS]:
                lines.append(f"| {name} | {', '.join(entry.get('files', []))} | {entry.get('records', '–')} |")
            if len(per_client) > MAX_ROWS:
                lines.append(f"| ... {len(per_client) - MAX_ROWS} more (report.json) | | |")
            lines.append("")
        if self.copies:
            c, t = self.copies.counts(), self.copies.thresholds
            lines += ["## Copy detection", "",
                      f"{c['flagged']} of {self.copies.n_synthetic} synthetic records flagged "
                      f"({100 * c['fraction_flagged']:.1f}%) against {self.copies.n_reference} references.", "",
                      "| method | threshold | flagged |", "|---|---|---|"]
            thr = {"exact": "equal keyed code", "lcs": f"LCS >= {t.lcs_chars} chars",
                   "minhash": f"Jaccard >= {t.jaccard}", "embedding": f"cosine >= {t.cosine}"}
            lines += [f"| {m} | {thr[m]} | {n} |" for m, n in c["by_method"].items()] + [""]
            flagged = self.copies.flagged
            if flagged:
                lines += ["Flagged synthetic records (ids only) and the reference record each one copies:", "",
                          "| synthetic record | criteria | client | file | record in file |", "|---|---|---|---|---|"]
                for f in flagged[:MAX_ROWS]:
                    r = f.reference or {}
                    files = (per_client or {}).get(r.get("client"), {}).get("files", [])
                    lines.append(f"| #{f.index} | {', '.join(f.criteria)} | {r.get('client', '–')} | "
                                 f"{', '.join(files) or '–'} | {r.get('record', '–')} |")
                if len(flagged) > MAX_ROWS:
                    lines.append(f"| ... {len(flagged) - MAX_ROWS} more (report.json) | | | | |")
                lines.append("")
        if self.dcr:
            lines += ["## Distance to closest record", "",
                      "| space | closer to train | expected | binomial p | Mann-Whitney p | median DCR syn / holdout |",
                      "|---|---|---|---|---|---|"]
            for d in self.dcr:
                lines.append(f"| {d.space} | {d.fraction_closer_to_train:.3f} ({d.closer_to_train}/"
                             f"{d.closer_to_train + d.closer_to_holdout}, {d.ties} ties) | {d.expected_fraction:.3f} "
                             f"| {d.binomial_p:.3g} | {d.mannwhitney_p:.3g} | {d.median_dcr_synthetic:.4f} / "
                             f"{d.median_dcr_holdout:.4f} |")
            lines += ["", f"Reading (significance level {ALPHA:g}):", ""] + [f"- {dcr_reading(d)}" for d in self.dcr]
            lines += ["", "A small p-value is evidence of memorisation; a large one is no proof of safety (a generator "
                          "far from its data also passes). Per-record copies are the section above."]
            if "dcr" in self.figures:
                lines += ["", f"Histograms of the distances: `{self.figures['dcr']}` (next to this report): "
                              "synthetic->train against holdout->train; memorisation shifts the synthetic one "
                              "towards 0."]
            lines.append("")
        if self.attribution:
            lines += ["## Model attribution", "",
                      "| score | mean generated / human | ROC AUC (evaluation split / all) | threshold | TPR | FPR |",
                      "|---|---|---|---|---|---|"]
            for a in self.attribution:
                lines.append(f"| {a.score} | {a.mean_score_generated:.3f} / {a.mean_score_human:.3f} | {a.auc:.3f} "
                             f"({a.n_evaluation} texts) / {a.auc_all:.3f} | {a.threshold:.3f} (fit on "
                             f"{a.n_calibration}) | {a.tpr:.3f} | {a.fpr:.3f} |")
            lines.append("")
        if self.seconds:
            lines += ["## Wall time", ""] + [f"- {k}: {v:.1f} s" for k, v in self.seconds.items()] + [""]
        return "\n".join(lines)

    @staticmethod
    def _input_line(value: Any) -> str:
        if isinstance(value, dict) and "records" in value:
            text = f"{value['records']} records"
            if value.get("files"):
                text += " from " + ", ".join(map(str, value["files"]))
            if "clients" in value:
                text += f" ({value['clients']} client{'s' if value['clients'] != 1 else ''})"
            return text
        return str(value)

    def write(self, out_dir: str | Path, *, per_record: bool = True) -> dict[str, Path]:
        """Write ``report.json`` and ``report.md`` into ``out_dir`` (created if missing), each atomically.

        Raises:
            OriginError: ``out_dir`` exists and is not a folder.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise OriginError(f"--out {str(out)!r} exists and is not a folder")
        data = self.to_dict(per_record=per_record)  # build both contents before touching any file
        text = self.markdown()
        paths = {"json": write_json_atomic(out / "report.json", data)}
        paths["md"] = write_text_atomic(out / "report.md", text)
        return paths
