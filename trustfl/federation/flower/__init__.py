"""The ``flower`` engine: trustfl's federation on Flower's Message API (simulation on Ray, or a deployment).

Set ``federation.engine = "flower"`` (``[federation.flower]`` for its settings) and run as usual
(``trustfl run``, ``Federation(config).run()``: Flower's simulation runtime), or deploy
``examples/flower_app`` with ``flower-superlink`` + ``flower-supernode`` + ``flwr run``.
docs/flower.md explains both.
"""

from trustfl.lazy import lazy_exports

_EXPORTS = {
    "EngineError": "trustfl.federation.flower.engine",
    "FlowerEngine": "trustfl.federation.flower.engine",
    "LoopbackDeployment": "trustfl.federation.flower.loopback",
    "SimulationEngine": "trustfl.federation.flower.engine",
    "SimulationRuntime": "trustfl.federation.flower.engine",
    "bound_grid": "trustfl.federation.flower.engine",
    "hosted_client_ids": "trustfl.federation.flower.identity",
    "make_server_app": "trustfl.federation.flower.server_app",
    "run_federation": "trustfl.federation.flower.server_app",
    "shutdown_simulations": "trustfl.federation.flower.engine",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
