"""The ``trustfl`` command line: ``trustfl run CONFIG`` and ``trustfl verify RUN_DIR``.

Later issues add ``eval``, ``audit``, ``dedup``, ``origin``, ``unlearn`` and ``demo`` as
sub-commands of the same parser.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from trustfl.config import parse_override

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from trustfl.config import load_config
    from trustfl.federation import Federation

    config = load_config(args.config, dict(args.set or []))
    out = args.out or Path("runs") / config.name
    _check_signing(out, args.sign_key, resume=args.resume)  # before any data or model is loaded
    fed = Federation(config, out_dir=out, resume=args.resume, overwrite=args.overwrite,
                     progress=not args.quiet, signing_key=args.sign_key)
    summary = fed.run()
    if summary.stopped_reason and summary.rounds_completed < fed.start_round:  # stopped before training a round
        print(f"trustfl run: error: no round trained, {out} stays at round {summary.rounds_completed}: "
              f"{summary.stopped_reason}", file=sys.stderr)
        return 1
    console = Console()
    table = Table(title=f"trustfl run: {config.name}")
    table.add_column("round", justify="right")
    keys = sorted({k for m in summary.history for k in m.get("eval", {}) if k != "tokens"})
    for k in keys:
        table.add_column(k, justify="right")
    table.add_column("train loss", justify="right")
    table.add_column("clients s", justify="right")
    for m in summary.history:
        ev = m.get("eval", {})
        table.add_row(str(m["round"]), *[f"{ev[k]:.4f}" if k in ev else "-" for k in keys],
                      f"{m['train_loss']:.4f}" if "train_loss" in m else "-", f"{m['time']['clients_s']:.1f}")
    console.print(table)
    if summary.baseline_accuracy is not None:
        console.print(f"majority-class baseline accuracy: {summary.baseline_accuracy:.4f}")
    last_privacy = next((m for m in reversed(summary.history) if any(k.startswith("privacy_") for k in m)), {})
    if "privacy_sample" in last_privacy:  # sample-level DP: the worst client's (ε, δ)
        p = last_privacy["privacy_sample"]
        console.print(f"sample-level DP: epsilon = {p['epsilon_max']:.4g} (max over clients), delta = {p['delta']:g}")
    if "privacy_client" in last_privacy:
        p = last_privacy["privacy_client"]
        console.print(f"client-level DP: epsilon = {p['epsilon']:.4g}, delta = {p['delta']:g} "
                      f"after {p['rounds']} rounds")
    if summary.stopped_reason:
        console.print(f"[yellow]stopped early:[/yellow] {summary.stopped_reason}")
    console.print(f"run directory: {summary.run_dir.resolve()}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from trustfl.evaluation import load_matrix, run_matrix, write_report

    spec = load_matrix(args.matrix)
    out = Path(args.out or spec.out or Path("runs") / spec.name)
    cells = spec.cells()
    print(f"{spec.name}: {len(cells)} cells ({len(spec.attacks)} attacks x {len(spec.defenses)} defenses x "
          f"fractions {spec.grid.fractions} x seeds {spec.grid.seeds} x "
          f"{'alphas ' + str(spec.alphas) if spec.scheme == 'dirichlet' else spec.scheme + ' partition'}) -> {out}")
    rows = run_matrix(spec, out, workers=args.workers, ray_address=args.ray_address,
                      retry_failed=args.retry_failed, progress=not args.quiet)
    paths = write_report(rows, out, attacks=[a.label for a in spec.attacks], defenses=[d.label for d in spec.defenses],
                         fractions=spec.grid.fractions, alphas=spec.alphas, scheme=spec.scheme)
    print(paths["md"].read_text())
    for name, path in paths.items():
        print(f"{name}: {path}")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        crashed = [r["cell"] for r in failed if r["status"] == "crashed"]
        print(f"{len(failed)} cell(s) failed ({len(crashed)} crashed: a bug, traceback in their result.json); see "
              "results.md (rerun with --retry-failed)", file=sys.stderr)
        return 1
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from trustfl.rundir import RunDir, RunDirError

    root = Path(args.run_dir)
    if root.is_dir() and not (root / "manifest.json").exists():  # a folder that never was a run, not a corrupt run
        hints = [p for p in (root / "run", *sorted(root.glob("cells/*/run"))) if (p / "manifest.json").is_file()]
        hint = f"; did you mean {hints[0]}?" if len(hints) == 1 else (
            f"; did you mean one of {', '.join(map(str, hints[:3]))}{' ...' if len(hints) > 3 else ''}?" if hints
            else " (a run directory holds manifest.json, written by `trustfl run`)")
        raise RunDirError(f"{root} is not a run directory (no manifest.json){hint}")
    report = RunDir(args.run_dir).verify(public_key=args.key)
    print(f"{args.run_dir}: OK ({report})")
    return 0


def _check_signing(out: Path, sign_key: Path | None, *, resume: bool) -> None:
    """A bad or misplaced --sign-key, or a signed run resumed without one, fails before the run starts."""
    from trustfl.rundir.signing import SigningKeyError, load_private_key, signer

    if sign_key is not None:
        load_private_key(sign_key, run_dir=out)
    elif resume and (Path(out) / "manifest.json").is_file():
        from trustfl.rundir import RunDir

        by = signer(RunDir(out).manifest)
        if by is not None:
            raise SigningKeyError(f"run {out} is signed by {by}; resuming re-signs every commit and needs that "
                                  "private key: pass --sign-key FILE")


def _cmd_keygen(args: argparse.Namespace) -> int:
    from trustfl.rundir.signing import generate_key, key_id, load_public_key

    private, public = generate_key(args.out)
    print(f"private key: {private} (mode 0600; keep it outside every run directory, pass it as --sign-key)")
    print(f"public key:  {public} ({key_id(load_public_key(public))}; give it to auditors: "
          f"trustfl verify RUN_DIR --key {public})")
    return 0


def _cmd_dedup(args: argparse.Namespace) -> int:
    from trustfl.defenses.dedup.command import run_cli

    return run_cli(args)


def _add_dedup_parser(sub: Any) -> None:
    from trustfl.defenses.dedup.command import add_parser  # flags and defaults: one source, DedupSettings

    add_parser(sub, _cmd_dedup)


def _cmd_audit(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from trustfl.audits.report import AuditSettings, parse_sections, run_audit
    from trustfl.rundir import RunDirError

    if args.section_run_dir is not None:  # `trustfl audit SECTION RUN_DIR`
        args.sections, args.run_dir = ",".join(parse_sections(str(args.run_dir))), args.section_run_dir
        if args.sections == "privacy":
            from trustfl.audits.privacy.command import run_cli

            return run_cli(args)
    sections = parse_sections(args.sections)  # an unknown name: AuditError, exit 2, one line
    root = Path(args.run_dir)
    if not (root / "manifest.json").is_file():
        raise RunDirError(f"{root} is not a run directory (no manifest.json; written by `trustfl run` or RunWriter)")
    options = {"public_key": str(args.key)} if args.key else {}
    from trustfl.audits.privacy.command import section_options

    options.update(section_options(args))  # privacy flags also apply inside the full audit
    report = run_audit(root, sections=sections, settings=AuditSettings(options=options), progress=not args.quiet)
    colors = {"pass": "green", "warn": "yellow", "fail": "red", "unavailable": "dim"}
    table = Table(title=f"trustfl audit {root}")
    table.add_column("section")
    table.add_column("status")
    table.add_column("verdict", overflow="fold")
    for name, status, verdict in report.summary():
        table.add_row(name, f"[{colors.get(status, 'white')}]{status}[/]", verdict)
    console = Console()
    console.print(table)
    console.print(f"report: {report.paths['html']} (and {Path(report.paths['json']).name})", soft_wrap=True)
    return 0


def demo_config_path() -> Path:
    """The main job's config, shipped inside the package (``trustfl/demo.toml``)."""
    from importlib.resources import files

    return Path(str(files("trustfl").joinpath("demo.toml")))


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job: a federated run with an attacker, defenses and DP, then its audit, then a summary."""
    import time

    from rich.console import Console
    from rich.table import Table

    from trustfl.audits.report import run_audit
    from trustfl.config import load_config
    from trustfl.federation import Federation

    start = time.perf_counter()
    config = load_config(demo_config_path(), dict(args.set or []))
    out = args.out or Path("runs") / config.name
    console = Console()
    console.print(f"trustfl demo: {config.partition.num_clients} clients on {config.data.name} with "
                  f"{config.model.name} + LoRA, attacker(s) {config.attack.attackers}, pipeline "
                  f"{config.server.pre} -> {config.server.aggregator}, sample-level DP -> {out}")
    summary = Federation(config, out_dir=out, overwrite=True, progress=not args.quiet).run()
    report = run_audit(out, progress=not args.quiet)
    final = summary.final_metrics
    privacy = next((m["privacy_sample"] for m in reversed(summary.history) if "privacy_sample" in m), {})
    flagged = sorted({int(c) for m in summary.history for c, v in m.get("aggregation", {}).get("clients", {}).items()
                      if not v.get("accepted", True) or v.get("flagged")})
    contribution = report.section("contribution").data  # GTG-Shapley per client, summed over rounds
    shapley = contribution.get("shapley", {})
    table = Table(title="trustfl demo")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("clean accuracy", f"{final.get('accuracy', float('nan')):.4f} (majority baseline "
                                    f"{summary.baseline_accuracy:.4f})")
    table.add_row("backdoor attack success", f"{final.get('attack_success_rate', float('nan')):.4f}")
    table.add_row("sample-level DP", f"epsilon {privacy.get('epsilon_max', float('nan')):.3f} (max over clients), "
                                     f"delta {privacy.get('delta', float('nan')):g}")
    table.add_row("attackers (ground truth)", str(config.attack.attackers))
    table.add_row("clients the defense rejected or flagged", str(flagged))
    table.add_row("top contributors (GTG-Shapley)", ", ".join(f"client {c} ({shapley[c]:+.3g})"
                                                             for c in contribution.get("ranking", [])[:3]) or "-")
    for name, status, verdict in report.summary():
        table.add_row(f"audit: {name}", f"{status}: {verdict}")
    table.add_row("report", str(report.paths.get("html")))
    table.add_row("wall time", f"{time.perf_counter() - start:.0f} s")
    console.print(table)
    return 0


def _cmd_origin(args: argparse.Namespace) -> int:
    from trustfl.audits.origin.command import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustfl",
        description="Private, trustworthy and auditable federated fine-tuning of foundation models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run (or resume) a federated fine-tuning job from a TOML/YAML config",
                         description="Run a federated LoRA fine-tuning job; writes a run directory.")
    run.add_argument("config", help="path to a .toml/.yaml run config (see examples/quickstart.toml)")
    run.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<config name>)")
    run.add_argument("--resume", action="store_true", help="continue a killed run from its last complete round")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    run.add_argument("--set", action="append", type=parse_override, metavar="KEY=VALUE",
                     help="override a config value, e.g. --set federation.rounds=2 (repeatable)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    run.add_argument("--sign-key", type=Path, default=None, metavar="FILE",
                     help="sign the run directory's manifest at every commit with this Ed25519 private key "
                          "(from `trustfl keygen`; kept outside the run directory; required to --resume a signed run)")
    run.set_defaults(func=_cmd_run)

    ev = sub.add_parser("eval", help="run an attack x defense evaluation matrix (resumable, parallel, Ray)",
                        description="Run every cell (a federated run) of an attack x defense matrix; "
                                    "write results.csv/json/md and heatmaps. Finished cells are skipped.")
    ev.add_argument("matrix", help="matrix TOML (see examples/robustness_matrix.toml)")
    ev.add_argument("--out", type=Path, default=None, help="output folder (default: the matrix's out or runs/<name>)")
    ev.add_argument("--workers", type=int, default=None, help="parallel worker processes on this machine")
    ev.add_argument("--ray-address", default=None,
                    help="run cells as Ray tasks on this cluster ('auto', 'ray://host:port', or 'local')")
    ev.add_argument("--retry-failed", action="store_true", help="rerun cells that ended with an error")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=_cmd_eval)

    verify = sub.add_parser("verify", help="check every file of a run directory against its manifest (sha256)",
                            description="Verify a run directory: sha256 and integrity of every file.")
    verify.add_argument("run_dir", type=Path)
    verify.add_argument("--key", type=Path, default=None, metavar="PUB",
                        help="the operator's public key (.pub from `trustfl keygen`): the run must be signed by it, "
                             "with no manifest field (config, history, file hashes) changed since")
    verify.set_defaults(func=_cmd_verify)

    keygen = sub.add_parser("keygen", help="create an Ed25519 key pair for signing run directories",
                            description="Write a new Ed25519 private key to FILE (mode 0600) and its public key "
                                        "to FILE.pub; an existing file is never overwritten.")
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE", help="private key file to create")
    keygen.set_defaults(func=_cmd_keygen)

    audit = sub.add_parser("audit", help="audit a run directory: integrity, privacy, robustness, contribution, "
                                          "data, unlearning; writes RUN_DIR/audit/report.html and report.json",
                           description="Audit a finished run directory (also one written by your own loop through "
                                       "RunWriter). Exits 0 when the audit ran, whatever its verdicts.")
    audit.add_argument("run_dir", type=Path)
    audit.add_argument("--sections", default=None, metavar="A,B",
                       help="comma-separated sections (default: all): integrity, privacy, robustness, "
                            "contribution, data, unlearning")
    audit.add_argument("--key", type=Path, default=None, metavar="PUB",
                       help="the operator's public key: the integrity section checks the run's signature against it")
    audit.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    from trustfl.audits.privacy.command import add_arguments as _add_privacy_arguments

    _add_privacy_arguments(audit)  # `trustfl audit privacy RUN_DIR [--attacks ...]`
    audit.set_defaults(func=_cmd_audit)

    demo = sub.add_parser("demo", help="the main job: a federated run with a backdoor attacker, a robust pipeline "
                                        "and DP, then its audit (offline, minutes)",
                          description="Run trustfl/demo.toml (MiniLM + LoRA on sms_spam, 8 clients, one backdoor "
                                      "attacker, NNM + norm clipping + Multi-Krum, sample-level DP) and audit it.")
    demo.add_argument("--out", type=Path, default=None, help="run directory (default: runs/demo; replaced)")
    demo.add_argument("--set", action="append", type=parse_override, metavar="KEY=VALUE",
                      help="override a config value, e.g. --set federation.rounds=1")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)
    _add_dedup_parser(sub)
    from trustfl.defenses.unlearning.command import add_parser as _add_unlearn_parser

    _add_unlearn_parser(sub)
    from trustfl.audits.origin.command import add_parser as _add_origin_parser

    _add_origin_parser(sub, _cmd_origin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from trustfl.errors import TrustFLError
    from trustfl.rundir import RunDirError

    from trustfl.rundir.errors import cli_advice

    try:
        with cli_advice() if args.command in ("run", "verify", "keygen") else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except (TrustFLError, RunDirError) as exc:
        print(f"trustfl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"trustfl {args.command}: interrupted; completed rounds are kept (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
