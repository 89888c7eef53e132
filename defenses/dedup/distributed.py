"""Dedup as a distributed data step: the protocol's roles as five phases over plain payloads.

The roles of :func:`~trustfl.defenses.dedup.protocol.deduplicate` (clients encode, the server
searches, clients confirm within-client candidates on their own texts, the server clusters and
keeps one record per cluster), cut at the points where a message crosses the network
(:class:`~trustfl.types.distributed.DistributedDataStep`):

* ``encode`` (node): the client's keyed codes (HMAC, MinHash, SimHash arrays), its record count,
  key id, public code parameters and a keyed digest of its records (no text, no embedding);
* ``plan`` (server): FAISS search over every client's codes (:class:`DedupServer`); each client
  with within-client candidates gets their local index pairs to confirm;
* ``confirm`` (node): the true score of each queried pair on the node's own texts;
* ``decide`` (server): accepted pairs -> clusters -> keep the smallest ``(client_id, index)``;
  each client gets the local indices it must drop, with its record count and digest;
* ``apply`` (node): checks the count and digest against its own records, drops those records.

Everything received is checked before use: a node's codes must have the dtypes and widths of the
run's settings and as many rows as it claims; an answer must answer the query; a decision must
match the node's own records. The local engine runs the same phases in process, so both engines
give the same clusters (``tests/test_flower_dedup.py`` compares them with :func:`deduplicate`).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from trustfl.defenses.dedup.client import ClientCodes, DedupClient
from trustfl.defenses.dedup.errors import DedupError
from trustfl.defenses.dedup.keys import DedupKey, key_for_run
from trustfl.defenses.dedup.decision import Numbering, accepted_pairs, decide_clusters, result_params
from trustfl.defenses.dedup.protocol import validate_methods
from trustfl.defenses.dedup.result import DedupResult
from trustfl.defenses.dedup.server import DedupServer, ServerView
from trustfl.errors import ConfigError
from trustfl.text import MATCHING_RULE
from trustfl.types.distributed import DistributedDataStep, Payload, PayloadError, meta_int

__all__ = ["DedupDataStep", "MAX_RECORDS", "records_digest"]

MAX_RECORDS = 50_000_000
"""The most records a node may claim (a larger claim is refused before any array is looked at)."""
_CODE_ARRAYS = {"exact": "exact", "lexical": "minhash", "semantic": "simhash"}
_MAX_CLUSTERS_RECORDED = 1000


def records_digest(texts: list[str], key: Any) -> str:
    """A keyed digest of a client's records (BLAKE2b under a sub-key of the dedup key; the server cannot
    test guesses): the node checks a decision was made for exactly the records it holds."""
    h = hashlib.blake2b(key=key.derive("records-digest")[:64], digest_size=16)
    for text in texts:
        raw = text.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


def _texts(train: Any, client_id: int) -> list[str]:
    texts = list(train) if isinstance(train, (list, tuple)) else list(train["text"][:])  # texts, or a Dataset
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise DedupError(f"client {client_id}: record {bad} is {type(texts[bad]).__name__}, not text")
    return texts


def _client_id(payload: Payload, client_id: int, what: str) -> None:
    got = payload.meta.get("client_id")
    if got != client_id or isinstance(got, bool):
        raise PayloadError(f"{what}: says it is for client {got!r}, expected {client_id}")


def _int_pairs(payload: Payload, name: str, n: int, what: str) -> np.ndarray:
    a = payload.arrays.get(name)
    if a is None or a.dtype != np.int64 or a.ndim != 1:
        raise PayloadError(f"{what}: array {name!r} must be a 1-d int64 array, got "
                           f"{None if a is None else (str(a.dtype), a.shape)}")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= n):
        raise PayloadError(f"{what}: array {name!r} holds indices outside [0, {n})")
    return a


class DedupDataStep(DistributedDataStep):
    """The dedup protocol as a :class:`DistributedDataStep` (module docstring); ``config.dedup`` settings.

    Args:
        config: the run config (its ``dedup`` section and ``seed``: without ``dedup.key_file`` the key
            is derived from the seed, reproducible but not secret, which only the local engine and a
            simulation accept; run as messages (:meth:`defer_to_nodes`) every node must read the key
            from ``dedup.key_file``, which must exist).
    """

    name = "dedup"

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.settings = config.dedup
        self.methods = validate_methods(self.settings.methods)
        self.progress = False
        self._key: Any = None
        self._tools: tuple[Any, Any] | None = None
        self._clients: dict[int, tuple[str, DedupClient]] = {}
        self._plan: dict[str, Any] | None = None
        self.result: DedupResult | None = None
        s = self.settings
        self.final = {"exact": 1.0, "lexical": float(s.jaccard_threshold), "semantic": float(s.semantic_threshold)}

    def defer_to_nodes(self) -> None:
        """Run as messages (server and nodes of a deployment): refused without ``dedup.key_file``.

        The derived key's seed is in the run config the server holds, so it could compute the codes of
        guessed texts and test them against the nodes' codes (a dictionary attack).
        """
        if not self.settings.key_file:
            raise ConfigError("dedup.key_file: a deployment runs dedup on the nodes and needs a key file they share "
                              "(without it the key derives from the run seed, which the server knows, so it could "
                              "test guessed texts against the codes); create one with `trustfl dedup --key-file PATH` "
                              "and copy it to every node under the path dedup.key_file names")
        super().defer_to_nodes()

    # ------------------------------------------------------------------ node side
    @property
    def key(self) -> Any:
        """The clients' shared key (nodes only; the server never loads it). Run as messages, the key file
        must exist: a node that made its own key could never match the others' codes."""
        if self._key is None:
            if self.deferred:
                self._key = DedupKey.load(self.settings.key_file)
            else:
                self._key = key_for_run(self.settings.key_file, self.config.seed)
        return self._key

    def _client(self, client_id: int, texts: list[str]) -> tuple[str, DedupClient]:
        digest = records_digest(texts, self.key)
        cached = self._clients.get(client_id)
        if cached is not None and cached[0] == digest:
            return cached
        from trustfl.text import KeyedMinHash, SimHasher, load_embedder

        s = self.settings
        if self._tools is None:
            minhash = KeyedMinHash(self.key, num_perm=s.num_perm, shingle=s.shingle, ngram=s.ngram)
            simhasher = None
            if "semantic" in self.methods:
                dim = int(load_embedder(s.embed_model).model.config.hidden_size)
                simhasher = SimHasher(self.key, dim=dim, bits=s.simhash_bits)
            self._tools = (minhash, simhasher)
        client = DedupClient(client_id, texts, self.key, methods=self.methods, minhash=self._tools[0],
                             simhasher=self._tools[1], embed_model=s.embed_model, embed_batch_size=s.embed_batch_size,
                             max_length=s.max_length, progress=self.progress)
        self._clients[client_id] = (digest, client)
        return digest, client

    def encode(self, client_id: int, train: Any) -> Payload:
        digest, client = self._client(client_id, _texts(train, client_id))
        codes = client.encode()
        arrays = {name: arr for name in ("exact", "minhash", "simhash")
                  if (arr := getattr(codes, name)) is not None}
        return Payload(arrays=arrays, meta={"client_id": client_id, "n": codes.n, "key_id": codes.key_id,
                                            "params": codes.params, "digest": digest})

    def confirm(self, client_id: int, train: Any, query: Payload) -> Payload:
        texts = _texts(train, client_id)
        what = f"client {client_id}: the server's query"
        _client_id(query, client_id, what)
        if meta_int(query, "n", what=what, hi=MAX_RECORDS) != len(texts):
            raise PayloadError(f"{what}: is for {query.meta['n']} records, this node holds {len(texts)}")
        allowed = {f"{m}.{side}" for m in self.methods for side in "ij"}
        unknown = sorted(set(query.arrays) - allowed)
        if unknown or not self.settings.confirm:
            raise PayloadError(f"{what}: unexpected arrays {unknown or sorted(query.arrays)} (confirm = "
                               f"{self.settings.confirm}, methods {list(self.methods)})")
        _, client = self._client(client_id, texts)
        out: dict[str, np.ndarray] = {}
        for method in self.methods:
            if f"{method}.i" not in query.arrays and f"{method}.j" not in query.arrays:
                continue
            i = _int_pairs(query, f"{method}.i", len(texts), what)
            j = _int_pairs(query, f"{method}.j", len(texts), what)
            if len(i) != len(j) or np.any(i >= j):
                raise PayloadError(f"{what}: {method} pairs must be equal-length index arrays with i < j")
            ok, score = client.confirm(method, i, j, self.final[method])
            out[f"{method}.ok"], out[f"{method}.score"] = ok.astype(bool), score.astype(np.float64)
        return Payload(arrays=out, meta={"client_id": client_id})

    def apply(self, client_id: int, train: Any, decision: Payload) -> Any:
        texts = _texts(train, client_id)
        what = f"client {client_id}: the server's dedup decision"
        _client_id(decision, client_id, what)
        n = meta_int(decision, "n", what=what, hi=MAX_RECORDS)
        if n != len(texts) or decision.meta.get("digest") != records_digest(texts, self.key):
            raise PayloadError(f"{what}: was made for other records ({n} records, digest "
                               f"{str(decision.meta.get('digest'))[:12]}) than this node holds ({len(texts)} "
                               "records); its data changed since the dedup step: start a new run")
        if set(decision.arrays) != {"drop"}:
            raise PayloadError(f"{what}: expected one array 'drop', got {sorted(decision.arrays)}")
        drop = _int_pairs(decision, "drop", n, what)
        if np.any(np.diff(drop) <= 0) or len(drop) >= max(n, 1):
            raise PayloadError(f"{what}: 'drop' must be increasing indices leaving at least one record, got "
                               f"{len(drop)} of {n}")
        if not len(drop):
            return train
        keep = np.ones(n, dtype=bool)
        keep[drop] = False
        kept = np.flatnonzero(keep).tolist()
        return [train[i] for i in kept] if isinstance(train, (list, tuple)) else train.select(kept)

    # ------------------------------------------------------------------ server side
    def check_encoded(self, client_id: int, payload: Payload) -> None:
        what = f"client {client_id}'s codes"
        _client_id(payload, client_id, what)
        n = meta_int(payload, "n", what=what, hi=MAX_RECORDS)
        for key in ("key_id", "digest"):
            if not isinstance(payload.meta.get(key), str) or not payload.meta[key]:
                raise PayloadError(f"{what}: meta {key!r} must be a non-empty str")
        params = payload.meta.get("params")
        if not isinstance(params, dict):
            raise PayloadError(f"{what}: meta 'params' must be an object")
        s = self.settings
        expected: dict[str, Any] = {"methods": list(self.methods), "normalization": MATCHING_RULE}
        if "lexical" in self.methods:
            expected.update(num_perm=s.num_perm, shingle=s.shingle, ngram=s.ngram)
        if "semantic" in self.methods:
            expected.update(bits=s.simhash_bits, model=s.embed_model, max_length=s.max_length)
        differ = {k: params.get(k) for k, v in expected.items() if params.get(k) != v}
        if differ:
            raise PayloadError(f"{what}: made with parameters {differ}, the run's are "
                               f"{ {k: expected[k] for k in differ} }")
        widths = {"exact": (np.uint8, 16), "minhash": (np.uint32, s.num_perm),
                  "simhash": (np.uint8, s.simhash_bits // 8)}
        wanted = {_CODE_ARRAYS[m] for m in self.methods}
        if set(payload.arrays) != wanted:
            raise PayloadError(f"{what}: expected arrays {sorted(wanted)}, got {sorted(payload.arrays)}")
        for name in wanted:
            dtype, width = widths[name]
            arr = payload.arrays[name]
            if arr.dtype != dtype or arr.shape != (n, width):
                raise PayloadError(f"{what}: {name!r} must be {np.dtype(dtype)} of shape ({n}, {width}) for the "
                                   f"{n} records claimed, got {arr.dtype} {arr.shape}")

    def check_encoded_together(self, encoded: dict[int, Payload]) -> dict[int, str]:
        """Codes under another key match nothing: the nodes outside the largest key group are left out.

        The majority, not the first reply, so one misconfigured (or hostile) node that answers first
        cannot shut out every honest node; an even split cannot be told apart and stops the step.
        """
        groups: dict[str, list[int]] = {}
        for cid in sorted(encoded):
            groups.setdefault(str(encoded[cid].meta["key_id"]), []).append(int(cid))
        if len(groups) <= 1:
            return {}
        ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
        if len(ranked[0][1]) == len(ranked[1][1]):
            raise DedupError(f"dedup: nodes split evenly between dedup keys ({ {k: v for k, v in ranked} }), so "
                             "the run's key cannot be told; give every node the same dedup.key_file")
        key, majority = ranked[0]
        return {cid: (f"codes made under dedup key id {k!r}, the other {len(majority)} nodes' (clients {majority}) "
                      f"under {key!r}; give every node the same dedup.key_file")
                for k, cids in ranked[1:] for cid in cids}

    def plan(self, encoded: dict[int, Payload]) -> dict[int, Payload]:
        """FAISS search over the codes; within-client candidates go back to their client (module docstring)."""
        t0 = time.perf_counter()
        s = self.settings
        ids = sorted(int(c) for c in encoded)
        if not ids:
            raise DedupError("dedup: no client sent valid codes; nothing to deduplicate")
        codes = tuple(ClientCodes(client_id=c, n=int(encoded[c].meta["n"]), exact=encoded[c].arrays.get("exact"),
                                  minhash=encoded[c].arrays.get("minhash"), simhash=encoded[c].arrays.get("simhash"),
                                  key_id=str(encoded[c].meta["key_id"]), params=dict(encoded[c].meta["params"]))
                      for c in ids)
        thresholds = {"exact": 1.0, "jaccard": float(s.jaccard_threshold), "semantic": float(s.semantic_threshold)}
        names = {"exact": "exact", "jaccard": "lexical", "semantic": "semantic"}
        thresholds = {k: v for k, v in thresholds.items() if names[k] in self.methods}
        server = DedupServer(jaccard_threshold=s.jaccard_threshold, semantic_threshold=s.semantic_threshold,
                             confirm_margin=s.confirm_margin if s.confirm else 0.0, bands=s.bands, rows=s.rows,
                             index=s.index, shard_size=s.shard_size, nprobe=s.nprobe, progress=self.progress)
        found = server.find(ServerView(codes=codes, thresholds=thresholds), self.methods)
        sizes = {c.client_id: c.n for c in codes}
        numbering = Numbering(ids, sizes)
        owner, local = numbering.owner, numbering.local
        queries: dict[int, dict[str, np.ndarray]] = {}
        asked: dict[str, dict[int, np.ndarray]] = {}
        for method, cand in found.items():
            within = np.flatnonzero(cand.needs_confirmation)
            asked[method] = {}
            if not (s.confirm and within.size):
                continue
            wc = owner[cand.a[within]]
            for c in np.unique(wc):
                sel = within[wc == c]
                asked[method][int(c)] = sel
                q = queries.setdefault(int(c), {})
                q[f"{method}.i"], q[f"{method}.j"] = local[cand.a[sel]], local[cand.b[sel]]
        self._plan = {"ids": ids, "sizes": sizes, "numbering": numbering, "found": found,
                      "asked": asked, "thresholds": thresholds, "key_id": codes[0].key_id,
                      "digests": {c: str(encoded[c].meta["digest"]) for c in ids},
                      "timings": {"search_s": time.perf_counter() - t0, **server.timings}}
        return {c: Payload(arrays=q, meta={"client_id": c, "n": sizes[c]}) for c, q in sorted(queries.items())}

    def check_answer(self, client_id: int, query: Payload, answer: Payload) -> None:
        what = f"client {client_id}'s confirmations"
        _client_id(answer, client_id, what)
        wanted = {}
        for name, arr in query.arrays.items():
            method, side = name.rsplit(".", 1)
            if side == "i":
                wanted[f"{method}.ok"] = wanted[f"{method}.score"] = len(arr)
        if set(answer.arrays) != set(wanted):
            raise PayloadError(f"{what}: expected arrays {sorted(wanted)}, got {sorted(answer.arrays)}")
        for name, size in wanted.items():
            arr = answer.arrays[name]
            kind = np.bool_ if name.endswith(".ok") else np.float64
            if arr.dtype != kind or arr.shape != (size,):
                raise PayloadError(f"{what}: {name!r} must be {np.dtype(kind)} of shape ({size},), got "
                                   f"{arr.dtype} {arr.shape}")
            if kind is np.float64 and not np.all(np.isfinite(arr) & (np.abs(arr) <= 1.0 + 1e-6)):
                raise PayloadError(f"{what}: {name!r} must hold finite similarities in [-1, 1]")

    def decide(self, answers: dict[int, Payload]) -> dict[int, Payload]:
        """Accepted pairs -> clusters -> keep rule (as :func:`deduplicate`); each client's records to drop."""
        if self._plan is None:
            raise DedupError("dedup: decide() before plan()")
        t0 = time.perf_counter()
        p, s = self._plan, self.settings
        ids = p["ids"]

        def confirmed_by_clients(method: str, cand: Any, within: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            ok, score = np.ones(len(cand), dtype=bool), np.full(len(cand), np.nan)
            for c, sel in p["asked"][method].items():
                if c not in answers:
                    raise DedupError(f"dedup: client {c} did not confirm its candidates")
                ok[sel], score[sel] = answers[c].arrays[f"{method}.ok"], answers[c].arrays[f"{method}.score"]
            return ok[within], score[within]

        accepted, cand_stats = accepted_pairs(p["found"], self.final, confirmed_by_clients if s.confirm else None)
        keep, clusters, pairs = decide_clusters(p["numbering"], accepted)
        for c, mask in keep.items():
            if len(mask) and not mask.any():
                raise DedupError(f"dedup: every one of client {c}'s {len(mask)} training records duplicates a record "
                                 "of a client with a smaller id, so it would train on nothing; raise the thresholds, "
                                 "drop that client from the partition, or disable [dedup]")
        params = result_params(self.methods, p["key_id"], s, p["found"])
        self.result = DedupResult(client_ids=ids, sizes=p["sizes"], pairs=pairs, clusters=clusters, keep=keep,
                                  thresholds=p["thresholds"], params=params, candidates=cand_stats,
                                  timings={**p["timings"], "cluster_s": time.perf_counter() - t0})
        return {c: Payload(arrays={"drop": np.flatnonzero(~keep[c]).astype(np.int64)},
                           meta={"client_id": c, "n": p["sizes"][c], "digest": p["digests"][c]}) for c in ids}

    def step_summary(self) -> dict[str, Any]:
        """Counts, thresholds, key id, clusters as ``[client, index]`` ids (at most 1000) and dropped indices."""
        r = self.result
        if r is None:
            return {}
        counts = r.counts()
        return {"methods": list(self.methods), "thresholds": r.thresholds, "key_id": r.params["key_id"],
                "records_before": r.num_records, "records_after": r.num_records - r.num_dropped,
                **{k: counts[k] for k in ("pairs", "clusters", "cross_client_clusters", "dropped",
                                          "dropped_per_client")},
                "pair_counts": r.pair_counts(), "candidates": r.candidates,
                "cluster_ids": [[[c, i] for c, i in cl] for cl in r.clusters[:_MAX_CLUSTERS_RECORDED]],
                "clusters_truncated": len(r.clusters) > _MAX_CLUSTERS_RECORDED,
                "dropped_indices": {str(c): np.flatnonzero(~k).tolist() for c, k in r.keep.items()},
                "seconds": round(sum(v for k, v in r.timings.items() if k in ("search_s", "cluster_s")), 3)}
