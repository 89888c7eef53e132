"""The compute parties' processes and their control connections, started once and reused every round.

:class:`PartyPool` launches K party processes and CrypTen's trusted third party
(:mod:`~.party`), accepts their authenticated control connections, and tears everything down on
:meth:`close` (also as a context manager, on garbage collection and at interpreter exit). Every
wait has a timeout and checks that the processes are alive, so a dead party ends the round with
:class:`PartyFailure` instead of a hang; the pool is then closed and cannot be reused.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import subprocess
import sys
import time
import weakref
from multiprocessing.connection import Connection, Listener
from typing import Any

from trustfl.errors import ConfigError, TrustFLError

__all__ = ["PartyFailure", "PartyPool", "SecureAggregationError"]


class SecureAggregationError(TrustFLError, RuntimeError):
    """Secure aggregation cannot complete (never answered by a plaintext fallback)."""


class PartyFailure(SecureAggregationError):
    """A compute party died, timed out or broke its connection; the round is not released."""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _stop_processes(procs: list[subprocess.Popen], conns: list[Connection]) -> None:
    """Ask every party to stop, then terminate/kill (by pid, only the processes this pool started)."""
    for conn in conns:
        try:
            conn.send(("stop",))
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 5.0
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5.0)
    for conn in conns:
        try:
            conn.close()
        except OSError:
            pass


def _external_key() -> bytes:
    """The operator's shared key for parties started by hand (``TRUSTFL_MPC_AUTHKEY``, hex, >= 32 bytes)."""
    text = os.environ.get("TRUSTFL_MPC_AUTHKEY", "")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise ConfigError("secure_aggregation.launch = 'external': set TRUSTFL_MPC_AUTHKEY to the same hex key "
                          "(>= 32 bytes, e.g. from secrets.token_hex(32)) here and for every party")
    return key


