"""A compute party (or CrypTen's trusted third party) as its own process: ``python -m ...party``.

Each party joins CrypTen's real communicator (``torch.distributed`` with gloo; rendezvous from the
``RENDEZVOUS`` address: ``tcp://host:port`` or ``env://``) and keeps an authenticated control
connection to the coordinator (``multiprocessing.connection`` with an HMAC key from the
``TRUSTFL_MPC_AUTHKEY`` environment variable). Per round it stores the shares clients send it,
reports which clients' shares are complete, runs :func:`~.mpc.compute_round` with the other
parties and sends back only its *share* of the result: no party ever sees a plaintext update,
norm or sum. Rank ``K`` is CrypTen's ``TTPServer`` (Beaver triples, truncation and comparison
tuples; it never sees a share of an input) with one more tuple type, trustfl's ``matmul_norms``,
whose masks are ChaCha20 streams (:mod:`~.prg`) under a fresh key the dealer sends each party
once, at start-up, over their point-to-point gloo channel. Parties live for the whole run (started once).

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

from trustfl.defenses.secure_aggregation.prg import KEY_BYTES

__all__ = ["dealer_class", "main"]


def _init_crypten(*, rank: int, parties: int, rendezvous: str, precision_bits: int):  # type: ignore[no-untyped-def]
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(parties), RENDEZVOUS=rendezvous, DISTRIBUTED_BACKEND="gloo")
    from trustfl.defenses.secure_aggregation.crypten_import import import_crypten

    crypten = import_crypten()
    crypten.cfg.mpc.provider = "TTP"  # triples from a separate process, never from a compute party
    crypten.cfg.encoder.precision_bits = precision_bits
    return crypten


class _Party:
    def __init__(self, conn, *, rank: int, parties: int, precision_bits: int, dealer) -> None:  # type: ignore[no-untyped-def]
        self.conn, self.rank, self.parties, self.p, self.dealer = conn, rank, parties, precision_bits, dealer
        self.last = rank == parties - 1  # receives dense shares; the others receive 32-byte keys
        self.round: dict = {}

    def _store(self, cid: int, what: str, key: bytes | None) -> None:
        if key is None:
            raw = self.conn.recv_bytes()
            if len(raw) != 8 * self.round["dim"]:  # a malformed share: the client stays incomplete (excluded)
                self.round[what].pop(cid, None)
                self.round.setdefault("bad", set()).add(cid)
                return
            if cid not in self.round.get("bad", set()):
                self.round[what][cid] = torch.frombuffer(bytearray(raw), dtype=torch.int64)
        elif not isinstance(key, bytes) or len(key) != KEY_BYTES:  # a malformed key: excluded like a bad share
            self.round[what].pop(cid, None)
            self.round.setdefault("bad", set()).add(cid)
        elif cid not in self.round.get("bad", set()):
            self.round[what][cid] = key

    def _share(self, what: str, cid: int) -> torch.Tensor:
        from trustfl.defenses.secure_aggregation.encoding import expand_key

        value = self.round[what][cid]
        return value if isinstance(value, torch.Tensor) else expand_key(value, self.round["dim"])

    def _complete(self) -> list[int]:
        ids = set(self.round["x"]) - self.round.get("bad", set())
        if self.round["noise"]:
            ids &= set(self.round["n"])
        return sorted(ids)

    def _compute(self, msg: dict) -> None:
        from trustfl.defenses.secure_aggregation.encoding import expand_key
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
            rows = ids[part]
            block = torch.empty((len(rows), d), dtype=torch.int64)
            for row, c in zip(block, rows):  # keys expand straight into the block: no stacking copy
                value = self.round["x"][c]
                if isinstance(value, torch.Tensor):
                    row.copy_(value)
                else:
                    expand_key(value, d, out=row)
            return block

        noise = None
        if self.round["noise"]:
            noise = torch.zeros(d, dtype=torch.int64)
            for c in ids:
                noise += self._share("n", c)
        total, bits = compute_round(block_of, noise, len(ids), d, plan, dealer=self.dealer)
        self.conn.send(("result", self.round["id"], bits is not None))
        self.conn.send_bytes(total.contiguous().numpy())
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


def dealer_class() -> type:
    """CrypTen's ``TTPServer`` with one more tuple type, ``matmul_norms`` (see :mod:`~.mpc`).

    At start-up, after CrypTen's own set-up, the dealer sends every compute party a fresh 32-byte
    ChaCha20 key (:func:`~.prg.new_key`) over the point-to-point gloo channel CrypTen's TTP uses for its seeds.
    """
    import torch.distributed as dist

    from trustfl.defenses.secure_aggregation.crypten_import import import_crypten
    from trustfl.defenses.secure_aggregation.mpc import TupleDealer
    from trustfl.defenses.secure_aggregation.prg import new_key

    crypten = import_crypten()

    class Dealer(crypten.mpc.provider.ttp_provider.TTPServer):  # type: ignore[misc,name-defined]
        def _setup_generators(self) -> None:  # type: ignore[override]
            super()._setup_generators()
            keys = [new_key() for _ in range(crypten.communicator.get().get_world_size())]
            self.tuples = TupleDealer(keys)
            for i, key in enumerate(keys):
                dist.send(torch.frombuffer(bytearray(key), dtype=torch.uint8), dst=i, group=self.ttp_group)

        def matmul_norms(self, m: int, d: int, counter: int) -> torch.Tensor:
            return self.tuples.matmul_norms(m, d, counter)

    return Dealer


def receive_dealer_key():  # type: ignore[no-untyped-def]
    """A compute party's key shared with the dealer (sent once by :func:`dealer_class`'s set-up)."""
    import torch.distributed as dist

    from trustfl.defenses.secure_aggregation.crypten_import import import_crypten
    from trustfl.defenses.secure_aggregation.mpc import DealerKeys

    comm = import_crypten().communicator.get()
    key = torch.empty(KEY_BYTES, dtype=torch.uint8)
    dist.recv(key, src=comm.get_ttp_rank(), group=comm.ttp_group)
    return DealerKeys(bytes(key.numpy().tobytes()))


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
        dealer_class()()
        return 0
    host, port = args.coordinator.rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(key))
    conn.send(("hello", args.rank, os.getpid()))
    crypten.init()
    dealer = receive_dealer_key()
    conn.send(("ready", args.rank))
    try:
        _Party(conn, rank=args.rank, parties=args.parties, precision_bits=args.precision_bits, dealer=dealer).serve()
    finally:
        crypten.uninit()
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
