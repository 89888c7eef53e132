"""``deduplicate``: run the whole protocol (clients encode, server searches, clients confirm).

Roles in one process, with the same boundaries a deployment has:

1. every :class:`~trustfl.defenses.dedup.client.DedupClient` computes its codes with the shared key;
2. the :class:`~trustfl.defenses.dedup.server.DedupServer` gets only the
   :class:`~trustfl.defenses.dedup.server.ServerView` (codes + thresholds) and returns candidates;
3. each client confirms the within-client candidates on its own texts/embeddings (true
   Jaccard / cosine); cross-client candidates are decided on the server's estimate;
4. accepted pairs -> clusters (exact/lexical pairs chain, semantic pairs join one hop from a centre:
   :func:`~trustfl.defenses.dedup.clusters.cluster_labels`) -> keep one record per cluster.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from trustfl.defenses.dedup.client import METHODS, DedupClient
from trustfl.defenses.dedup.decision import Numbering, accepted_pairs, decide_clusters, result_params
from trustfl.defenses.dedup.errors import DedupError
from trustfl.defenses.dedup.keys import DedupKey
from trustfl.defenses.dedup.result import DedupResult
from trustfl.defenses.dedup.server import DedupServer, ServerView
from trustfl.defenses.dedup.settings import DedupSettings, resolve_settings
from trustfl.text import KeyedMinHash, SimHasher, load_embedder

__all__ = ["deduplicate", "validate_methods"]


def validate_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    """Check and order ``methods`` (a subset of exact/lexical/semantic, at least one)."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise DedupError(f"methods must be a non-empty subset of {list(METHODS)}, got {list(methods)}")
    return tuple(m for m in METHODS if m in methods)


