"""The ``flower`` engine: the client side of each round as Flower messages (Flower 1.x Message API).

:class:`FlowerEngine` runs a round over a Flower ``Grid``: it finds which node hosts each sampled
client (a ``query`` message; nodes name their client from their own node config), sends each a
``train`` message with the global adapter, waits up to ``federation.flower.round_timeout`` and
returns the :class:`~trustfl.types.ServerView` of the clients that replied with a valid update.
A client that crashed (error reply), timed out or sent a malformed reply is dropped from the round
and recorded (``metrics["engine"]["dropped"]``); fewer than ``min_clients`` replies stop the run
with :class:`EngineError`, and the pipeline checks its own Byzantine tolerance on those that
replied. The server round, the run directory and the loop are the local engine's, unchanged.

Where the grid comes from:

* under ``flwr run`` (deployment on SuperLink + SuperNodes, or Flower's own simulation runtime),
  trustfl's ServerApp (:mod:`trustfl.federation.flower.server_app`) runs the whole federation and
  binds its grid (:func:`bound_grid`);
* from ``trustfl run`` / ``Federation(config).run()``, :class:`SimulationEngine` starts Flower's
  simulation runtime on Ray (``flwr.simulation.run_simulation``, one virtual SuperNode per client,
  ``client_cpus`` CPUs each) in a background thread whose ServerApp serves the loop's rounds
  (:class:`SimulationRuntime`, kept for the process's later runs of the same shape).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import json
import logging
import queue
import threading
import time
from typing import Any, Iterator, Sequence

import torch

from trustfl.errors import ConfigError, TrustFLError, UpdateError
from trustfl.federation.client import local_steps
from trustfl.federation.flower.codec import decode_reply, encode_task, flwr_app
from trustfl.federation.flower.data_step import attach_decisions
from trustfl.optional import require
from trustfl.types import ClientResult, RoundReport, ServerView

__all__ = ["EngineError", "FlowerEngine", "SimulationEngine", "SimulationRuntime", "bound_grid", "flower_engine",
           "shutdown_simulations"]
log = logging.getLogger(__name__)
_GRID: contextvars.ContextVar[Any] = contextvars.ContextVar("trustfl_flower_grid", default=None)
FEATURE = "the Flower engine (federation.engine = 'flower')"


class EngineError(TrustFLError, RuntimeError):
    """A round cannot go on: too few clients replied, no node hosts a sampled client, Flower stopped."""


@contextlib.contextmanager
def bound_grid(grid: Any) -> Iterator[None]:
    """Within this block, a run with ``federation.engine = "flower"`` sends its rounds through ``grid``."""
    token = _GRID.set(grid)
    try:
        yield
    finally:
        _GRID.reset(token)


def flower_engine(config: Any, *, privacy: Any, num_labels: int | None, progress: bool) -> Any:
    """The engine for ``federation.engine = "flower"``: the bound grid's, else Flower's simulation on Ray."""
    grid = _GRID.get()
    if grid is not None:
        return FlowerEngine(grid, config=config, privacy=privacy, num_labels=num_labels)
    return SimulationEngine(config, privacy=privacy, num_labels=num_labels, progress=progress)


class FlowerEngine:
    """Run each round's clients as Flower ``train`` messages over ``grid`` (see the module docstring).

    Args:
        grid: a ``flwr.serverapp.Grid`` (deployment or simulation).
        config: the run's :class:`~trustfl.config.RunConfig` (sent to the nodes as JSON).
        privacy: the server-side copy of the sample-level DP hook (it keeps every client's accountant
            between rounds and reports ε), or None.
        num_labels: the classification head's size (nodes build the same model), or None.
    """

    name = "flower"

    def __init__(self, grid: Any, *, config: Any, privacy: Any = None, num_labels: int | None = None) -> None:
        self.grid, self.config, self.privacy, self.num_labels = grid, config, privacy, num_labels
        # the steps a node trains per round at a given batch count: its DP report must show exactly these
        self.local_steps = functools.partial(local_steps, epochs=config.client.epochs,
                                             max_steps=config.client.max_steps)
        self.settings = config.federation.flower
        self.config_json = json.dumps(config.to_dict(), sort_keys=True)
        self.nodes: dict[int, int] = {}  # client id -> node id
        self._asked: set[int] = set()
        self.dropped: dict[int, str] = {}
        self.replied: list[int] = []
        self.secure: dict[str, Any] | None = None  # this round's SecAgg+ facts
        self.decisions: dict[int, dict[str, Any]] = {}  # client id -> {data step: its decision} (data_step.py)
        self.left_out: dict[int, str] = {}  # clients a data step could not decide for, and why

    # ------------------------------------------------------------------ discovery
    def discover(self, client_ids: Sequence[int]) -> None:
        """Learn which connected node hosts each of ``client_ids`` (waits up to ``connect_timeout``)."""
        app = flwr_app()
        deadline = time.monotonic() + self.settings.connect_timeout
        while True:
            fresh = [n for n in self.grid.get_node_ids() if n not in self._asked]
            if fresh:
                messages = [app.Message(app.RecordDict(), dst_node_id=int(n), message_type="query") for n in fresh]
                replies = list(self.grid.send_and_receive(messages, timeout=self.settings.connect_timeout))
                for reply in replies:
                    node = int(reply.metadata.src_node_id)
                    if reply.has_error():
                        log.warning("flower: node %d did not say which client it hosts: %s", node, reply.error.reason)
                        continue
                    self._asked.add(node)
                    record = reply.content.config_records.get("node")
                    ids = record.get("client_ids") if record is not None else None
                    if not isinstance(ids, list) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                            for c in ids):
                        log.warning("flower: node %d sent a malformed client list %r; ignored", node, ids)
                        continue
                    for cid in ids:
                        if cid in self.nodes and self.nodes[cid] != node:
                            raise EngineError(f"flower: client {cid} is claimed by nodes {self.nodes[cid]} and {node}; "
                                              "give every SuperNode its own client-id")
                        self.nodes[int(cid)] = node
            missing = sorted(set(client_ids) - set(self.nodes))
            if not missing:
                return
            if time.monotonic() > deadline:
                raise EngineError(f"flower: no connected SuperNode hosts client(s) {missing} after "
                                  f"{self.settings.connect_timeout:g} s (federation.flower.connect_timeout); start "
                                  "one flower-supernode per client with --node-config \"client-id=<id> "
                                  "data-file='<path>'\"")
            time.sleep(0.5)

    def use_decisions(self, step: str, decisions: dict[int, Any], left_out: dict[int, str]) -> None:
        """Send each client its decision of data ``step`` with every train message; ``left_out`` clients
        (no decision) are dropped from the rounds that sample them (:mod:`.data_step`)."""
        if decisions and self.settings.secure_aggregation != "none":
            raise ConfigError(f"data step {step!r}: its decisions travel with trustfl's train messages, not with "
                              f"federation.flower.secure_aggregation = {self.settings.secure_aggregation!r}'s; "
                              "run it without Flower's secure aggregation")
        for cid, decision in decisions.items():
            self.decisions.setdefault(int(cid), {})[step] = decision
        for cid, why in left_out.items():
            self.left_out[int(cid)] = f"data step {step!r}: {why}"

    # ------------------------------------------------------------------ a round
    def fit(self, round: int, client_ids: Sequence[int], global_vector: torch.Tensor) -> ServerView:
        app = flwr_app()
        ids = [int(c) for c in client_ids]
        self.discover(ids)
        self.dropped, self.replied, self.secure = {}, [], None
        if self.settings.secure_aggregation == "secaggplus":  # Flower's SecAgg+: the server gets only the sum
            from trustfl.federation.flower.secaggplus import secaggplus_round

            view, self.dropped, self.secure = secaggplus_round(self, round, ids, global_vector)
            self.replied = list(view.client_ids)
            self._check_enough(round, ids)
            return view
        states = self.privacy.state_json() if self.privacy is not None else {}
        messages, by_node = [], {}
        for cid in ids:
            if cid in self.left_out:
                self.dropped[cid] = self.left_out[cid]
                continue
            content = encode_task(round=round, client_id=cid, config_json=self.config_json, num_labels=self.num_labels,
                                  global_vector=global_vector, privacy_state=states.get(str(cid)))
            attach_decisions(content, self.decisions.get(cid, {}))
            node = self.nodes[cid]
            by_node[node] = cid
            messages.append(app.Message(content, dst_node_id=node, message_type="train", group_id=str(round)))
        start = time.monotonic()
        replies = list(self.grid.send_and_receive(messages, timeout=self.settings.round_timeout))
        results: dict[int, ClientResult] = {}
        for reply in replies:
            cid = by_node.get(int(reply.metadata.src_node_id))
            if cid is None or cid in results:
                log.warning("flower: round %d: ignored a reply from node %s", round, reply.metadata.src_node_id)
                continue
            if reply.has_error():
                self.dropped[cid] = f"crashed: {reply.error.reason}"
                continue
            try:
                result, state = decode_reply(reply.content, client_id=cid, size=global_vector.numel())
                if self.privacy is not None:
                    if state is None:
                        raise UpdateError(f"client {cid}: sample-level DP is on but the reply has no accountant state")
                    self.privacy.load_round_reports({str(cid): state}, local_steps=self.local_steps)
            except UpdateError as exc:
                self.dropped[cid] = f"invalid reply: {exc}"
                continue
            results[cid] = result
        for cid in ids:
            if cid not in results and cid not in self.dropped:
                self.dropped[cid] = (f"no reply within {self.settings.round_timeout:g} s "
                                     "(federation.flower.round_timeout)")
        self.replied = sorted(results)
        self._check_enough(round, ids)
        log.info("flower: round %d: %d replies in %.2f s", round, len(results), time.monotonic() - start)
        return ServerView(client_ids=self.replied, results=[results[c] for c in self.replied])

    def _check_enough(self, round: int, ids: Sequence[int]) -> None:
        for cid, why in sorted(self.dropped.items()):
            log.warning("flower: round %d: client %d dropped (%s)", round, cid, why)
        if len(self.replied) < self.settings.min_clients:
            raise EngineError(f"flower: round {round}: {len(self.replied)} of {len(ids)} sampled clients replied, "
                              f"fewer than federation.flower.min_clients = {self.settings.min_clients} (dropped: "
                              f"{self.dropped}); the run stays at its last complete round (resume with --resume)")

    def after_round(self, report: RoundReport) -> dict[str, Any]:
        """The round's engine facts for the run directory: who replied, who was dropped and why (+ SecAgg+'s).

        Read once: they are cleared here, so a round that ran no :meth:`fit` (a Poisson round that
        sampled nobody) records no one instead of the previous round's clients.
        """
        facts = {"name": self.name, "replied": list(self.replied),
                 "dropped": {str(c): why for c, why in sorted(self.dropped.items())}}
        if self.secure is not None:
            facts["secure_aggregation"] = dict(self.secure)
        self.dropped, self.replied, self.secure = {}, [], None
        return {"engine": facts}


class SimulationEngine:
    """A run's rounds on Flower's simulation runtime (Ray), shared by the runs of one process.

    The loop (in the caller's thread) calls :meth:`fit`; the runtime's ServerApp (in Flower's
    server thread) runs the round through a :class:`FlowerEngine` on the simulation's grid and hands
    back the :class:`ServerView`. The runtime (Ray, its actors and their loaded models) starts with
    the first round and is kept for later runs with the same number of clients and ``client_cpus``
    (each message carries its run's config); :func:`shutdown_simulations` (also run at interpreter
    exit) stops it.
    """

    name = "flower"

    def __init__(self, config: Any, *, privacy: Any = None, num_labels: int | None = None,
                 progress: bool = True) -> None:
        self.config, self.privacy, self.num_labels, self.progress = config, privacy, num_labels, progress
        self._inner: FlowerEngine | None = None
        self.runtime: SimulationRuntime | None = None

    def _engine(self, grid: Any) -> FlowerEngine:
        if self._inner is None or self._inner.grid is not grid:
            self._inner = FlowerEngine(grid, config=self.config, privacy=self.privacy, num_labels=self.num_labels)
        return self._inner

    def start(self) -> "SimulationRuntime":
        """The running simulation (started on first use) with every virtual SuperNode's client known."""
        if self.runtime is None:
            self.runtime = SimulationRuntime.get(self.config.partition.num_clients,
                                                 self.config.federation.flower.client_cpus)
            clients = range(self.config.partition.num_clients)
            self.runtime.call(lambda grid: self._engine(grid).discover(clients))
        return self.runtime

    def fit(self, round: int, client_ids: Sequence[int], global_vector: torch.Tensor) -> ServerView:
        return self.start().call(lambda grid: self._engine(grid).fit(round, client_ids, global_vector))

    def after_round(self, report: RoundReport) -> dict[str, Any]:
        if self._inner is None:  # no round has reached the simulation yet (e.g. a Poisson round of nobody)
            return {"engine": {"name": self.name, "replied": [], "dropped": {}}}
        return self._inner.after_round(report)


class SimulationRuntime:
    """Flower's simulation runtime in a background thread; its ServerApp runs requests ``fn(grid)``."""

    _running: dict[tuple[int, float], "SimulationRuntime"] = {}
    _lock = threading.Lock()

    def __init__(self, num_supernodes: int, client_cpus: float) -> None:
        self.num_supernodes, self.client_cpus = num_supernodes, client_cpus
        self._requests: queue.Queue[Any] = queue.Queue()
        self._replies: queue.Queue[Any] = queue.Queue()
        self._failure: BaseException | None = None
        self.startup_s: float | None = None  # Ray + actors + the first request, for benchmarks/engines.py
        self._thread = threading.Thread(target=self._simulate, name="trustfl-flower-simulation", daemon=True)

    @classmethod
    def get(cls, num_supernodes: int, client_cpus: float) -> "SimulationRuntime":
        """The running runtime for this shape, or a new one (any other is stopped first: one Ray per process)."""
        key = (int(num_supernodes), float(client_cpus))
        with cls._lock:
            runtime = cls._running.get(key)
            if runtime is not None and runtime._thread.is_alive():
                return runtime
            for other in list(cls._running.values()):
                other.close()
            cls._running.clear()
            runtime = cls(*key)
            t0 = time.perf_counter()
            runtime._thread.start()
            runtime.call(lambda grid: list(grid.get_node_ids()))
            runtime.startup_s = time.perf_counter() - t0
            cls._running[key] = runtime
            return runtime

    def _serve(self, grid: Any, context: Any) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            try:
                self._replies.put(("ok", request(grid)))
            except BaseException as exc:  # handed to the caller's thread, raised there
                self._replies.put(("error", exc))

    def _simulate(self) -> None:
        simulation = require("flwr.simulation", extra="flower", feature=FEATURE)
        serverapp = require("flwr.serverapp", extra="flower", feature=FEATURE)
        from trustfl.federation.flower.client_app import app as client_app

        server_app = serverapp.ServerApp()
        server_app.main()(self._serve)
        backend = {"client_resources": {"num_cpus": self.client_cpus, "num_gpus": 0.0},
                   "init_args": {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False,
                                 "object_store_memory": 100 * 2**20}}
        try:
            simulation.run_simulation(server_app=server_app, client_app=client_app,
                                      num_supernodes=self.num_supernodes, backend_config=backend)
        except BaseException as exc:
            self._failure = exc

    def call(self, request: Any) -> Any:
        """Run ``request(grid)`` in the ServerApp; return its value or raise its exception here."""
        self._requests.put(request)
        while True:
            try:
                kind, value = self._replies.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise EngineError(f"flower: the simulation stopped ({self._failure!r}); see the log above") \
                        from self._failure
                continue
            if kind == "error":
                raise value
            return value

    def close(self, timeout: float = 60.0) -> None:
        """End the ServerApp (and with it the simulation and Ray); safe to call twice.

        Ray workers still busy with a ClientApp when Ray shuts down can outlive it (orphaned, still
        computing): the ones this process started are stopped too.
        """
        if not self._thread.is_alive():
            return
        workers = _ray_workers()
        self._requests.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("flower: the simulation did not stop within %.0f s", timeout)
        for worker in workers:
            with contextlib.suppress(Exception):
                if worker.is_running():
                    worker.kill()


def _ray_workers() -> list[Any]:
    """This process's Ray worker processes (descendants named ``ray::...``), or [] without psutil."""
    try:
        psutil = require("psutil", extra="bench", feature="stopping orphaned Ray workers")
        return [p for p in psutil.Process().children(recursive=True) if p.name().startswith("ray::")]
    except Exception:  # psutil missing (trustfl[bench]) or a process vanished while listing
        return []


def shutdown_simulations() -> None:
    """Stop every Flower simulation this process started (runs at interpreter exit too)."""
    with SimulationRuntime._lock:
        for runtime in list(SimulationRuntime._running.values()):
            runtime.close()
        SimulationRuntime._running.clear()


atexit.register(shutdown_simulations)
