"""Typed exceptions of :mod:`trustfl.rundir`.

Every error names the run directory or file that is wrong, echoes the offending value
and says what would be valid or how to fix it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from pathlib import Path

from trustfl.errors import TrustFLError

__all__ = [
    "ConfigMismatchError",
    "CorruptRunError",
    "InvalidTensorError",
    "RoundOrderError",
    "RunDirError",
    "RunDirExistsError",
    "advice",
    "cli_advice",
]

# Which advice an error gives for a fix: the library's (``overwrite=True``) or the CLI's (``--overwrite``).
_CLI_ADVICE: contextvars.ContextVar[bool] = contextvars.ContextVar("trustfl_cli_advice", default=False)


def advice(library: str, cli: str) -> str:
    """``cli`` inside :func:`cli_advice` (the ``trustfl`` command), else ``library``."""
    return cli if _CLI_ADVICE.get() else library


@contextlib.contextmanager
def cli_advice() -> Iterator[None]:
    """Errors raised inside word their advice as command-line flags (``--overwrite``, ``--resume``)."""
    token = _CLI_ADVICE.set(True)
    try:
        yield
    finally:
        _CLI_ADVICE.reset(token)


class RunDirError(TrustFLError):
    """Base class of every error raised by :mod:`trustfl.rundir`."""


class RunDirExistsError(RunDirError, FileExistsError):
    """The target directory already holds files and may not be (or was not asked to be) replaced."""


class ConfigMismatchError(RunDirError, ValueError):
    """``RunWriter.resume(config=...)`` was given a config that differs from the recorded one.

    Attributes:
        differences: one line per differing leaf key, e.g. ``federation.rounds: recorded 2, given 3``.
    """

    def __init__(self, path: str | Path, differences: Sequence[str]) -> None:
        self.path = str(path)
        self.differences = list(differences)
        lines = "\n".join(f"  - {d}" for d in self.differences)
        fix = advice("Resume with the recorded config (RunDir(path).config), pass config=None to skip the check, "
                     "or start a new run directory.",
                     "Resume with the recorded config (the same config file and --set values), or start a new run "
                     "directory (another --out, or --overwrite to replace this one).")
        super().__init__(
            f"cannot resume run {self.path}: config differs from the one recorded in its "
            f"manifest.json in {len(self.differences)} key(s):\n{lines}\n{fix}"
        )


class InvalidTensorError(RunDirError, ValueError):
    """A vector or tensor given to the writer is mis-shaped, of the wrong dtype or non-finite."""


class RoundOrderError(RunDirError, ValueError):
    """A round was written out of order (rounds must be ``completed_rounds + 1``)."""


class RecordsMismatchError(RunDirError, ValueError):
    """Client records rebuilt from a run's config and seed differ from the fingerprints its manifest recorded."""


class CorruptRunError(RunDirError):
    """Files of a run directory are missing, modified, truncated or unparsable.

    Attributes:
        path: the run directory.
        problems: ``(relative path, reason)`` for every bad file found.
    """

    def __init__(self, path: str | Path, problems: Sequence[tuple[str, str]]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}: {reason}" for p, reason in self.problems)
        super().__init__(
            f"run directory {self.path} is corrupt ({len(self.problems)} problem(s)):\n{lines}\n"
            "The manifest.json records the sha256 of every file the writer produced; restore "
            "these files from a backup or re-run the affected rounds."
        )
