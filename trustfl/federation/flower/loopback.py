"""A real Flower deployment on one machine: a SuperLink and SuperNodes as processes on loopback.

For trying a deployment, the deployment test and ``benchmarks/engines.py``: starts
``flower-superlink`` and one ``flower-supernode`` per node config (insecure mode, free ports,
``FLWR_HOME`` in a work folder), submits an app with ``flwr run`` and always stops every process
it started (their whole process trees) on exit. On real machines run the same three commands by
hand (docs/flower.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from trustfl.errors import TrustFLError

__all__ = ["LoopbackDeployment", "free_port"]


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the process that started it dies (even by SIGKILL), so a
    killed test or benchmark leaves no SuperLink/SuperNode behind (their SuperExecs watch them)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(value: Any) -> str:
    """A value for Flower's ``key=value`` config strings; a string as a TOML literal ``'...'``.

    Raises:
        TrustFLError: a string holding ``'`` or a control character, which such a literal cannot carry
            (Flower's parser ends the value at the next ``'``); nothing is dropped silently.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    bad = next((c for c in text if c == "'" or (ord(c) < 32 and c != "\t") or ord(c) == 127), None)
    if bad is not None:
        raise TrustFLError(f"flower loopback: config value {text!r} holds {bad!r}, which Flower's key='value' "
                           "config strings cannot carry; rename the path or value without it")
    return "'" + text + "'"


def node_config_arg(config: dict[str, Any]) -> str:
    """``{"client-id": 0, "data-file": "/x"}`` -> ``client-id=0 data-file='/x'`` (flower-supernode --node-config)."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())


class LoopbackDeployment:
    """``with LoopbackDeployment(work, [node_config, ...]) as d: d.run(app_dir, run_config)``.

    Args:
        work: folder for ``FLWR_HOME`` and the processes' logs.
        node_configs: one SuperNode per entry (its ``--node-config``).
        start_timeout: seconds to wait for the SuperLink's port.
    """

    def __init__(self, work: str | Path, node_configs: Sequence[dict[str, Any]], *,
                 start_timeout: float = 60.0) -> None:
        self.work = Path(work)
        self.node_configs = list(node_configs)
        self.start_timeout = start_timeout
        self.port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        bindir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "FLWR_HOME": str(self.work / "flwr_home"),
                    "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
        self.startup_s: float | None = None

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.work / f"{name}.log", "wb")
        self.processes[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                start_new_session=True, preexec_fn=_die_with_parent)

    def _wait_port(self, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise TrustFLError(f"flower loopback: {name} exited with {proc.returncode}; see "
                                       f"{self.work / (name + '.log')}")
            time.sleep(0.2)
        raise TrustFLError(f"flower loopback: nothing listens on 127.0.0.1:{port} after {self.start_timeout:g} s")

    def start(self) -> "LoopbackDeployment":
        t0 = time.perf_counter()
        home = self.work / "flwr_home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
                                          f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        self._spawn("superlink", ["flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(self.port),
                                  "--disable-runtime-dependency-installation"])
        self._wait_port(self.port)
        for i, config in enumerate(self.node_configs):
            self.start_node(i, config)
        self.startup_s = time.perf_counter() - t0
        return self

    def start_node(self, i: int, config: dict[str, Any]) -> None:
        port = free_port()
        self._spawn(f"supernode{i}", ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                                      "--port", str(port), "--node-config", node_config_arg(config)])
        self._wait_port(port)

    def stop_node(self, i: int) -> None:
        """Kill SuperNode ``i`` and everything it started (a node crash)."""
        self._kill(self.processes.pop(f"supernode{i}"))

    def run(self, app_dir: str | Path, run_config: dict[str, Any], *, timeout: float = 600.0) -> str:
        """``flwr run APP loopback --run-config ... --stream``; returns its output (raises on failure/timeout)."""
        config = " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())
        try:
            done = subprocess.run(["flwr", "run", str(app_dir), "loopback", "--run-config", config, "--stream"],
                                  env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TrustFLError(f"flower loopback: flwr run did not finish within {timeout:g} s") from exc
        out = done.stdout + done.stderr
        if done.returncode != 0 or "ServerApp raised an exception" in out:
            raise TrustFLError(f"flower loopback: flwr run failed (exit {done.returncode}):\n{out[-4000:]}")
        return out

    def submit(self, app_dir: str | Path, run_config: dict[str, Any]) -> subprocess.Popen[bytes]:
        """Start ``flwr run APP loopback --run-config ... --stream`` without waiting (output in ``flwr_run.log``);
        the caller watches the run directory, e.g. to :meth:`kill_server_app` mid-run, and stops it."""
        config = " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())
        log = open(self.work / "flwr_run.log", "ab")
        return subprocess.Popen(["flwr", "run", str(app_dir), "loopback", "--run-config", config, "--stream"],
                                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                                preexec_fn=_die_with_parent)

    def server_app_pids(self) -> list[int]:
        """Process ids of the ServerApps the SuperLink runs (``flwr-serverapp``, one per running run)."""
        from trustfl.optional import require

        psutil = require("psutil", extra="bench", feature="finding a loopback deployment's ServerApp")
        link = self.processes.get("superlink")
        if link is None:
            return []
        pids = []
        for p in psutil.Process(link.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if any("flwr-serverapp" in part for part in p.cmdline()):
                    pids.append(p.pid)
        return pids

    def kill_server_app(self) -> list[int]:
        """SIGKILL every running ServerApp (a server crash mid-run); the SuperLink and SuperNodes stay up."""
        pids = self.server_app_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    # ------------------------------------------------------------------ clean-up
    @staticmethod
    def _kill(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` s: the process, its session and every descendant.

        Descendants are collected first (SuperExec and the App processes start their own sessions).
        """
        from trustfl.optional import require

        psutil = require("psutil", extra="bench", feature="stopping a loopback Flower deployment")
        try:
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            for p in family:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(sig)
            _, alive = psutil.wait_procs(family, timeout=grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
            if not alive:
                return
            family = alive

    def close(self) -> None:
        for name in sorted(self.processes, reverse=True):  # nodes first, the SuperLink last
            self._kill(self.processes[name])
        self.processes.clear()

    def __enter__(self) -> "LoopbackDeployment":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.close()
