"""``trustfl audit privacy RUN_DIR``: the privacy audit alone, with its own flags (``trustfl audit RUN_DIR`` runs it
inside the privacy section with the section's defaults). Prints metrics only, never a record's text."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run_cli", "section_options"]


def add_arguments(audit: argparse.ArgumentParser) -> None:
    """Add ``trustfl audit [SECTION] RUN_DIR`` and the privacy flags to the ``audit`` parser."""
    audit.add_argument("section_run_dir", nargs="?", type=Path, default=None, metavar="RUN_DIR",
                       help="with a leading section name (`trustfl audit privacy RUN_DIR`): run that section "
                            "alone; `privacy` takes the flags below")
    g = audit.add_argument_group("privacy audit (`trustfl audit privacy RUN_DIR`; docs/privacy_audit.md)")
    g.add_argument("--attacks", default=None, metavar="A,B",
                   help="membership attacks (default: loss,reference,rmia,lira,lira_online,gradient_alignment; "
                        "those not installed are reported)")
    g.add_argument("--max-records", type=int, default=None, help="members and non-members scored at most (each)")
    g.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples of the CIs (default 500)")
    g.add_argument("--confidence", type=float, default=None, help="level of the CIs and of the empirical epsilon")
    g.add_argument("--candidates", type=int, default=None, help="random candidate secrets for canary exposure")
    g.add_argument("--shadows", type=int, default=None,
                   help="shadow federations for LiRA and RMIA: the run's recipe on random parts of a pool of the "
                        "audited members, non-members and population records, so each audited record is IN some "
                        "shadows and OUT of others (default 2; 0 skips those attacks)")
    g.add_argument("--population", type=int, default=None, help="population records RMIA compares with (default 300)")
    g.add_argument("--no-membership", action="store_true", help="skip membership inference")
    g.add_argument("--no-canaries", action="store_true", help="skip the canary audit (empirical epsilon)")
    g.add_argument("--no-cache", action="store_true", help="recompute scores and the shadow adapter")
    g.add_argument("--no-shadow", action="store_true",
                   help="no one-client shadow adapter: skips `reference`, scores canaries by -loss (cheaper)")
    g.add_argument("--config", type=Path, default=None, metavar="TOML",
                   help="a trustfl config that rebuilds the model and records (a run written by your own loop)")
    g.add_argument("--members", default=None, metavar="FILE",
                   help="member records (.csv/.jsonl with text[,label]) instead of the clients' training records")
    g.add_argument("--nonmembers", default=None, metavar="FILE",
                   help="non-member records (.csv/.jsonl) instead of the clients' holdouts")
    g.add_argument("--progress", action="store_true", default=None,
                   help="progress bars over shadow training and scoring (default: on unless --quiet)")


def section_options(args: argparse.Namespace) -> dict[str, Any]:
    """``{"privacy": {...}}`` for ``AuditSettings.options`` from the privacy flags given (empty: none given)."""
    if args.config is not None or args.members is not None or args.nonmembers is not None:
        from trustfl.audits.privacy.settings import PrivacyAuditError

        raise PrivacyAuditError("--config/--members/--nonmembers apply to `trustfl audit privacy RUN_DIR` only")
    opts = {k: v for k, v in _overrides(args).items()}
    return {"privacy": opts} if opts else {}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for name in ("attacks", "max_records", "bootstrap", "confidence", "candidates", "shadows", "population"):
        value = getattr(args, name, None)
        if value is not None:
            kw[name] = value
    if args.no_membership:
        kw["membership"] = False
    if args.no_canaries:
        kw["canaries"] = False
    if args.no_cache:
        kw["cache"] = False
    if args.no_shadow:
        kw["shadow"] = False
    return kw


def _settings(args: argparse.Namespace) -> Any:
    from trustfl.audits.privacy.settings import PrivacyAuditSettings

    kw = _overrides(args)
    kw["progress"] = bool(args.progress) if args.progress is not None else not args.quiet
    return PrivacyAuditSettings(**kw)


def _records(path: str | None, what: str) -> Any:
    if path is None:
        return None
    from trustfl.audits.privacy.settings import PrivacyAuditError
    from trustfl.data import load_dataset_source

    if not Path(path).is_file():
        raise PrivacyAuditError(f"--{what}: {path} is not a file (give a .csv or .jsonl with a text column)")
    try:
        return load_dataset_source(path)
    except Exception as exc:  # DataSourceError and friends: one line
        raise PrivacyAuditError(f"--{what}: cannot read {path}: {str(exc).splitlines()[0]}") from exc


def run_cli(args: argparse.Namespace) -> int:
    """``trustfl audit privacy RUN_DIR [flags]``; returns the exit code (0: the audit ran)."""
    from rich.console import Console
    from rich.table import Table

    from trustfl.audits.privacy.audit import privacy_audit
    from trustfl.audits.privacy.settings import PrivacyAuditError

    settings = _settings(args)
    config = None
    if args.config is not None:
        from trustfl.config import load_config

        config = load_config(args.config)
    members, nonmembers = _records(args.members, "members"), _records(args.nonmembers, "nonmembers")
    if (members is None) != (nonmembers is None):
        raise PrivacyAuditError("--members and --nonmembers go together")
    run_dir = args.section_run_dir
    result = privacy_audit(run_dir, settings, config=config, members=members, nonmembers=nonmembers)
    console = Console()
    table = Table(title=f"trustfl audit privacy {run_dir}")
    for col in ("attack", "AUC (CI)", *[f"TPR@{f:g} FPR (CI)" for f in settings.fprs], "note"):
        table.add_column(col, overflow="fold")
    for name, info in result.membership.items():
        if "skipped" in info:
            table.add_row(name, "-", *["-"] * len(settings.fprs), f"not run: {info['skipped']}")
            continue
        tprs = [f"{info['tpr_at_fpr'][repr(float(f))]:.3f} ({info['tpr_at_fpr_ci'][repr(float(f))][0]:.3f}-"
                f"{info['tpr_at_fpr_ci'][repr(float(f))][1]:.3f})" for f in settings.fprs]
        table.add_row(name, f"{info['auc']:.3f} ({info['auc_ci'][0]:.3f}-{info['auc_ci'][1]:.3f})", *tprs,
                      f"{info['n_members']} vs {info['n_nonmembers']}" + (" (cached)" if info.get("cached") else ""))
    if result.membership:
        console.print(table)
    c = result.canaries
    if c:
        acc = c.get("accounted")
        line = (f"empirical epsilon >= {c['epsilon_lower_bound']:.3f} at confidence {c['confidence']} "
                f"({c['correct']}/{c['guesses']} guesses right, {c['canaries']} canaries, delta {c['delta']:g})")
        if acc:
            line += (f"; accounted {acc['level']}-level epsilon {acc['epsilon']:.3f} "
                     f"({'within' if c['empirical_within_accounted'] else 'EXCEEDED'}, tightness {c['tightness']:.1%})")
        console.print(line, soft_wrap=True)
        e = c["exposure"]
        if e.get("mean_included") is not None:
            console.print(f"canary exposure: mean {e['mean_included']:.2f} bits planted vs "
                          f"{(e['mean_excluded'] or 0):.2f} not planted (max {e['max_bits']:.2f})", soft_wrap=True)
    for part, why in result.not_run.items():
        console.print(f"{part}: not run: {why}", soft_wrap=True)
    console.print(f"results: {result.paths.get('json')}" + (f" (ROC plot {result.paths['roc']})"
                                                            if "roc" in result.paths else ""), soft_wrap=True)
    return 0
