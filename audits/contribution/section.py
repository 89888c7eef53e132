"""The contribution section of ``trustfl audit``: who helped, who free-rode, who hurt."""

from __future__ import annotations

import io
import time
from typing import Any

from trustfl.audits.contribution.shapley import classify, contributions
from trustfl.audits.report.result import Finding, NotChecked, SectionResult
from trustfl.audits.robustness.section import section_options, stored_rounds, unavailable_reason
from trustfl.rundir import RunDir

__all__ = ["DEFAULTS", "audit"]

NAME = "contribution"
DEFAULTS = {"test_records": 200, "permutations": 10, "tolerance": 1e-3, "convergence": 0.0,
            "max_rounds": None, "free_ride_fraction": 0.25}


def _bar_chart(values: dict[str, float], loo: dict[str, float], metric: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = sorted(values, key=lambda c: -values[c])
    x = range(len(ids))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(ids) + 2), 3.0))
    ax.bar([i - 0.2 for i in x], [values[c] for c in ids], width=0.4, label="GTG-Shapley (sum over rounds)",
           color=["tab:green" if values[c] > 0 else "tab:red" for c in ids])
    if loo:
        ax.bar([i + 0.2 for i in x], [loo.get(c, 0.0) for c in ids], width=0.4, label="leave-one-out",
               color="tab:gray", alpha=0.6)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(list(x), ids, fontsize=7)
    ax.set_xlabel("client")
    ax.set_ylabel(f"contribution ({metric})", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def audit(run: RunDir, settings: Any) -> SectionResult:
    """Contribution section (docs/audit.md, "Contribution").

    Per round with stored updates, GTG-Shapley (Liu et al. 2022) and leave-one-out values of the
    round's clients, with utility = test accuracy (causal LM: minus test loss) of
    ``global(r-1) + server_lr * FedAvg(subset)`` on the run's test rows; summed over rounds per
    client and ranked: helped (> band), free-rode (within ± band), hurt (< -band), where band =
    ``max(tolerance, free_ride_fraction * median |value|)`` (the median, so that one strong
    attacker or contributor does not widen it). Options (``settings.options``):
    ``test_records`` (200), ``permutations`` (10 per round), ``tolerance`` (1e-3, truncation),
    ``convergence`` (0: off), ``max_rounds`` (None: all; else the last ones), ``free_ride_fraction`` (0.25);
    flat keys or nested under ``options["contribution"]``.
    No stored updates, no test rows or a model that cannot be rebuilt: status ``unavailable``.
    """
    t0 = time.perf_counter()
    opts = {**DEFAULTS, **section_options(settings, NAME)}
    progress = bool(getattr(settings, "progress", False))
    result = SectionResult(name=NAME, status="pass", verdict="")

    def unavailable(what: str, why: str) -> SectionResult:
        result.status = "unavailable"
        result.not_checked.append(NotChecked(what, why))
        result.verdict = f"no contribution scores: {why}"
        result.seconds = time.perf_counter() - t0
        return result

    rounds = stored_rounds(run)
    if not rounds:
        return unavailable("per-client contribution scores", unavailable_reason(run))
    if opts["max_rounds"]:
        skipped = rounds[: -int(opts["max_rounds"])]
        rounds = rounds[-int(opts["max_rounds"]):]
        if skipped:
            result.not_checked.append(NotChecked(f"contribution in rounds {skipped}",
                                                 f"capped by option max_rounds = {opts['max_rounds']}"))
    try:
        from trustfl.audits.contribution.utility import build_utility

        utility = build_utility(run, test_records=int(opts["test_records"]))
    except Exception as exc:  # the section must not take the report down
        return unavailable("per-client contribution scores",
                           f"the run's model and test set could not be rebuilt ({type(exc).__name__}: {exc})")
    if not utility.initial_matches:
        result.findings.append(Finding("the rebuilt model's initial adapter differs from the run's round 0 global; "
                                       "utilities may not match the run's own evaluation", "warn"))
        result.status = "warn"

    server_lr = float((run.config.get("server") or {}).get("server_lr", 1.0) or 1.0)
    updates = {r: {c: run.client_update(r, c) for c in run.client_ids(r)} for r in rounds}
    bases = {r: run.global_vector(r - 1) for r in rounds}
    res = contributions(updates, utility, base_by_round=bases, server_lr=server_lr,
                        permutations=int(opts["permutations"]), tolerance=float(opts["tolerance"]),
                        convergence=float(opts["convergence"]), seed=int(run.config.get("seed", 0) or 0),
                        progress=progress)
    shap, loo = res.shapley, res.loo
    mags = sorted(abs(v) for v in shap.values())
    typical = (mags[(len(mags) - 1) // 2] + mags[len(mags) // 2]) / 2 if mags else 0.0  # median |value|
    band = max(float(opts["tolerance"]), float(opts["free_ride_fraction"]) * typical)
    kinds = classify(shap, band)
    ranking = res.ranking()
    result.checked += [f"GTG-Shapley values ({opts['permutations']} permutation(s) per round at most, truncation "
                       f"tolerance {opts['tolerance']}) and leave-one-out values of every client in "
                       f"{len(rounds)} round(s), utility = {utility.metric} on {len(utility.examples)} test record(s) "
                       "of the model rebuilt from the stored updates (FedAvg of each subset)"]
    total_rows = len((run.manifest.get("extra") or {}).get("test_rows") or [])
    if total_rows > len(utility.examples):
        result.not_checked.append(NotChecked(f"{total_rows - len(utility.examples)} further test record(s)",
                                             f"capped by option test_records = {opts['test_records']}"))
    result.data = {**res.to_json(), "classification": kinds, "band": band, "utility": utility.metric,
                   "test_records": len(utility.examples), "utility_evaluations": utility.calls,
                   "options": {k: opts[k] for k in DEFAULTS}}
    groups = {k: [c for c, _ in ranking if kinds[c] == k] for k in ("helped", "free-rode", "hurt")}
    result.findings.append(Finding(
        "ranking by GTG-Shapley (sum over rounds): " + ", ".join(f"{c} {v:+.4f}" for c, v in ranking), "info",
        {"ranking": [{"client": c, "shapley": v, "leave_one_out": loo.get(c), "kind": kinds[c]} for c, v in ranking]}))
    if groups["hurt"]:
        result.findings.append(Finding(f"client(s) {', '.join(groups['hurt'])} lowered the {utility.metric}",
                                       "warn", {"clients": groups["hurt"]}))
        result.status = "warn"
    if groups["free-rode"]:
        result.findings.append(Finding(f"client(s) {', '.join(groups['free-rode'])} contributed about nothing "
                                       f"(|value| <= {band:.4g})", "info", {"clients": groups["free-rode"]}))
    result.figures["contribution.png"] = _bar_chart(shap, loo, utility.metric)
    top = ", ".join(groups["helped"][:3]) or "none"
    result.verdict = (f"top contributor(s): {top}; {len(groups['free-rode'])} free-rider(s), "
                      f"{len(groups['hurt'])} client(s) that hurt")
    result.seconds = time.perf_counter() - t0
    return result
