"""Write an evaluation matrix's results: CSV, JSON, a Markdown table and heatmaps (PNG).

Clean accuracy and attack success rate (ASR) alone can mislead: a model that never leaves the
majority class scores the majority baseline everywhere, and an attack whose target *is* the
majority class then "succeeds" 100 % without doing anything. So the Markdown report also gives
the majority-class baseline, macro-F1 and the defenses' detection precision / recall, and warns
about both cases; the heatmaps mark them too (docs/eval.md).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from trustfl.rundir import atomic_write_bytes

__all__ = ["cell_warnings", "markdown_table", "write_report"]

COLUMNS = ["cell", "attack", "defense", "fraction", "alpha", "seed", "status", "accuracy", "best_accuracy",
           "baseline_accuracy", "macro_f1", "asr", "majority_label", "attack_target", "flag_precision",
           "flag_recall", "rounds", "wall_s", "error"]

BELOW = "≤b"    # marks a cell whose accuracy never beat the majority baseline
TRIVIAL = "t"   # marks an ASR whose target is the majority class
_EPS = 1e-9


def _fmt(value: Any, pct: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if pct else f"{value:.2f}"


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _cell(rows: list[dict[str, Any]], attack: str, defense: str, fraction: float, alpha: float | None
          ) -> list[dict[str, Any]]:
    """The finished rows (one per seed) of one (attack, defense) cell; the no-attack row has fraction 0."""
    return [r for r in rows if r["attack"] == attack and r["defense"] == defense and r.get("alpha") == alpha
            and r["status"] == "ok" and (r["fraction"] == fraction or r["fraction"] == 0.0)]


def _grid(rows: list[dict[str, Any]], key: str, attacks: list[str], defenses: list[str],
          fraction: float, alpha: float | None) -> list[list[float | None]]:
    """Mean of ``key`` over seeds, per (attack, defense)."""
    return [[_mean([r.get(key) for r in _cell(rows, a, d, fraction, alpha)]) for d in defenses] for a in attacks]


def _never_beats_baseline(cell: list[dict[str, Any]]) -> bool:
    """Every seed's best accuracy over the rounds (final accuracy for older rows) <= its majority baseline."""
    judged = [r for r in cell if r.get("baseline_accuracy") is not None
              and (r.get("best_accuracy") if r.get("best_accuracy") is not None else r.get("accuracy")) is not None]
    return bool(judged) and all(
        (r["best_accuracy"] if r.get("best_accuracy") is not None else r["accuracy"]) <= r["baseline_accuracy"] + _EPS
        for r in judged)


def _trivial_target(cell: list[dict[str, Any]]) -> bool:
    """The attack's target class is the majority class (in some seed), so ASR is trivially high."""
    return any(r.get("attack_target") is not None and r.get("attack_target") == r.get("majority_label")
               for r in cell)


def cell_warnings(rows: list[dict[str, Any]], attacks: list[str], defenses: list[str], fraction: float,
                  alpha: float | None) -> dict[str, Any]:
    """Which cells never beat the majority baseline, and which attacks target the majority class.

    Returns ``{"below_baseline": [[bool per defense] per attack], "trivial_attacks": {attack: (target, name)}}``.
    """
    below = [[_never_beats_baseline(_cell(rows, a, d, fraction, alpha)) for d in defenses] for a in attacks]
    trivial: dict[str, tuple[Any, Any]] = {}
    for a in attacks:
        hits = [r for d in defenses for r in _cell(rows, a, d, fraction, alpha) if _trivial_target([r])]
        if hits:
            trivial[a] = (hits[0]["attack_target"], hits[0].get("majority_class"))
    return {"below_baseline": below, "trivial_attacks": trivial}


def _setting(fraction: float, alpha: float | None, scheme: str) -> str:
    part = f"Dirichlet alpha = {alpha:g}" if alpha is not None else f"partition {scheme} (no alpha)"
    return f"Attackers: {100 * fraction:g}% of clients, {part}."


