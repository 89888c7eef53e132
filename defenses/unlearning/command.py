"""``trustfl unlearn RUN_DIR --client ID [--client ID ...] --method M``: forget clients into a new linked run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trustfl.config import parse_override
from trustfl.defenses.unlearning.settings import METHODS

__all__ = ["add_parser", "run_cli"]


def _client(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--client expects an integer client id, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--client expects a client id >= 0, got {value}")
    return value


def add_parser(sub: Any) -> None:
    """Register the ``unlearn`` sub-command on an argparse sub-parser collection."""
    p = sub.add_parser("unlearn", help="forget client(s) of a finished run into a new, linked run directory "
                                       "(retrain, federaser, pga, rollback)",
                       description="Remove the influence of client(s) from a run's global adapter. Writes a new run "
                                   "directory linked to RUN_DIR (never modified); `trustfl audit NEW_DIR` verifies it "
                                   "against retrain (docs/unlearning.md).")
    p.add_argument("run_dir", type=Path, help="the original run directory")
    p.add_argument("--client", type=_client, action="append", required=True, metavar="ID",
                   help="client id to forget (repeatable)")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="retrain (exact), federaser (Liu et al. 2021), pga (Halimi et al. 2022), rollback")
    p.add_argument("--out", type=Path, default=None,
                   help="new run directory (default: RUN_DIR-unlearn-METHOD-cIDS next to RUN_DIR)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted unlearning from its last round")
    p.add_argument("--overwrite", action="store_true", help="replace an existing unlearning run directory")
    p.add_argument("--set", action="append", type=parse_override, metavar="KEY=VALUE",
                   help="method option, e.g. --set recovery_rounds=2, calibration_ratio=0.5, pga_lr=0.01 "
                        "(see UnlearnSettings; repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from trustfl.defenses.unlearning.api import unlearn
    from trustfl.defenses.unlearning.settings import UnlearnSettings
    from trustfl.rundir import RunDirError

    if not (args.run_dir / "manifest.json").is_file():
        raise RunDirError(f"{args.run_dir} is not a run directory (no manifest.json; written by `trustfl run`)")
    settings = UnlearnSettings.from_dict(dict(args.set or []))
    res = unlearn(args.run_dir, args.client, args.method, out_dir=args.out, settings=settings, resume=args.resume,
                  overwrite=args.overwrite, progress=not args.quiet)
    table = Table(title=f"trustfl unlearn: {args.method}, client(s) {res.forgotten}")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for key in ("accuracy", "attack_success_rate", "loss"):
        if key in res.final_metrics:
            table.add_row(key, f"{res.final_metrics[key]:.4f}")
    table.add_row("first round with the client(s)", str(res.first_round))
    table.add_row("rounds in the new run", str(res.rounds_completed))
    table.add_row("client samples processed", str(res.client_samples))
    table.add_row("wall time", f"{res.wall_seconds:.0f} s")
    table.add_row("run directory", str(res.run_dir))
    Console().print(table)
    Console().print(f"verify it: trustfl audit {res.run_dir} --sections unlearning", soft_wrap=True)
    return 0
