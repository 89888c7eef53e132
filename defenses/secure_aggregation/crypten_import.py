"""The one place trustfl imports CrypTen (every other module calls :func:`import_crypten`).

CrypTen 0.4.1 (Knott et al. 2021, "CrypTen: Secure Multi-Party Computation Meets Machine
Learning", NeurIPS) is unmaintained: at import it reaches ``torch.onnx._internal.registration``,
which torch >= 2.9 moved to ``torch.onnx._internal.torchscript_exporter.registration``. Aliasing
the new module under the old name in ``sys.modules`` is enough for it to import on torch 2.13;
nothing else of CrypTen is patched.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

__all__ = ["import_crypten"]

_OLD = "torch.onnx._internal.registration"
_NEW = "torch.onnx._internal.torchscript_exporter.registration"


def import_crypten() -> ModuleType:
    """Import and return ``crypten`` (with the torch-registration alias in place).

    Raises:
        MissingDependencyError: CrypTen is not installed (names the ``mpc`` extra).
    """
    if "crypten" in sys.modules and sys.modules["crypten"] is not None:
        return sys.modules["crypten"]
    if _OLD not in sys.modules:
        try:
            sys.modules[_OLD] = importlib.import_module(_NEW)
        except ImportError:  # an older torch still has the old module: nothing to alias
            pass
    try:
        # not through trustfl.optional.require: CrypTen is installed without its (dead) dependencies,
        # so no extra can declare it; the hint names the extra and the --no-deps step
        return importlib.import_module("crypten")
    except ImportError as exc:
        from trustfl.errors import MissingDependencyError
        from trustfl.optional import install_hint

        raise MissingDependencyError(f"secure aggregation (MPC) needs CrypTen, which is not installed ({exc}); "
                                     f"install it with: {install_hint('mpc')}") from None
