"""The robustness section of ``trustfl audit``: anomaly scores of the stored client updates."""

from __future__ import annotations

import io
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from trustfl.audits.report.result import Finding, NotChecked, SectionResult
from trustfl.audits.robustness.scores import MIN_RATIO, Z_THRESHOLD, RoundScores, round_scores
from trustfl.rundir import RunDir

__all__ = ["audit", "section_options", "stored_rounds", "unavailable_reason"]

NAME = "robustness"


def section_options(settings: Any, name: str) -> dict[str, Any]:
    """``settings.options`` (flat keys) overridden by ``settings.options[name]`` when that is a dict."""
    options = dict(getattr(settings, "options", None) or {})
    nested = options.get(name)
    return {**options, **nested} if isinstance(nested, dict) else options


def stored_rounds(run: RunDir) -> list[int]:
    """Committed rounds (>= 1) whose client updates were stored."""
    return [r for r in range(1, run.completed_rounds + 1) if run.client_ids(r)]


def unavailable_reason(run: RunDir) -> str:
    """Why a run has no stored client updates (for a ``NotChecked``)."""
    cfg, extra = run.config, run.manifest.get("extra") or {}
    if extra.get("secure_aggregation"):
        return "the run used secure aggregation: the server never saw individual client updates"
    if (cfg.get("federation") or {}).get("save_client_updates") is False:
        return "the run was recorded with federation.save_client_updates = false"
    if run.completed_rounds == 0:
        return "the run has no completed round"
    return "no client update is stored in any round of the run directory"


def assumed_f(run: RunDir, n: int, options: dict[str, Any]) -> int:
    """Byzantine clients assumed for the Krum score: ``options["f"]``, else the config's
    ``attack.attackers`` / ``attack.fraction``, else ``floor((n - 3) / 2)``; within ``[0, n]``."""
    if options.get("f") is not None:
        return max(0, min(n, int(options["f"])))
    cfg = run.config
    attack = cfg.get("attack") or {}
    if attack.get("attackers"):
        return min(n, len(attack["attackers"]))
    if attack.get("fraction"):
        total = int((cfg.get("partition") or {}).get("num_clients") or n)
        return min(n, max(1, round(float(attack["fraction"]) * total)))
    return max(0, (n - 3) // 2)


def compute_scores(run: RunDir, options: dict[str, Any] | None = None, *, progress: bool = False) -> list[RoundScores]:
    """:class:`RoundScores` of every round with stored updates."""
    options = options or {}
    server_lr = float((run.config.get("server") or {}).get("server_lr", 1.0) or 1.0)
    threshold = float(options.get("z_threshold", Z_THRESHOLD))
    out = []
    globals_: dict[int, torch.Tensor] = {}

    def g(r: int) -> torch.Tensor:
        if r not in globals_:
            globals_[r] = run.global_vector(r).to(torch.float64)
        return globals_[r]

    for r in tqdm(stored_rounds(run), desc="robustness: rounds", unit="round", disable=not progress):
        ids = run.client_ids(r)
        updates = torch.stack([run.client_update(r, c)[0] for c in ids])
        aggregate = (g(r) - g(r - 1)) / server_lr
        previous = g(r - 1) - g(r - 2) if r >= 2 else None
        out.append(round_scores(r, ids, updates, aggregate=aggregate, previous=previous,
                                f=assumed_f(run, len(ids), options), threshold=threshold,
                                min_ratio=float(options.get("min_ratio", MIN_RATIO))))
    return out


def _heatmap(scores: list[RoundScores]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = sorted({c for s in scores for c in s.client_ids}, key=lambda c: (len(c), c))
    rounds = [s.round for s in scores]
    grid = torch.full((len(clients), len(rounds)), float("nan"))
    marks = []
    for j, s in enumerate(scores):
        for i, cid in enumerate(s.client_ids):
            row = clients.index(cid)
            grid[row, j] = max(abs(float(s.z["norm"][i])), float(s.z["krum"][i]), float(s.z["median_distance"][i]))
            if s.reasons[i]:
                marks.append((j, row))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(rounds) + 2), max(2.5, 0.35 * len(clients) + 1.2)))
    im = ax.imshow(grid.numpy(), aspect="auto", cmap="magma_r", vmin=0.0,
                   vmax=max(2 * Z_THRESHOLD, float(torch.nan_to_num(grid).max())), interpolation="nearest")
    for j, row in marks:
        ax.text(j, row, "x", ha="center", va="center", color="cyan", fontsize=9, fontweight="bold")
    ax.set_xticks(range(len(rounds)), [str(r) for r in rounds], fontsize=7)
    ax.set_yticks(range(len(clients)), clients, fontsize=7)
    ax.set_xlabel("round")
    ax.set_ylabel("client")
    ax.set_title("max robust z (|norm|, Krum, median dist.); x = audit flag", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _prf(pred: list[bool], truth: list[bool]) -> dict[str, Any]:
    tp = sum(p and t for p, t in zip(pred, truth))
    fp = sum(p and not t for p, t in zip(pred, truth))
    fn = sum(t and not p for p, t in zip(pred, truth))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": len(pred) - tp - fp - fn,
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None}


