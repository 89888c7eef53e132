"""Privacy section: the (ε, δ) accounted at each level and the guarantee it gives (docs/dp.md), then what
an attacker measures: membership inference on the final adapter and the one-run empirical ε lower bound
from the run's canaries, next to the accountant's ε (trustfl.audits.privacy, docs/privacy_audit.md).

Sample level: one training record of one client (add/remove), per client and their max.
Client level: all data of one client (add/remove), with z, q and the client sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustfl.audits.report.result import Finding, NotChecked, SectionResult
from trustfl.audits.report.settings import AuditSettings

__all__ = ["audit", "SAMPLE_RELATION", "CLIENT_RELATION"]

SAMPLE_RELATION = "add/remove one training record of one client"
CLIENT_RELATION = "add/remove one client with all its records"


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def _plot(series: dict[str, list[tuple[int, float]]]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.0), dpi=100)
    for label, pts in series.items():
        ax.plot([r for r, _ in pts], [e for _, e in pts], marker="o", label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("accounted ε")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def audit(run: Any, settings: AuditSettings) -> SectionResult:
    from trustfl.rundir import CorruptRunError

    res = SectionResult(name="privacy", status="pass", verdict="")
    manifest = run.manifest
    extra = manifest.get("extra") or {}
    config = manifest.get("config") or {}
    recorded = extra.get("privacy") or {}
    res.checked.append("privacy accounting recorded in the manifest (extra.privacy)")
    try:
        metrics = run.metrics()
        res.checked.append("per-round privacy metrics (metrics.jsonl privacy_sample / privacy_client)")
    except CorruptRunError as e:
        metrics = []
        res.not_checked.append(NotChecked("per-round privacy metrics", f"metrics.jsonl unreadable: {e.problems[0][1]}"))
        res.findings.append(Finding("metrics.jsonl unreadable: per-round ε not checked", "warn"))
    slack = settings.threshold("epsilon_slack")
    weak = settings.threshold("epsilon_warn")
    guarantees: list[str] = []
    series: dict[str, list[tuple[int, float]]] = {}
    levels: dict[str, Any] = {}

    # ---- sample level
    sample = recorded.get("sample") or (metrics[-1].get("privacy_sample") if metrics else None)
    if sample:
        hook = extra.get("privacy_sample_hook") or {}
        cfg = (config.get("privacy") or {}).get("sample") or {}
        eps_max = sample.get("epsilon_max")
        per_client = sample.get("epsilon_per_client") or {}
        levels["sample"] = {
            "neighbouring_relation": SAMPLE_RELATION, "epsilon_max": eps_max, "delta": sample.get("delta"),
            "epsilon_per_client": per_client,
            "target_epsilon": hook.get("target_epsilon", cfg.get("target_epsilon")),
            "noise_multiplier": hook.get("noise_multiplier", cfg.get("noise_multiplier")),
            "max_grad_norm": hook.get("max_grad_norm", cfg.get("max_grad_norm")),
            "accountant": hook.get("accountant", cfg.get("accountant")),
        }
        guarantees.append(f"sample-level (ε={_fmt(eps_max)}, δ={_fmt(sample.get('delta'))}) per client "
                          f"[{SAMPLE_RELATION}]")
        series["sample level (max over clients)"] = [
            (m["round"], m["privacy_sample"]["epsilon_max"]) for m in metrics
            if isinstance(m.get("privacy_sample"), dict) and m["privacy_sample"].get("epsilon_max") is not None]
        target = levels["sample"]["target_epsilon"]
        if target is not None and eps_max is not None and eps_max > target * (1 + slack):
            res.findings.append(Finding(f"sample-level ε {_fmt(eps_max)} exceeds target_epsilon {_fmt(target)}",
                                        "fail", {"epsilon_max": eps_max, "target_epsilon": target}))
        if metrics and isinstance(metrics[-1].get("privacy_sample"), dict) and recorded.get("sample"):
            last = metrics[-1]["privacy_sample"].get("epsilon_max")
            if last is not None and eps_max is not None and abs(last - eps_max) > slack * max(1.0, abs(eps_max)):
                res.findings.append(Finding("manifest and metrics disagree on the sample-level ε", "warn",
                                            {"manifest": eps_max, "metrics_last_round": last}))

    # ---- client level
    client = recorded.get("client") or (metrics[-1].get("privacy_client") if metrics else None)
    if client:
        fed = config.get("federation") or {}
        eps = client.get("epsilon")
        levels["client"] = {
            "neighbouring_relation": CLIENT_RELATION, "epsilon": eps, "delta": client.get("delta"),
            "noise_multiplier_z": client.get("noise_multiplier"), "sample_rate_q": client.get("sample_rate"),
            "rounds_accounted": client.get("rounds"), "max_epsilon": client.get("max_epsilon"),
            "sampling": fed.get("sampling"), "clients_per_round": fed.get("clients_per_round"),
            "fraction": fed.get("fraction"),
        }
        guarantees.append(f"client-level (ε={_fmt(eps)}, δ={_fmt(client.get('delta'))}) "
                          f"[{CLIENT_RELATION}; z={_fmt(client.get('noise_multiplier'))}, "
                          f"q={_fmt(client.get('sample_rate'))}]")
        series["client level"] = [(m["round"], m["privacy_client"]["epsilon"]) for m in metrics
                                  if isinstance(m.get("privacy_client"), dict)
                                  and m["privacy_client"].get("epsilon") is not None]
        budget = client.get("max_epsilon")
        if budget is not None and eps is not None and eps > budget * (1 + slack):
            res.findings.append(Finding(f"client-level ε {_fmt(eps)} exceeds max_epsilon {_fmt(budget)}", "fail"))
        if not extra.get("secure_aggregation"):
            res.findings.append(Finding(
                "client-level DP without secure aggregation: the server saw individual clipped updates before "
                "the noise; the guarantee holds against readers of the aggregated model (docs/security.md)", "info"))

    for level, info in levels.items():
        e = info.get("epsilon_max", info.get("epsilon"))
        if e is not None and e > weak:
            res.findings.append(Finding(f"{level}-level ε {_fmt(e)} > {_fmt(weak)}: a weak formal guarantee", "warn"))

    res.data["levels"] = levels
    if levels:
        res.data["replace_one"] = ("replace-one neighbours (remove one, add one) follow by group privacy of "
                                   "size 2 as (2ε, (1 + e^ε)δ)")
    if any(len(v) > 0 for v in series.values()):
        res.figures["epsilon_per_round"] = _plot({k: v for k, v in series.items() if v})
        res.data["epsilon_per_round"] = {k: {str(r): e for r, e in v} for k, v in series.items()}

    # unstructured ε a user's own loop logged (RunWriter): report it, but it is no recorded guarantee
    if not levels and metrics:
        loose = {k: v for k, v in metrics[-1].items() if "eps" in k.lower()}
        if loose:
            res.data["unstructured_epsilon_in_metrics"] = loose
            res.findings.append(Finding(
                f"metrics carry ε-like values ({', '.join(loose)}) but no privacy accounting was recorded "
                "(δ, level and neighbouring relation unknown): not audited as a guarantee", "warn"))

    attacks = _attacks(run, settings, res)
    if not levels:
        res.status = "fail" if any(f.severity == "fail" for f in res.findings) else "warn"
        res.verdict = ("no formal privacy guarantee: the run used no differential privacy "
                       "(no sample- or client-level accounting recorded)") + attacks
        res.not_checked.append(NotChecked("accounted ε", "the run recorded no DP accounting (privacy.sample / "
                                                         "privacy.client not set)"))
        return res
    fails = [f for f in res.findings if f.severity == "fail"]
    warns = [f for f in res.findings if f.severity == "warn"]
    res.status = "fail" if fails else ("warn" if warns else "pass")
    res.verdict = "; ".join(guarantees) + (f"; {fails[0].title}" if fails else (f"; {warns[0].title}" if warns else ""))
    res.verdict += attacks
    return res


# options of the privacy audit inside `trustfl audit` (options["privacy"] overrides; docs/privacy_audit.md)
# (no shadow federations by default: `trustfl audit privacy RUN_DIR` trains them for LiRA / RMIA)
SECTION_DEFAULTS: dict[str, Any] = {"max_records": 500, "bootstrap": 200, "shadows": 0,
                                    "attacks": ("loss", "reference")}


def _attacks(run: Any, settings: AuditSettings, res: SectionResult) -> str:
    """Membership inference and the one-run canary audit (trustfl.audits.privacy), next to the accountant's ε.

    Returns the verdict's suffix. A run the audit cannot rebuild (e.g. your own loop's, without a trustfl
    config) is reported as not checked, with why; the accounting above stands either way.
    """
    from trustfl.audits.privacy import PrivacyAuditSettings, privacy_audit
    from trustfl.errors import TrustFLError

    opts = settings.options.get("privacy") if isinstance(settings.options.get("privacy"), dict) else {}
    what = "membership inference / empirical epsilon"
    try:
        pas = PrivacyAuditSettings.from_options({**SECTION_DEFAULTS, "progress": bool(settings.progress), **opts})
        out = privacy_audit(run, pas)
    except TrustFLError as exc:  # a run that cannot be rebuilt, missing holdouts, changed data: say why
        res.not_checked.append(NotChecked(what, str(exc).splitlines()[0]))
        return ""
    except Exception as exc:  # noqa: BLE001 - the accounting part must survive a crash of the attacks
        res.not_checked.append(NotChecked(what, f"the privacy audit crashed: {type(exc).__name__}: {exc}"))
        res.findings.append(Finding(f"membership audit crashed ({type(exc).__name__})", "warn"))
        return ""
    summary = out.to_dict()
    res.data["membership"] = out.membership
    res.data["membership_records"] = out.data
    res.data["empirical_epsilon"] = out.canaries
    res.data["privacy_audit_files"] = {k: str(v) for k, v in out.paths.items()}
    for part, why in out.not_run.items():
        res.not_checked.append(NotChecked({"membership": "membership inference",
                                           "canaries": "empirical epsilon (canaries)"}.get(part, part), why))
    for name, info in out.membership.items():
        if "skipped" in info:
            res.not_checked.append(NotChecked(f"membership attack {name!r}", info["skipped"]))
    if "roc" in out.paths:
        res.figures["membership_roc"] = Path(out.paths["roc"]).read_bytes()
    suffix = ""
    best = summary["summary"].get("best_attack")
    if best is not None:
        b = out.membership[best]
        k = next(iter(b["tpr_at_fpr"]))
        res.checked.append(f"membership inference ({', '.join(n for n, v in out.membership.items() if 'auc' in v)}) "
                           f"on {b['n_members']} members (client training records) vs {b['n_nonmembers']} "
                           "non-members (client holdouts)")
        leak = b["auc_ci"][0] > 0.5
        res.findings.append(Finding(
            f"best membership attack {best}: AUC {b['auc']:.3f} (CI {b['auc_ci'][0]:.3f}-{b['auc_ci'][1]:.3f}), "
            f"TPR {b['tpr_at_fpr'][k]:.3f} at FPR {k}" + ("" if leak else " (not distinguishable from chance)"),
            "warn" if leak else "info", {"attack": best, **{m: b[m] for m in ("auc", "auc_ci", "tpr_at_fpr")}}))
        suffix += f"; MIA best AUC {b['auc']:.3f} ({best})"
    if out.canaries:
        c = out.canaries
        res.checked.append(f"one-run canary audit (Steinke et al. 2023): {c['canaries']} canaries, "
                           f"{c['included']} planted, confidence {c['confidence']}")
        acc = c.get("accounted")
        eps = c["epsilon_lower_bound"]
        if acc and not c.get("empirical_within_accounted", True):
            res.findings.append(Finding(
                f"empirical ε lower bound {eps:.3f} EXCEEDS the accounted {acc['level']}-level ε "
                f"{acc['epsilon']:.3f}: "
                "the DP implementation or its accounting is wrong (or a 1 - confidence chance)", "fail", c))
        elif acc:
            res.findings.append(Finding(
                f"empirical ε lower bound {eps:.3f} <= accounted ε {acc['epsilon']:.3f} ({acc['level']} level; "
                f"tightness {c['tightness']:.1%})", "info", {k: c[k] for k in ("epsilon_lower_bound", "tightness")}))
        else:
            res.findings.append(Finding(f"empirical ε lower bound {eps:.3f} at confidence {c['confidence']} "
                                        "(no accountant to compare with)", "warn" if eps > 0 else "info"))
        suffix += f"; empirical ε >= {eps:.2f}" + (f" (accounted {acc['epsilon']:.2f})" if acc else "")
    return suffix