def markdown_table(rows: list[dict[str, Any]], attacks: list[str], defenses: list[str], fraction: float,
                   alpha: float | None, scheme: str = "dirichlet") -> str:
    """One setting (fraction, alpha) as Markdown: attacks x defenses tables (means over seeds) plus warnings.

    Tables: clean accuracy % / ASR % (with the majority baseline stated and suspicious cells marked),
    macro-F1 %, and detection precision % / recall % (which flagged clients were attackers, over all rounds).
    """
    acc = _grid(rows, "accuracy", attacks, defenses, fraction, alpha)
    asr = _grid(rows, "asr", attacks, defenses, fraction, alpha)
    f1 = _grid(rows, "macro_f1", attacks, defenses, fraction, alpha)
    prec = _grid(rows, "flag_precision", attacks, defenses, fraction, alpha)
    rec = _grid(rows, "flag_recall", attacks, defenses, fraction, alpha)
    warn = cell_warnings(rows, attacks, defenses, fraction, alpha)
    below, trivial = warn["below_baseline"], warn["trivial_attacks"]
    baselines = [r["baseline_accuracy"] for a in attacks for d in defenses for r in _cell(rows, a, d, fraction, alpha)
                 if r.get("baseline_accuracy") is not None]
    if baselines:
        lo, hi = min(baselines), max(baselines)
        base = f"{100 * lo:.1f} %" if hi - lo < 5e-4 else f"{100 * lo:.1f}–{100 * hi:.1f} % (per seed)"
        base_line = (f"Majority-class baseline (always predict the most frequent training class): clean accuracy "
                     f"{base}. A cell at or below it has learnt nothing.")
    else:
        base_line = "Majority-class baseline: – (not a classification task, or no finished cell)."
    header = "| attack \\ defense | " + " | ".join(defenses) + " |"
    rule = "|---|" + "---:|" * len(defenses)

    def table(fmt_cell: Any) -> list[str]:
        return [header, rule] + [f"| {a} | " + " | ".join(fmt_cell(i, j) for j in range(len(defenses))) + " |"
                                 for i, a in enumerate(attacks)]

    def main_cell(i: int, j: int) -> str:
        a = _fmt(acc[i][j]) + (f" {BELOW}" if below[i][j] else "")
        s = _fmt(asr[i][j]) + (f" {TRIVIAL}" if asr[i][j] is not None and attacks[i] in trivial else "")
        return f"{a} / {s}"

    lines = [_setting(fraction, alpha, scheme), base_line, "",
             f"Clean accuracy % / attack success rate % (mean over seeds; – = not applicable or failed; "
             f"{BELOW} = never beat the majority baseline in any round; {TRIVIAL} = the attack's target is the "
             "majority class, so its success rate is trivially high).", ""]
    lines += table(main_cell)
    lines += ["", "Macro-F1 % (a model that predicts only the majority class scores low here even when its "
                  "accuracy looks high).", ""]
    lines += table(lambda i, j: _fmt(f1[i][j]))
    lines += ["", "Detection precision % / recall %: of the clients the defense flagged or excluded, the share that "
                  "were attackers / of the attackers' updates, the share flagged, over all rounds (– = nothing "
                  "flagged / no attackers).", ""]
    lines += table(lambda i, j: f"{_fmt(prec[i][j])} / {_fmt(rec[i][j])}")
    warnings = []
    n_below = sum(map(sum, below))
    n_cells = sum(1 for i in range(len(attacks)) for j in range(len(defenses)) if acc[i][j] is not None)
    if n_below:
        which = [f"{attacks[i]} x {defenses[j]}" for i in range(len(attacks)) for j in range(len(defenses))
                 if below[i][j]]
        scope = "every cell" if n_below == n_cells else ", ".join(which)
        warnings.append(f"- WARNING: {n_below} of {n_cells} cells never beat the majority-class baseline "
                        f"({scope}): their models predict (almost) only the majority class, so clean accuracy and "
                        "attack success rate say nothing about the defenses there; see macro-F1 and detection "
                        "precision/recall, and train longer or with a larger learning rate.")
    for a, (target, name) in trivial.items():
        label = f"{target} ({name})" if name else f"{target}"
        warnings.append(f"- WARNING: attack {a!r} targets class {label}, the majority class: a model that predicts "
                        "the majority class has attack success 100 % without any attack effect; choose a minority "
                        "target class to measure this attack.")
    if warnings:
        lines += ["", "Warnings:", "", *warnings]
    return "\n".join(lines)


