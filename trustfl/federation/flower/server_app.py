"""trustfl's Flower ``ServerApp``: the whole federation (loop, server round, run directory) under ``flwr run``.

The ServerApp's ``main`` loads the trustfl config named by the run config, binds Flower's grid
(:func:`~trustfl.federation.flower.engine.bound_grid`) and runs :class:`~trustfl.federation.Federation`:
each round's clients are Flower ``train`` messages to the SuperNodes, and aggregation (any
pre-stages + aggregator + post-stages, client-level DP and its accountant), evaluation and the run
directory are trustfl's, exactly as with the local engine. Before round 1, distributed data steps
(``[dedup]``) run over ``query`` messages on the SuperNodes' own records
(:mod:`~trustfl.federation.flower.data_step`). A server killed mid-run is restarted
with ``resume = true`` and continues after its last complete round.

Run config keys (``[tool.flwr.app.config]`` of the app, or ``flwr run --run-config``):
``config`` (trustfl TOML/YAML; relative to the app folder), ``out-dir`` (the run directory;
relative to the working directory), ``resume`` and ``overwrite`` (booleans).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trustfl.errors import ConfigError
from trustfl.optional import require

__all__ = ["make_server_app", "run_federation"]
log = logging.getLogger(__name__)


def run_federation(grid: Any, run_config: dict[str, Any], *, app_dir: Path | None = None) -> Any:
    """Run the federation the run config names over ``grid``; return its :class:`RunSummary`."""
    from trustfl.config import load_config
    from trustfl.federation import Federation
    from trustfl.federation.flower.data_step import run_data_steps
    from trustfl.federation.flower.engine import bound_grid
    from trustfl.types.distributed import DistributedDataStep

    def value(key: str, kind: type, default: Any = None) -> Any:
        v = run_config.get(key, default)
        if v is None or not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
            raise ConfigError(f"flower run config {key!r}: must be a {kind.__name__}, got {v!r}")
        return v

    path = Path(value("config", str)).expanduser()
    if not path.is_absolute() and app_dir is not None:
        path = app_dir / path
    config = load_config(path, {"federation.engine": "flower"})
    out_dir = Path(value("out-dir", str, f"runs/{config.name}")).expanduser().resolve()
    log.info("trustfl ServerApp: config %s, run directory %s", path, out_dir)
    with bound_grid(grid):
        fed = Federation(config, out_dir=out_dir, resume=value("resume", bool, False),
                         overwrite=value("overwrite", bool, False), progress=False)
        # distributed data steps (e.g. dedup) run on the SuperNodes' own records, not on the server's copy
        steps = [c for c in fed.components if isinstance(c, DistributedDataStep)]
        for step in steps:
            step.defer_to_nodes()
        fed.setup()  # on resume, restores the steps' decisions from the run directory
        run_data_steps(fed.engine, steps, range(config.partition.num_clients))
        return fed.run()


def make_server_app(app_dir: str | Path | None = None) -> Any:
    """A ``flwr.serverapp.ServerApp`` running trustfl (relative ``config`` paths resolve against ``app_dir``)."""
    serverapp = require("flwr.serverapp", extra="flower", feature="the Flower engine (federation.engine = 'flower')")
    app = serverapp.ServerApp()
    base = Path(app_dir) if app_dir is not None else None

    @app.main()
    def main(grid: Any, context: Any) -> None:
        summary = run_federation(grid, dict(context.run_config), app_dir=base)
        log.info("trustfl ServerApp: %d round(s) complete in %s", summary.rounds_completed, summary.run_dir)

    return app


app = make_server_app()
