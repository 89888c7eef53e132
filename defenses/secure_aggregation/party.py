"""A compute party (or CrypTen's trusted third party) as its own process: ``python -m ...party``.

Each party joins CrypTen's real communicator (``torch.distributed`` with gloo; rendezvous from the
``RENDEZVOUS`` address: ``tcp://host:port`` or ``env://``) and keeps an authenticated control
connection to the coordinator (``multiprocessing.connection`` with an HMAC key from the
``TRUSTFL_MPC_AUTHKEY`` environment variable). Per round it stores the shares clients send it,
reports which clients' shares are complete, runs :func:`~.mpc.compute_round` with the other
parties and sends back only its *share* of the result: no party ever sees a plaintext update,
norm or sum. Rank ``K`` is CrypTen's ``TTPServer`` (Beaver triples, truncation and comparison
tuples; it never sees a share of an input). Parties live for the whole run (started once).

Run by hand on another machine (``launch = "external"``)::

    TRUSTFL_MPC_AUTHKEY=<hex> python -m trustfl.defenses.secure_aggregation.party \\
        --rank 1 --parties 3 --coordinator host:port --rendezvous tcp://host0:29500
"""

from __future__ import annotations

import argparse
import os
import sys
from multiprocessing.connection import Client

import torch

__all__ = ["main"]


def _init_crypten(*, rank: int, parties: int, rendezvous: str, precision_bits: int):  # type: ignore[no-untyped-def]
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(parties), RENDEZVOUS=rendezvous, DISTRIBUTED_BACKEND="gloo")
    from trustfl.defenses.secure_aggregation.crypten_import import import_crypten

    crypten = import_crypten()
    crypten.cfg.mpc.provider = "TTP"  # triples from a separate process, never from a compute party
    crypten.cfg.encoder.precision_bits = precision_bits
    return crypten


class _Party:
    def __init__(self, conn, *, rank: int, parties: int, precision_bits: int) -> None:  # type: ignore[no-untyped-def]
        self.conn, self.rank, self.parties, self.p = conn, rank, parties, precision_bits
        self.last = rank == parties - 1  # receives dense shares; the others receive seeds
        self.round: dict = {}

    def _store(self, cid: int, what: str, seed: int | None) -> None:
        if seed is None:
            raw = self.conn.recv_bytes()
            if len(raw) != 8 * self.round["dim"]:  # a malformed share: the client stays incomplete (excluded)
                self.round[what].pop(cid, None)
                self.round.setdefault("bad", set()).add(cid)
                return
            if cid not in self.round.get("bad", set()):
                self.round[what][cid] = torch.frombuffer(bytearray(raw), dtype=torch.int64)
        elif cid not in self.round.get("bad", set()):
            self.round[what][cid] = int(seed)

    def _share(self, what: str, cid: int) -> torch.Tensor:
        from trustfl.defenses.secure_aggregation.encoding import expand_seed

        value = self.round[what][cid]
        return value if isinstance(value, torch.Tensor) else expand_seed(value, self.round["dim"])

    def _complete(self) -> list[int]:
        ids = set(self.round["x"]) - self.round.get("bad", set())
        if self.round["noise"]:
            ids &= set(self.round["n"])
        return sorted(ids)

    def _compute(self, msg: dict) -> None:
        from trustfl.defenses.secure_aggregation.mpc import RoundPlan, compute_round

        ids = [int(c) for c in msg["included"]]
        d = self.round["dim"]
        reference = None
        if msg["reference"]:
            self.conn.recv()  # ("reference",), then the public vector
            reference = torch.frombuffer(bytearray(self.conn.recv_bytes()), dtype=torch.float64)
        plan = RoundPlan(weights=msg["weights"], precision_bits=self.p, norm_bound=msg["norm_bound"],
                         mode=msg["mode"], topup_std=msg["topup_std"], reference=reference,
                         cosine_threshold=msg["cosine_threshold"], chunk_elements=msg["chunk_elements"])

        def block_of(part: slice) -> torch.Tensor:
            return torch.stack([self._share("x", c) for c in ids[part]])

        noise = None
        if self.round["noise"]:
            noise = torch.zeros(d, dtype=torch.int64)
            for c in ids:
                noise += self._share("n", c)
        gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
        total, bits = compute_round(block_of, noise, len(ids), d, plan, generator=gen)
        self.conn.send(("result", self.round["id"], bits is not None))
        self.conn.send_bytes(total.numpy().tobytes())
        if bits is not None:
            self.conn.send_bytes(bits.contiguous().numpy().tobytes())
        self.round = {}

    def serve(self) -> None:
        while True:
            msg = self.conn.recv()
            kind = msg[0]
            if kind == "round":
                self.round = {"id": msg[1], "dim": int(msg[2]), "noise": bool(msg[3]), "x": {}, "n": {}}
            elif kind == "share":
                _, cid, what, seed = msg
                self._store(int(cid), what, seed)
            elif kind == "status":
                self.conn.send(("have", self.round.get("id"), self._complete()))
            elif kind == "compute":
                self._compute(msg[1])
            elif kind == "abort":
                self.round = {}
            elif kind == "stop":
                return
            else:
                raise ValueError(f"party {self.rank}: unknown message {kind!r}")


def _dealer_class() -> type:
    """CrypTen's ``TTPServer`` with one more tuple type, ``matmul_norms`` (see :mod:`~.mpc`)."""
    from trustfl.defenses.secure_aggregation.crypten_import import import_crypten

    class Dealer(import_crypten().mpc.provider.ttp_provider.TTPServer):  # type: ignore[misc,name-defined]
        def matmul_norms(self, size_a, size_b):  # type: ignore[no-untyped-def]
            """Party 0's shares of ``c = a @ b`` and ``s = rowsum(b * b)`` (flattened, c first)."""
            a = self._get_additive_PRSS(size_a)
            b = self._get_additive_PRSS(size_b)
            c = a @ b
            s = (b * b).sum(dim=1)
            c0 = c - self._get_additive_PRSS(c.size(), remove_rank=True)
            s0 = s - self._get_additive_PRSS(s.size(), remove_rank=True)
            return torch.cat([c0.flatten(), s0.flatten()])

    return Dealer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trustfl.defenses.secure_aggregation.party")
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--parties", type=int, required=True)
    ap.add_argument("--coordinator", required=True, help="host:port of the coordinator's control listener")
    ap.add_argument("--rendezvous", required=True, help="torch.distributed init method: tcp://host:port or env://")
    ap.add_argument("--precision-bits", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("TRUSTFL_MPC_THREADS", "1")))
    key = os.environ.get("TRUSTFL_MPC_AUTHKEY")
    if not key:
        print("party: TRUSTFL_MPC_AUTHKEY is not set", file=sys.stderr)
        return 2
    crypten = _init_crypten(rank=args.rank, parties=args.parties, rendezvous=args.rendezvous,
                            precision_bits=args.precision_bits)
    if args.rank == args.parties:  # CrypTen's trusted third party: serves tuples until rank 0 says terminate
        _dealer_class()()
        return 0
    host, port = args.coordinator.rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(key))
    conn.send(("hello", args.rank, os.getpid()))
    crypten.init()
    conn.send(("ready", args.rank))
    try:
        _Party(conn, rank=args.rank, parties=args.parties, precision_bits=args.precision_bits).serve()
    finally:
        crypten.uninit()
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