class PartyPool:
    """K compute parties + CrypTen's TTP as separate processes talking over torch.distributed (gloo).

    Args:
        parties: K >= 2 compute parties (default 3).
        rendezvous: the parties' torch.distributed rendezvous: ``"loopback"`` (``tcp://127.0.0.1:<free
            port>``), ``"env"`` (``env://``: ``MASTER_ADDR``/``MASTER_PORT`` from the environment) or an
            explicit ``"tcp://host:port"``.
        host: address the coordinator's control listener binds to (parties connect back to it).
        launch: ``"local"`` starts the processes here; ``"external"`` waits for parties started by hand
            (``python -m trustfl.defenses.secure_aggregation.party``, see :meth:`party_command`): the
            operator sets the same hex key in ``TRUSTFL_MPC_AUTHKEY`` (at least 32 bytes, e.g.
            ``python -c "import secrets; print(secrets.token_hex(32))"``) for the coordinator and every
            party, fixes ``port`` and a ``tcp://`` or ``env`` rendezvous, and :meth:`start` prints the
            commands to run before it waits.
        precision_bits: fixed-point precision p (CrypTen's encoder).
        timeout: seconds any single wait may take (start-up, a round's computation).
        port: the control listener's port (0: any free port; required with ``launch="external"``).
    """

    def __init__(self, *, parties: int = 3, rendezvous: str = "loopback", host: str = "127.0.0.1",
                 launch: str = "local", precision_bits: int = 16, timeout: float = 300.0, port: int = 0) -> None:
        if isinstance(parties, bool) or not isinstance(parties, int) or parties < 2:
            raise ConfigError(f"secure_aggregation.parties: additive sharing needs >= 2 parties, got {parties!r}")
        if rendezvous not in ("loopback", "env") and not rendezvous.startswith("tcp://"):
            raise ConfigError(f"secure_aggregation.rendezvous: must be 'loopback', 'env' or 'tcp://host:port', "
                              f"got {rendezvous!r}")
        if launch not in ("local", "external"):
            raise ConfigError(f"secure_aggregation.launch: must be 'local' or 'external', got {launch!r}")
        if not 12 <= precision_bits <= 20:
            raise ConfigError(f"secure_aggregation.precision_bits: must be in [12, 20], got {precision_bits}")
        if not timeout > 0:
            raise ConfigError(f"secure_aggregation.timeout: must be > 0 seconds, got {timeout}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"secure_aggregation.port: must be an int in [0, 65535], got {port!r}")
        if launch == "external" and (port == 0 or rendezvous == "loopback"):
            raise ConfigError("secure_aggregation.launch = 'external': parties started by hand must know where to "
                              "connect: set port (the control listener's) and rendezvous = 'tcp://host:port' or 'env'")
        self.parties, self.rendezvous_spec, self.host, self.launch = parties, rendezvous, host, launch
        self.port = port
        self._url: str | None = None
        self.precision_bits, self.timeout = precision_bits, float(timeout)
        self.procs: list[subprocess.Popen] = []
        self.conns: list[Connection] = []
        self.pids: list[int] = []
        self._authkey = _external_key() if launch == "external" else secrets.token_bytes(32)
        self._listener: Listener | None = None
        self._finalizer: Any = None
        self.broken: str | None = None
        self.bytes_sent: int = 0

    # ------------------------------------------------------------------ life cycle
    @property
    def started(self) -> bool:
        return bool(self.conns) and self.broken is None

    def _rendezvous(self) -> str:
        if self.rendezvous_spec == "loopback":
            return f"tcp://127.0.0.1:{_free_port('127.0.0.1')}"
        if self.rendezvous_spec == "env":
            return "env://"
        return self.rendezvous_spec

    def party_command(self, rank: int) -> list[str]:
        """The command line that starts party ``rank`` (rank K is the TTP); needs TRUSTFL_MPC_AUTHKEY."""
        host, port = self._listener.address if self._listener is not None else (self.host, self.port)
        if not port:
            raise SecureAggregationError("secure aggregation: the control port is chosen at start(); fix port to "
                                         "know the party commands before")
        url = self._url or self._rendezvous()
        return [sys.executable, "-m", "trustfl.defenses.secure_aggregation.party", "--rank", str(rank),
                "--parties", str(self.parties), "--coordinator", f"{host}:{port}", "--rendezvous", url,
                "--precision-bits", str(self.precision_bits)]

    def start(self) -> "PartyPool":
        """Start (or connect to) the parties; idempotent. Raises :class:`PartyFailure` if they do not come up."""
        if self.broken is not None:
            raise PartyFailure(f"secure aggregation: the party pool is closed ({self.broken}); start a new one")
        if self.conns:
            return self
        self._listener = Listener((self.host, self.port), authkey=self._authkey)
        self._listener._listener._socket.settimeout(self.timeout)  # type: ignore[attr-defined]
        self._url = self._rendezvous()
        if self.launch == "external":
            commands = "\n".join("  " + " ".join(self.party_command(r)) for r in range(self.parties + 1))
            print(f"secure aggregation: waiting {self.timeout:.0f} s for {self.parties} parties and the trusted third "
                  f"party (rank {self.parties}); start each with the same TRUSTFL_MPC_AUTHKEY as here:\n{commands}",
                  file=sys.stderr, flush=True)
        env = {**os.environ, "TRUSTFL_MPC_AUTHKEY": self._authkey.hex(), "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        if self.launch == "local":
            for rank in range(self.parties + 1):  # rank K: CrypTen's trusted third party
                self.procs.append(subprocess.Popen(self.party_command(rank), env=env, stdin=subprocess.DEVNULL))
        self._finalizer = weakref.finalize(self, _stop_processes, self.procs, self.conns)
        atexit.register(self._finalizer)
        by_rank: dict[int, Connection] = {}
        try:
            while len(by_rank) < self.parties:
                self._check_alive("start-up")
                try:
                    conn = self._listener.accept()
                except (socket.timeout, TimeoutError):
                    raise PartyFailure(f"secure aggregation: only {len(by_rank)} of {self.parties} parties connected "
                                       f"within {self.timeout:.0f} s") from None
                hello = conn.recv()
                by_rank[int(hello[1])] = conn
                self.pids.append(int(hello[2]))
            self.conns[:] = [by_rank[r] for r in range(self.parties)]
            for rank in range(self.parties):
                self.recv(rank, expect="ready", what="start-up")
        except BaseException:
            self.close(reason="start-up failed")
            raise
        return self

    def close(self, reason: str = "closed") -> None:
        """Stop every party process (idempotent)."""
        if self.broken is None:
            self.broken = reason
        if self._finalizer is not None:
            self._finalizer()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> "PartyPool":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ messages
    def _check_alive(self, what: str) -> None:
        for rank, p in enumerate(self.procs):
            code = p.poll()
            if code is not None:
                role = "the trusted third party" if rank == self.parties else f"compute party {rank}"
                self._fail(f"{role} (pid {p.pid}) exited with code {code} during {what}")

    def _fail(self, message: str) -> None:
        self.close(reason=message)
        raise PartyFailure(f"secure aggregation: {message}; nothing was released and the round is not committed "
                           "(resume the run with --resume)")

    def send(self, rank: int, msg: tuple, data: "bytes | memoryview | Any" = None, *, what: str) -> None:
        """Send a control message (and a bytes-like payload, e.g. a numpy array: sent without a copy)."""
        try:
            self.conns[rank].send(msg)
            if data is not None:
                self.conns[rank].send_bytes(data)
                self.bytes_sent += memoryview(data).nbytes
        except (OSError, EOFError, ValueError) as exc:
            self._check_alive(what)
            self._fail(f"lost the connection to compute party {rank} during {what} ({type(exc).__name__})")

    def send_all(self, msg: tuple, data: bytes | None = None, *, what: str) -> None:
        for rank in range(self.parties):
            self.send(rank, msg, data, what=what)

    def _wait(self, rank: int, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.conns[rank].poll(0.2):
            self._check_alive(what)
            if time.monotonic() > deadline:
                self._fail(f"compute party {rank} did not answer within {self.timeout:.0f} s during {what}")

    def recv(self, rank: int, *, expect: str, what: str) -> tuple:
        self._wait(rank, what)
        try:
            msg = self.conns[rank].recv()
        except (OSError, EOFError) as exc:
            self._check_alive(what)
            self._fail(f"lost the connection to compute party {rank} during {what} ({type(exc).__name__})")
        if msg[0] != expect:
            self._fail(f"compute party {rank} sent {msg[0]!r} instead of {expect!r} during {what}")
        return msg

    def recv_bytes(self, rank: int, *, what: str) -> bytes:
        self._wait(rank, what)
        try:
            return self.conns[rank].recv_bytes()
        except (OSError, EOFError) as exc:
            self._check_alive(what)
            self._fail(f"lost the connection to compute party {rank} during {what} ({type(exc).__name__})")
            raise  # unreachable
