"""Write an evaluation matrix's results: CSV, JSON, a Markdown table and heatmaps (PNG)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from trustfl.rundir import atomic_write_bytes

__all__ = ["markdown_table", "write_report"]

COLUMNS = ["cell", "attack", "defense", "fraction", "alpha", "seed", "status", "accuracy", "macro_f1", "asr",
           "flag_precision", "flag_recall", "rounds", "wall_s", "error"]


def _fmt(value: Any, pct: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if pct else f"{value:.2f}"


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _grid(rows: list[dict[str, Any]], key: str, attacks: list[str], defenses: list[str],
          fraction: float, alpha: float) -> list[list[float | None]]:
    """Mean of ``key`` over seeds, per (attack, defense); the no-attack row has fraction 0."""
    out = []
    for a in attacks:
        line = []
        for d in defenses:
            vals = [r.get(key) for r in rows if r["attack"] == a and r["defense"] == d and r["alpha"] == alpha
                    and r["status"] == "ok" and (r["fraction"] == fraction or r["fraction"] == 0.0)]
            line.append(_mean(vals))
        out.append(line)
    return out


def markdown_table(rows: list[dict[str, Any]], attacks: list[str], defenses: list[str], fraction: float,
                   alpha: float) -> str:
    """Attacks x defenses, each cell "clean accuracy % / ASR %" (mean over seeds)."""
    acc = _grid(rows, "accuracy", attacks, defenses, fraction, alpha)
    asr = _grid(rows, "asr", attacks, defenses, fraction, alpha)
    lines = [f"Attackers: {100 * fraction:g}% of clients, Dirichlet alpha = {alpha:g}. "
             "Each cell: clean accuracy % / attack success rate % (– = not applicable or failed).", "",
             "| attack \\ defense | " + " | ".join(defenses) + " |", "|---|" + "---:|" * len(defenses)]
    for i, a in enumerate(attacks):
        cells = [f"{_fmt(acc[i][j])} / {_fmt(asr[i][j])}" for j in range(len(defenses))]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _heatmap(values: list[list[float | None]], attacks: list[str], defenses: list[str], title: str,
             path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array([[np.nan if v is None else 100 * v for v in line] for line in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(defenses) + 2.5, 0.6 * len(attacks) + 1.8))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(defenses)), defenses, rotation=35, ha="right")
    ax.set_yticks(range(len(attacks)), attacks)
    for i in range(len(attacks)):
        for j in range(len(defenses)):
            text = "–" if np.isnan(data[i, j]) else f"{data[i, j]:.0f}"
            ax.text(j, i, text, ha="center", va="center", color="w" if np.isnan(data[i, j]) or data[i, j] < 60 else "k")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="%")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(rows: list[dict[str, Any]], out: str | Path, *, attacks: list[str], defenses: list[str],
                 fractions: list[float], alphas: list[float]) -> dict[str, Path]:
    """Write results.{csv,json,md} and heatmap PNGs into ``out``; return their paths."""
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
            sections.append(markdown_table(rows, attacks, defenses, fraction, alpha))
            tag = f"f{fraction:g}_a{alpha:g}"
            for key, title in (("accuracy", "clean accuracy (%)"), ("asr", "attack success rate (%)")):
                path = out / f"heatmap_{key}_{tag}.png"
                _heatmap(_grid(rows, key, attacks, defenses, fraction, alpha), attacks, defenses,
                         f"{title}, attackers {100 * fraction:g}%, alpha {alpha:g}", path)
                paths[f"{key}_{tag}"] = path
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        sections.append("Failed cells:\n" + "\n".join(f"- {r['cell']}: {r.get('error')}" for r in failed))
    atomic_write_bytes(paths["md"], ("\n\n".join(sections) + "\n").encode())
    return paths
