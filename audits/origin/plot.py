"""A picture of the DCR test: histograms of distance to the closest training record (PNG).

Synthetic records' DCR next to held-out real records' DCR: a synthetic histogram shifted left of the
holdout one (towards 0) is what memorisation looks like (cf. Platzer & Reutterer 2021).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trustfl.audits.origin.dcr import DcrResult

__all__ = ["plot_dcr"]


def plot_dcr(results: Sequence[DcrResult], path: str | Path) -> Path:
    """Write one panel per DCR space to ``path`` (PNG, written atomically); return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trustfl.rundir import atomic_write_bytes

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        syn, hold = np.asarray(r.synthetic_dcr_train), np.asarray(r.holdout_dcr_train)
        bins = np.linspace(0.0, max(1e-6, float(max(syn.max(), hold.max()))), 31)
        ax.hist(hold, bins=bins, alpha=0.6, density=True, label=f"holdout -> train (n={len(hold)})")
        ax.hist(syn, bins=bins, alpha=0.6, density=True, label=f"synthetic -> train (n={len(syn)})")
        ax.set_xlabel("cosine distance" if r.space == "embedding" else "1 - MinHash Jaccard")
        ax.set_ylabel("density")
        ax.set_title(f"DCR ({r.space}): closer to train {r.fraction_closer_to_train:.2f} "
                     f"(exp. {r.expected_fraction:.2f}), p={r.binomial_p:.2g}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path

