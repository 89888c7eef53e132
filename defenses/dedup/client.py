"""Client side of the dedup protocol: compute codes from raw text, confirm candidates locally.

A :class:`DedupClient` holds one client's texts (and, for the semantic method, their
embeddings). Only :meth:`DedupClient.encode`'s :class:`ClientCodes` leave the client: exact
HMAC codes, keyed MinHash signatures and SimHash codes, all made with the shared
:class:`~trustfl.text.TextKey` (``DedupKey``) that the server does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from trustfl.defenses.dedup.errors import DedupError
from trustfl.defenses.dedup.settings import DEDUP_METHODS
from trustfl.text import (MATCHING_RULE, KeyedMinHash, SimHasher, TextKey, embed_texts, exact_codes, jaccard_pairs,
                          normalize_for_matching)

__all__ = ["METHODS", "ClientCodes", "DedupClient", "Method"]

Method = Literal["exact", "lexical", "semantic"]
METHODS: tuple[str, ...] = DEDUP_METHODS


@dataclass(frozen=True)
class ClientCodes:
    """Everything one client sends to the server: codes, counts and public parameters (no text).

    Attributes:
        client_id: the client's id.
        n: number of records.
        exact: ``[n, 16]`` uint8 HMAC codes, or None.
        minhash: ``[n, num_perm]`` uint32 keyed MinHash signatures, or None.
        simhash: ``[n, bits // 8]`` uint8 SimHash codes, or None.
        key_id: public id of the key (so the server can check all clients used the same key).
        params: public code parameters: every one that changes the codes (methods, normalization;
            lexical: num_perm, shingle, ngram, shingle_hash; semantic: bits, dim, model, max_length).
            The server refuses clients whose parameters differ (their codes would never match).
    """

    client_id: int
    n: int
    exact: np.ndarray | None
    minhash: np.ndarray | None
    simhash: np.ndarray | None
    key_id: str
    params: dict[str, Any] = field(default_factory=dict)


class DedupClient:
    """One client's half of the protocol.

    Args:
        client_id: the client's id (an int).
        texts: the client's raw texts (stay on the client).
        key: the shared key.
        methods: which codes to compute.
        minhash: the :class:`KeyedMinHash` all clients use (same key and parameters).
        simhasher: the :class:`SimHasher` all clients use (``semantic`` only).
        embeddings: precomputed ``[n, dim]`` embeddings (else computed with ``embed_model``).
    """

    def __init__(self, client_id: int, texts: Sequence[str], key: TextKey, *, methods: Sequence[str] = METHODS,
                 minhash: KeyedMinHash | None = None, simhasher: SimHasher | None = None,
                 embeddings: np.ndarray | None = None, embed_model: str = "minilm", embed_batch_size: int = 64,
                 max_length: int = 64, progress: bool = False) -> None:
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DedupError(f"client {client_id}: record {bad} is {type(texts[bad]).__name__}, not str "
                             f"({texts[bad]!r:.60}); every record must be text")
        self.client_id, self.key, self.methods = int(client_id), key, tuple(methods)
        self.texts = list(texts)
        self.minhash = minhash or KeyedMinHash(key)
        self.simhasher = simhasher
        self.embed_model, self.embed_batch_size, self.max_length = embed_model, embed_batch_size, max_length
        self.progress = progress
        self._norm: list[str] | None = None
        self._embeddings = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)
        if self._embeddings is not None and len(self._embeddings) != len(self.texts):
            raise DedupError(f"client {client_id}: embeddings has {len(self._embeddings)} rows for "
                             f"{len(self.texts)} texts")

    @property
    def normalized(self) -> list[str]:
        if self._norm is None:
            self._norm = [normalize_for_matching(t) for t in self.texts]
        return self._norm

    @property
    def embeddings(self) -> np.ndarray:
        """L2-normalised embeddings (computed on first use; never sent)."""
        if self._embeddings is None:
            self._embeddings = embed_texts(self.texts, self.embed_model, batch_size=self.embed_batch_size,
                                           max_length=self.max_length, progress=self.progress)
        return self._embeddings

    def encode(self) -> ClientCodes:
        """Compute the codes the server will see."""
        n = len(self.texts)
        exact = exact_codes(self.normalized, self.key, normalized=True) if "exact" in self.methods else None
        sig = self.minhash.signatures(self.normalized, normalized=True) if "lexical" in self.methods else None
        sim = None
        params: dict[str, Any] = {"methods": list(self.methods), "normalization": MATCHING_RULE}
        if "lexical" in self.methods:
            params.update(num_perm=self.minhash.num_perm, shingle=self.minhash.shingle, ngram=self.minhash.ngram,
                          shingle_hash=self.minhash.shingle_hash)
        if "semantic" in self.methods:
            if self.simhasher is None:
                raise DedupError("method 'semantic' needs a SimHasher (simhasher=SimHasher(key, dim, bits))")
            sim = self.simhasher.codes(self.embeddings) if n else np.zeros((0, self.simhasher.bits // 8), np.uint8)
            params.update(bits=self.simhasher.bits, dim=self.simhasher.dim, model=self.embed_model,
                          max_length=self.max_length)
        return ClientCodes(client_id=self.client_id, n=n, exact=exact, minhash=sig, simhash=sim,
                           key_id=self.key.key_id, params=params)

    # ------------------------------------------------------------------ local confirmation
    def local_scores(self, method: str, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """True similarity of local record pairs ``(i[k], j[k])``: 1/0 for exact (normalised texts
        equal), the true shingle Jaccard for lexical, the embedding cosine for semantic."""
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        if method == "exact":
            norm = self.normalized
            return np.array([float(norm[a] == norm[b]) for a, b in zip(i, j)], dtype=np.float64)
        if method == "lexical":
            rows, inv = np.unique(np.concatenate([i, j]), return_inverse=True)
            ids, counts = self.minhash.shingle_sets([self.normalized[r] for r in rows], normalized=True)
            return jaccard_pairs(ids, counts, inv[:len(i)], inv[len(i):])
        if method == "semantic":
            e = self.embeddings
            return np.einsum("ij,ij->i", e[i], e[j]).astype(np.float64)
        raise DedupError(f"method must be one of {list(METHODS)}, got {method!r}")

    def confirm(self, method: str, i: np.ndarray, j: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Confirm within-client candidates: ``(accepted, true_score)`` with ``true_score >= threshold``."""
        scores = self.local_scores(method, i, j)
        return scores >= threshold - 1e-12, scores