def audit(run: RunDir, settings: Any) -> SectionResult:
    """Robustness section (docs/audit.md, "Robustness").

    Per round and client, from the stored updates: L2 norm, cosine to the applied aggregate and
    to the previous global step, Krum score, distance to the coordinate-wise median, and a robust
    (median/MAD) z-score of norm, Krum score and median distance. Audit flag rule: ``|z(norm)| >
    3.5`` or ``z(krum) > 3.5`` or ``z(median distance) > 3.5``, each only when the value is at
    least 1.5x the round's median (norm: or at most 1/1.5x; Krum score as a distance, i.e. its
    square root), or cosine to the aggregate < 0 (options ``z_threshold``, ``min_ratio``, ``f``). Compared with what the run's defense flagged or
    rejected (metrics "aggregation"); a client the audit flags but the defense accepted is a
    ``warn`` finding. With ground-truth attackers (manifest extra "attackers"): precision and
    recall of the audit flags and of the defense. Backdoor ASR per round when evaluated.
    No stored updates: status ``unavailable``.
    """
    t0 = time.perf_counter()
    options = section_options(settings, NAME)
    progress = bool(getattr(settings, "progress", False))
    result = SectionResult(name=NAME, status="pass", verdict="")
    metrics = {m["round"]: m for m in run.metrics()}
    extra = run.manifest.get("extra") or {}

    asr = {r: m["eval"]["attack_success_rate"] for r, m in metrics.items()
           if isinstance(m.get("eval"), dict) and m["eval"].get("attack_success_rate") is not None}
    if asr:
        result.checked.append("backdoor attack success rate per evaluated round (metrics eval)")
        result.data["asr"] = {str(r): float(v) for r, v in asr.items()}
        last = max(asr)
        result.findings.append(Finding(f"backdoor attack success rate {asr[last]:.1%} after round {last}",
                                       "warn" if asr[last] >= 0.5 else "info", {"asr": result.data["asr"]}))
    else:
        result.not_checked.append(NotChecked("backdoor attack success rate",
                                             "no backdoor trigger set was evaluated in this run"))

    rounds = stored_rounds(run)
    if not rounds:
        why = unavailable_reason(run)
        result.status = "unavailable"
        result.not_checked.append(NotChecked("per-client anomaly scores of the client updates", why))
        result.verdict = f"no per-client robustness audit: {why}"
        result.seconds = time.perf_counter() - t0
        return result

    scores = compute_scores(run, options, progress=progress)
    result.checked += [f"per-client anomaly scores of the stored updates of {len(rounds)} round(s) (L2 norm, "
                       "cosine to the aggregate and to the previous global step, Krum score, distance to the "
                       "coordinate-wise median, robust z-scores)",
                       "the run's defense decisions (metrics 'aggregation') against the audit flags"]
    missing = [r for r in range(1, run.completed_rounds + 1) if r not in rounds]
    if missing:
        result.not_checked.append(NotChecked(f"rounds {missing}", "no client updates stored for them"))

    table: dict[str, Any] = {}
    missed: list[dict[str, Any]] = []
    caught_by_defense: list[dict[str, Any]] = []
    pairs: list[tuple[int, str, bool, bool]] = []  # (round, client, audit flag, defense caught)
    no_defense_info = []
    for s in scores:
        agg = ((metrics.get(s.round) or {}).get("aggregation") or {}).get("clients") or {}
        rows = s.to_json()
        if not agg:
            no_defense_info.append(s.round)
        for i, cid in enumerate(s.client_ids):
            info = agg.get(cid)
            accepted = None if info is None else bool(info.get("accepted", True))
            dflag = None if info is None else bool(info.get("flagged", False))
            caught = None if info is None else (dflag or not accepted)
            rows[cid].update({"defense_accepted": accepted, "defense_flagged": dflag,
                              "defense_clipped": None if info is None else bool(info.get("clipped", False)),
                              "defense_reason": None if info is None else info.get("reason", "")})
            if caught:
                caught_by_defense.append({"round": s.round, "client": cid, "reason": info.get("reason", "")})
            if s.reasons[i] and info is not None and accepted and not dflag:
                missed.append({"round": s.round, "client": cid, "reasons": s.reasons[i]})
            pairs.append((s.round, cid, bool(s.reasons[i]), bool(caught)))
        table[str(s.round)] = {"f": s.f, "clients": rows}
    thr = float(options.get("z_threshold", Z_THRESHOLD))
    mr = float(options.get("min_ratio", MIN_RATIO))
    result.data.update({"rule": f"|z(norm)| > {thr} or z(krum) > {thr} or z(median_distance) > {thr}, each with "
                                f"the value >= {mr}x the round's median (norm: or <= 1/{mr}x; Krum as a distance), "
                                "or cos_aggregate < 0 (robust z = (x - median) / (1.4826 MAD) within a round)",
                        "rounds": table, "defense_caught": caught_by_defense, "audit_flagged_defense_accepted": missed})
    if no_defense_info:
        result.not_checked.append(NotChecked(f"the defense's decisions in rounds {no_defense_info}",
                                             "metrics.jsonl records no per-client aggregation info for them"))

    flagged = [(r, c) for r, c, a, _ in pairs if a]
    flagged_clients = sorted({c for _, c in flagged}, key=lambda c: (len(c), c))
    result.findings.append(Finding(
        f"audit flags {len(flagged)} of {len(pairs)} client-round(s) ({len(flagged_clients)} client(s): "
        f"{', '.join(flagged_clients) or 'none'}); the run's defense flagged or rejected {len(caught_by_defense)}",
        "info", {"audit_flagged": [{"round": r, "client": c} for r, c in flagged]}))
    if missed:
        who = sorted({m["client"] for m in missed}, key=lambda c: (len(c), c))
        result.findings.append(Finding(
            f"{len(missed)} client-round(s) flagged by the audit but accepted by the run's defense "
            f"(client(s) {', '.join(who)})", "warn", {"cases": missed}))
        result.status = "warn"

    attackers = extra.get("attackers")
    if attackers is not None:
        truth_ids = {str(a) for a in attackers}
        truth = [c in truth_ids for _, c, _, _ in pairs]
        audit_prf = _prf([a for *_, a, _ in pairs], truth)
        defense_prf = _prf([d for *_, d in pairs], truth)
        result.data["ground_truth"] = {"attackers": sorted(truth_ids), "audit": audit_prf, "defense": defense_prf}
        result.checked.append("audit flags and defense decisions against the known attackers (manifest extra)")
        if truth_ids:
            def fmt(x: float | None) -> str:
                return "n/a" if x is None else f"{x:.2f}"

            result.findings.append(Finding(
                f"known attackers {sorted(truth_ids, key=lambda c: (len(c), c))}: audit precision "
                f"{fmt(audit_prf['precision'])} / recall {fmt(audit_prf['recall'])}; defense precision "
                f"{fmt(defense_prf['precision'])} / recall {fmt(defense_prf['recall'])} (per client-round)",
                "info", result.data["ground_truth"]))
    else:
        result.not_checked.append(NotChecked("audit flags against known attackers",
                                             "the run records no ground-truth attackers (manifest extra 'attackers')"))

    result.figures["robustness_heatmap.png"] = _heatmap(scores)
    if result.status == "warn":
        result.verdict = (f"{len(missed)} client-round(s) look anomalous but were accepted by the defense "
                          f"(client(s) {', '.join(sorted({m['client'] for m in missed}))})")
    elif flagged:
        result.verdict = f"every anomalous client-round ({len(flagged)}) was caught by the run's defense"
    else:
        result.verdict = f"no anomalous client update in {len(rounds)} round(s)"
    if asr and max(asr.values()) >= 0.5 and result.status == "pass":
        result.status = "warn"
        result.verdict += f"; but the backdoor succeeds ({asr[max(asr)]:.0%} ASR at the last evaluated round)"
    result.seconds = time.perf_counter() - t0
    return result