def deduplicate(client_texts: Mapping[int, Sequence[str]] | Sequence[str], key: DedupKey,
                settings: DedupSettings | None = None, *,
                embeddings: Mapping[int, np.ndarray] | np.ndarray | None = None, keep_server_view: bool = True,
                progress: bool = False, **overrides: Any) -> DedupResult:
    """Find exact, lexical and semantic duplicates within and across clients without moving text.

    Every protocol parameter (methods, thresholds, MinHash/SimHash/FAISS parameters) is a field of
    :class:`~trustfl.defenses.dedup.settings.DedupSettings`, the one source of their defaults:
    pass ``settings=`` (e.g. a run config's ``config.dedup``) and/or override single fields by
    keyword (``deduplicate(texts, key, methods=["exact"], jaccard_threshold=0.8)``).
    ``settings.enabled`` and ``settings.key_file`` are run-level and ignored here.

    Args:
        client_texts: ``{client_id: texts}``, or one sequence of texts (a single client ``0``).
        key: the key shared by the clients (never given to the server).
        settings: the protocol parameters (default ``DedupSettings()``: methods exact + lexical,
            Jaccard 0.7 over character 5-grams, 128 permutations, confirmation on).
        embeddings: precomputed L2-normalised embeddings per client (skips the FM).
        keep_server_view: keep the :class:`ServerView` on the result (for audits and tests).
        progress: show progress bars.
        **overrides: :class:`DedupSettings` fields replacing those of ``settings``.

    Returns:
        :class:`DedupResult`.

    Raises:
        ConfigError: unknown override or invalid setting (``dedup.<field>: ...``).
        DedupError: empty input, non-string records, bad client ids, clients with mismatched embeddings.

    Example:
        >>> key = DedupKey.from_passphrase("demo passphrase")
        >>> r = deduplicate({0: ["Free entry now!", "hi mum"], 1: ["free entry NOW"]}, key, methods=["exact"])
        >>> r.keep[1].tolist(), len(r.clusters)
        ([False], 1)
    """
    t_start = time.perf_counter()
    s = resolve_settings(settings, **overrides)
    methods = validate_methods(s.methods)
    if not isinstance(key, DedupKey):
        raise DedupError(f"key must be a DedupKey, got {type(key).__name__}")
    if isinstance(client_texts, str):
        raise DedupError("client_texts must be {client_id: texts} or a sequence of texts, got a single str")
    clients_in = dict(client_texts) if isinstance(client_texts, Mapping) else {0: client_texts}
    bad_ids = [c for c in clients_in if isinstance(c, bool) or not isinstance(c, (int, np.integer))]
    if bad_ids:
        raise DedupError(f"client ids must be ints, got {bad_ids[:5]}")
    if not clients_in:
        raise DedupError("client_texts is empty: pass at least one client")
    emb_in: dict[int, np.ndarray] = {}
    if embeddings is not None:
        emb_in = dict(embeddings) if isinstance(embeddings, Mapping) else {next(iter(clients_in)): embeddings}
    minhash = KeyedMinHash(key, num_perm=s.num_perm, shingle=s.shingle, ngram=s.ngram)
    simhasher = None
    if "semantic" in methods:
        if emb_in:
            dims = {np.asarray(e).shape[-1] for e in emb_in.values()}
            if len(dims) != 1:
                raise DedupError(f"embeddings of different dimensions across clients: {sorted(dims)}")
            dim = dims.pop()
        else:
            dim = int(load_embedder(s.embed_model).model.config.hidden_size)
        simhasher = SimHasher(key, dim=int(dim), bits=s.simhash_bits)
    jaccard_threshold, semantic_threshold, confirm = s.jaccard_threshold, s.semantic_threshold, s.confirm
    ids = sorted(int(c) for c in clients_in)
    clients = {c: DedupClient(c, clients_in[c], key, methods=methods, minhash=minhash, simhasher=simhasher,
                              embeddings=emb_in.get(c), embed_model=s.embed_model,
                              embed_batch_size=s.embed_batch_size, max_length=s.max_length, progress=progress)
               for c in ids}
    # 1. clients encode
    t0 = time.perf_counter()
    codes = tuple(clients[c].encode() for c in tqdm(ids, desc="client codes", unit="client",
                                                    disable=not progress or len(ids) < 2, leave=False))
    thresholds = {"exact": 1.0, "jaccard": float(jaccard_threshold), "semantic": float(semantic_threshold)}
    thresholds = {k: v for k, v in thresholds.items()
                  if {"exact": "exact", "jaccard": "lexical", "semantic": "semantic"}[k] in methods}
    view = ServerView(codes=codes, thresholds=thresholds)
    t1 = time.perf_counter()
    # 2. server searches
    server = DedupServer(jaccard_threshold=jaccard_threshold, semantic_threshold=semantic_threshold,
                         confirm_margin=s.confirm_margin if confirm else 0.0, bands=s.bands, rows=s.rows,
                         index=s.index, shard_size=s.shard_size, nprobe=s.nprobe, progress=progress)
    found = server.find(view, methods)
    t2 = time.perf_counter()
    # 3. clients confirm within-client candidates
    numbering = Numbering(ids, {c: len(clients[c].texts) for c in ids})
    final = {"exact": 1.0, "lexical": float(jaccard_threshold), "semantic": float(semantic_threshold)}

    def confirm_on_clients(method: str, cand: Any, within: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok, score = np.ones(within.size, dtype=bool), np.full(within.size, np.nan)
        owners = numbering.owner[cand.a[within]]
        for c in np.unique(owners):
            sel = owners == c
            ok[sel], score[sel] = clients[int(c)].confirm(method, numbering.local[cand.a[within[sel]]],
                                                          numbering.local[cand.b[within[sel]]], final[method])
        return ok, score

    accepted, cand_stats = accepted_pairs(found, final, confirm_on_clients if confirm else None)
    t3 = time.perf_counter()
    # 4. clusters and keep/drop
    keep, clusters, pairs = decide_clusters(numbering, accepted)
    sizes = {c: len(clients[c].texts) for c in ids}
    params = result_params(methods, key.key_id, s, found)
    t4 = time.perf_counter()
    timings = {"encode_s": t1 - t0, "search_s": t2 - t1, "confirm_s": t3 - t2, "cluster_s": t4 - t3,
               **server.timings, "total_s": t4 - t_start}
    return DedupResult(client_ids=ids, sizes=sizes, pairs=pairs, clusters=clusters, keep=keep, thresholds=thresholds,
                       params=params, candidates=cand_stats, timings=timings,
                       server_view=view if keep_server_view else None)
