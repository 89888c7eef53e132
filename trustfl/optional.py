"""Optional dependencies: imported where they are used, with a one-line fix when they are missing.

``pip install trustfl`` installs the core (federated LoRA fine-tuning, robust aggregation,
attacks, run directories). Heavier features live in extras (declared in ``pyproject.toml``):

| extra    | feature                                   | distributions                          |
|----------|-------------------------------------------|----------------------------------------|
| `dp`     | differential privacy (`trustfl.defenses.dp`) | opacus                              |
| `dedup`  | near-duplicate detection, origin checks   | faiss-cpu                              |
| `eval`   | `trustfl eval --ray-address`              | ray                                    |
| `flower` | the Flower engine (`federation.engine`)   | flwr[simulation] (with ray)            |
| `mpc`    | secure aggregation (MPC, CrypTen)         | omegaconf, onnx, onnxscript + crypten (`--no-deps`) |
| `bench`  | `benchmarks/`                             | psutil, datasketch                     |
| `test`   | the test suite                            | pytest, hypothesis, pytest-xdist, import-linter |
| `all`    | all of the above                          |                                        |

Every import of an optional dependency goes through :func:`require` (a test in
``tests/test_packaging.py`` checks that no module imports one directly)::

    faiss = require("faiss", extra="dedup", feature="near-duplicate detection")
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from trustfl.errors import MissingDependencyError

__all__ = ["DISTRIBUTIONS", "install_hint", "require"]

# import name -> pip distribution, where they differ
DISTRIBUTIONS: dict[str, str] = {"faiss": "faiss-cpu", "crypten": "crypten==0.4.1"}
# crypten's declared dependencies are dead (sklearn stub) or huge (torchvision, tensorboard):
# the extra installs what it really needs, crypten itself goes in without dependencies.
_EXTRA_STEPS: dict[str, str] = {"mpc": " && pip install --no-deps crypten==0.4.1"}


def install_hint(extra: str) -> str:
    """The shell command that installs ``extra``, e.g. ``pip install 'trustfl[dp]'``."""
    return f"pip install 'trustfl[{extra}]'{_EXTRA_STEPS.get(extra, '')}"


def _installed(top: str) -> bool:
    if top in sys.modules:
        return sys.modules[top] is not None  # None: import blocked (how tests fake a missing module)
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import and return ``module`` (dotted names allowed), or say which extra installs it.

    Args:
        module: the module to import, e.g. ``"opacus"`` or ``"opacus.accountants.utils"``.
        extra: the trustfl extra that declares its distribution, e.g. ``"dp"``.
        feature: what needs it, for the message, e.g. ``"differential privacy"``.

    Raises:
        MissingDependencyError: (an ``ImportError``) the module is not installed, e.g.
            ``differential privacy needs opacus, which is not installed: pip install 'trustfl[dp]'``;
            or it is installed but fails to import (the message then carries the cause).
    """
    top = module.partition(".")[0]
    name = DISTRIBUTIONS.get(top, top)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if not _installed(top):
            msg = f"{feature} needs {name}, which is not installed: {install_hint(extra)}"
        elif missing.startswith(top + ".") and (module + ".").startswith(missing + "."):
            msg = f"{feature} needs {module}, which the installed {name} lacks: {install_hint(extra)}"
        else:  # installed, but it (or one of its own dependencies) fails to import
            msg = f"{feature} needs {name}, which is installed but fails to import ({exc}); reinstall: {install_hint(extra)}"
        raise MissingDependencyError(msg, name=top) from exc