def _heatmap(values: list[list[float | None]], attacks: list[str], defenses: list[str], title: str,
             path: Path, marks: list[list[str]] | None = None, note: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array([[np.nan if v is None else 100 * v for v in line] for line in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(defenses) + 2.5, 0.6 * len(attacks) + 2.0 + (0.3 if note else 0)))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(defenses)), defenses, rotation=35, ha="right")
    ax.set_yticks(range(len(attacks)), attacks)
    for i in range(len(attacks)):
        for j in range(len(defenses)):
            text = "–" if np.isnan(data[i, j]) else f"{data[i, j]:.0f}"
            if marks and marks[i][j]:
                text += f" {marks[i][j]}"
            ax.text(j, i, text, ha="center", va="center", color="w" if np.isnan(data[i, j]) or data[i, j] < 60 else "k")
    ax.set_title(title, fontsize=9)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, ha="left", va="bottom")
    fig.colorbar(im, ax=ax, label="%")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


HEATMAPS = (("accuracy", "clean accuracy (%)"), ("asr", "attack success rate (%)"), ("macro_f1", "macro-F1 (%)"),
            ("flag_precision", "detection precision (%)"), ("flag_recall", "detection recall (%)"))


def write_report(rows: list[dict[str, Any]], out: str | Path, *, attacks: list[str], defenses: list[str],
                 fractions: list[float], alphas: Sequence[float | None], scheme: str = "dirichlet"
                 ) -> dict[str, Path]:
    """Write results.{csv,json,md} and heatmap PNGs into ``out``; return their paths.

    ``alphas`` is ``[None]`` for a non-dirichlet partition (:attr:`MatrixSpec.alphas`); heatmaps are
    named ``heatmap_<metric>_f<fraction>[_a<alpha>].png``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md"}
    atomic_write_bytes(paths["json"], json.dumps(rows, indent=2, default=str).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_bytes(paths["csv"], buf.getvalue().encode())
    sections = []
    for fraction in fractions:
        for alpha in alphas:
            sections.append(markdown_table(rows, attacks, defenses, fraction, alpha, scheme))
            tag = f"f{fraction:g}" + ("" if alpha is None else f"_a{alpha:g}")
            setting = f"attackers {100 * fraction:g}%, " + (f"alpha {alpha:g}" if alpha is not None else scheme)
            warn = cell_warnings(rows, attacks, defenses, fraction, alpha)
            baselines = [r["baseline_accuracy"] for r in rows if r.get("alpha") == alpha and r["status"] == "ok"
                         and r.get("baseline_accuracy") is not None]
            for key, title in HEATMAPS:
                marks, note = None, None
                if key == "accuracy":
                    marks = [[BELOW if b else "" for b in line] for line in warn["below_baseline"]]
                    if baselines:
                        title += f"; majority baseline {100 * _mean(baselines):.1f}%"  # type: ignore[operator]
                    if any(map(any, marks)):
                        note = f"{BELOW}: never beat the majority-class baseline (accuracy is meaningless there)"
                elif key == "asr" and warn["trivial_attacks"]:
                    asr = _grid(rows, "asr", attacks, defenses, fraction, alpha)
                    marks = [[TRIVIAL if a in warn["trivial_attacks"] and asr[i][j] is not None else ""
                              for j in range(len(defenses))] for i, a in enumerate(attacks)]
                    note = f"{TRIVIAL}: target class = majority class, success is trivially high"
                path = out / f"heatmap_{key}_{tag}.png"
                _heatmap(_grid(rows, key, attacks, defenses, fraction, alpha), attacks, defenses,
                         f"{title}, {setting}", path, marks=marks, note=note)
                paths[f"{key}_{tag}"] = path
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        sections.append("Failed cells:\n" + "\n".join(f"- {r['cell']}: {r.get('error')}" for r in failed))
    atomic_write_bytes(paths["md"], ("\n\n".join(sections) + "\n").encode())
    return paths
