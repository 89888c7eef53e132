"""Copy detection: flag synthetic records that copy a reference (training) record.

Four criteria, each with a documented default threshold (docs/origin.md):

=============  ===========================================================  ==============
method         score of a synthetic record vs its nearest reference         flagged when
=============  ===========================================================  ==============
``exact``      equal keyed HMAC code of the normalised text                  equal codes
               (:func:`trustfl.text.exact_codes`)
``lcs``        longest common substring in characters (Carlini et al.        ``>= lcs_chars``
               2021), candidates from a keyed N-gram index (:mod:`.lcs`)     (50)
``minhash``    keyed-MinHash estimated Jaccard of character 5-gram           ``>= jaccard``
               shingles (Broder 1997; :class:`trustfl.text.KeyedMinHash`)    (0.7)
``embedding``  cosine of L2-normalised MiniLM embeddings, FAISS              ``>= cosine``
               ``IndexFlatIP`` (Reimers & Gurevych 2019)                     (0.95)
=============  ===========================================================  ==============

Every record gets a :class:`CopyFinding` with, per method, its nearest reference (index,
client, record id) and score, and the criteria that fired. Findings hold ids and scores,
never reference text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trustfl.audits.origin.corpus import TextCorpus
from trustfl.audits.origin.errors import OriginError
from trustfl.audits.origin.lcs import NgramIndex
from trustfl.audits.origin.neighbors import nearest_cosine, nearest_minhash
from trustfl.text import KeyedMinHash, TextKey, exact_codes

__all__ = ["COPY_METHODS", "CopyFinding", "CopyResult", "CopyThresholds", "detect_copies", "validate_copy_methods"]

COPY_METHODS: tuple[str, ...] = ("exact", "lcs", "minhash", "embedding")


def validate_copy_methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    """Parse ``"exact,lcs"`` or a list into a tuple in canonical order.

    Raises:
        OriginError: empty, repeated or unknown names (lists the valid ones).
    """
    items = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    bad = [m for m in items if m not in COPY_METHODS]
    if not items or bad or len(set(items)) != len(items):
        raise OriginError(f"methods={items!r}: must be a non-empty subset without repeats of "
                          f"{list(COPY_METHODS)}; unknown: {bad}")
    return tuple(m for m in COPY_METHODS if m in items)


@dataclass(frozen=True)
class CopyThresholds:
    """When a criterion fires.

    Attributes:
        lcs_chars: LCS length (characters, normalised text) that counts as a verbatim copy, >= 8.
            50 characters is about a dozen words: chance matches between unrelated short texts are
            negligible, a copied sentence inside new text is caught (docs/origin.md).
        jaccard: estimated Jaccard of character 5-gram shingle sets, in (0, 1] (0.7: dedup's default).
        cosine: embedding cosine similarity, in (-1, 1] (0.95: near-paraphrase).

    Raises:
        OriginError: a value outside its range (the message names it).
    """

    lcs_chars: int = 50
    jaccard: float = 0.7
    cosine: float = 0.95

    def __post_init__(self) -> None:
        if isinstance(self.lcs_chars, bool) or not isinstance(self.lcs_chars, int) or self.lcs_chars < 8:
            raise OriginError(f"lcs_chars (--lcs-chars) must be an integer >= 8, got {self.lcs_chars!r}")
        if not (isinstance(self.jaccard, (int, float)) and 0.0 < self.jaccard <= 1.0):
            raise OriginError(f"jaccard (--jaccard-threshold) must be in (0, 1], got {self.jaccard!r}")
        if not (isinstance(self.cosine, (int, float)) and -1.0 < self.cosine <= 1.0):
            raise OriginError(f"cosine (--cosine-threshold) must be in (-1, 1], got {self.cosine!r}")


@dataclass(frozen=True)
class CopyFinding:
    """One synthetic record's comparison with the references.

    Attributes:
        index: the synthetic record's index.
        criteria: the methods that fired (empty: not flagged).
        nearest: per method ``{"reference": {"index", "client", "record"} | None, "score": float,
            "distance": float}``: exact score 1/0; lcs score = length in characters (distance =
            ``1 - length / len(normalised synthetic text)``); minhash score = estimated Jaccard;
            embedding score = cosine (distances ``1 - score``).
        reference: the nearest reference of the first fired criterion (exact > lcs > minhash >
            embedding), or of the best available method when nothing fired.
    """

    index: int
    criteria: tuple[str, ...]
    nearest: dict[str, dict[str, Any]]
    reference: dict[str, Any] | None

    @property
    def flagged(self) -> bool:
        return bool(self.criteria)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "flagged": self.flagged, "criteria": list(self.criteria),
                "reference": self.reference, "nearest": self.nearest}


@dataclass(frozen=True)
class CopyResult:
    """All findings of :func:`detect_copies` (one per synthetic record) with the settings used."""

    methods: tuple[str, ...]
    thresholds: CopyThresholds
    n_synthetic: int
    n_reference: int
    findings: tuple[CopyFinding, ...]
    key_id: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def flagged(self) -> list[CopyFinding]:
        return [f for f in self.findings if f.flagged]

    def counts(self) -> dict[str, Any]:
        """``{"flagged": n, "by_method": {method: n}, "fraction_flagged": n / n_synthetic}``."""
        by = {m: sum(m in f.criteria for f in self.findings) for m in self.methods}
        n = len(self.flagged)
        return {"flagged": n, "by_method": by, "fraction_flagged": n / max(1, self.n_synthetic)}

    def to_dict(self, *, all_records: bool = False) -> dict[str, Any]:
        shown = self.findings if all_records else tuple(self.flagged)
        return {"methods": list(self.methods), "thresholds": vars(self.thresholds).copy(),
                "n_synthetic": self.n_synthetic, "n_reference": self.n_reference, "key_id": self.key_id,
                "counts": self.counts(), "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "findings": [f.to_dict() for f in shown]}


def _as_corpus(x: TextCorpus | Sequence[str], name: str) -> TextCorpus:
    corpus = x if isinstance(x, TextCorpus) else TextCorpus.from_texts(x, name=name)
    if len(corpus) == 0:
        raise OriginError(f"{name}: the corpus is empty (0 records)")
    return corpus


def detect_copies(synthetic: TextCorpus | Sequence[str], reference: TextCorpus | Sequence[str], *,
                  methods: str | Sequence[str] = COPY_METHODS, thresholds: CopyThresholds | None = None,
                  key: TextKey | None = None, num_perm: int = 128, ngram: int = 5, embed_model: str = "minilm",
                  synthetic_embeddings: np.ndarray | None = None, reference_embeddings: np.ndarray | None = None,
                  max_length: int = 64, progress: bool = False) -> CopyResult:
    """Compare every synthetic record with the references under ``methods``.

    Args:
        synthetic, reference: texts or :class:`TextCorpus` objects (clients/record ids kept).
        methods: subset of :data:`COPY_METHODS` (comma string or list).
        thresholds: :class:`CopyThresholds` (defaults: lcs 50 chars, Jaccard 0.7, cosine 0.95).
        key: the :class:`TextKey` of the keyed codes (exact HMAC, N-gram ids, MinHash); a fresh
            random key when ``None`` (codes are only compared within this call).
        num_perm, ngram: MinHash signature length and character shingle size.
        embed_model: encoder for ``embedding`` (``"minilm"`` or a local folder); not loaded when
            both ``*_embeddings`` are given (``[n, dim]`` arrays in corpus order).

    Returns:
        :class:`CopyResult` with one :class:`CopyFinding` per synthetic record.

    Raises:
        OriginError: empty corpora, unknown methods, bad thresholds, mis-shaped embeddings.

    Example:
        >>> ref = ["Flu season starts early this year, experts warn, get your shot now please"]
        >>> res = detect_copies(["flu season starts early this year, experts warn, get your shot now!",
        ...                      "completely unrelated"], ref, methods="exact,lcs,minhash")
        >>> [f.criteria for f in res.findings]
        [('lcs', 'minhash'), ()]
    """
    methods = validate_copy_methods(methods)
    thresholds = thresholds or CopyThresholds()
    syn, ref = _as_corpus(synthetic, "synthetic"), _as_corpus(reference, "reference")
    key = key or TextKey.generate()
    n = len(syn)
    nearest: list[dict[str, dict[str, Any]]] = [{} for _ in range(n)]
    fired: list[list[str]] = [[] for _ in range(n)]
    seconds: dict[str, float] = {}

    def record_similarity(method: str, idx: np.ndarray, sim: np.ndarray, threshold: float) -> None:
        """Each record's nearest reference under a similarity (distance = 1 - similarity); fire at >= threshold."""
        for i in range(n):
            nearest[i][method] = {"reference": ref.ref(int(idx[i])), "score": round(float(sim[i]), 6),
                                  "distance": round(1.0 - float(sim[i]), 6)}
            if sim[i] >= threshold:
                fired[i].append(method)

    if "exact" in methods:
        t0 = time.perf_counter()
        first: dict[bytes, int] = {}
        for i, c in enumerate(exact_codes(ref.texts, key)):
            first.setdefault(c.tobytes(), i)
        for i, c in enumerate(exact_codes(syn.texts, key)):
            j = first.get(c.tobytes())
            nearest[i]["exact"] = {"reference": ref.ref(j) if j is not None else None,
                                   "score": float(j is not None), "distance": float(j is None)}
            if j is not None:
                fired[i].append("exact")
        seconds["exact_s"] = time.perf_counter() - t0
    if "lcs" in methods:
        t0 = time.perf_counter()
        index = NgramIndex(ref.texts, min_chars=thresholds.lcs_chars, key=key)
        for i, m in enumerate(index.query(syn.texts)):
            qlen = max(1, len(index.prepare(syn.texts[i])))
            nearest[i]["lcs"] = {"reference": ref.ref(m.reference) if m else None,
                                 "score": float(m.length) if m else 0.0,
                                 "distance": round(1.0 - (m.length / qlen if m else 0.0), 6),
                                 "candidates": m.candidates if m else 0}
            if m is not None:
                fired[i].append("lcs")
        seconds["lcs_s"] = time.perf_counter() - t0
    if "minhash" in methods:
        t0 = time.perf_counter()
        mh = KeyedMinHash(key, num_perm=num_perm, shingle="char", ngram=ngram)
        idx, jac = nearest_minhash(mh.signatures(syn.texts), mh.signatures(ref.texts))
        record_similarity("minhash", idx, jac, thresholds.jaccard)
        seconds["minhash_s"] = time.perf_counter() - t0
    if "embedding" in methods:
        t0 = time.perf_counter()
        se, re_ = synthetic_embeddings, reference_embeddings
        if se is None or re_ is None:
            from trustfl.text import embed_texts

            if se is None:
                se = embed_texts(list(syn.texts), embed_model, max_length=max_length, progress=progress)
            if re_ is None:
                re_ = embed_texts(list(ref.texts), embed_model, max_length=max_length, progress=progress)
        if len(se) != n or len(re_) != len(ref):
            raise OriginError(f"embeddings: got {len(se)} synthetic and {len(re_)} reference rows for "
                              f"{n} and {len(ref)} records")
        record_similarity("embedding", *nearest_cosine(se, re_), thresholds.cosine)
        seconds["embedding_s"] = time.perf_counter() - t0

    findings = []
    for i in range(n):
        order = fired[i] or [m for m in ("minhash", "embedding", "lcs", "exact") if m in nearest[i]]
        reference = next((nearest[i][m]["reference"] for m in order if nearest[i][m]["reference"] is not None), None)
        findings.append(CopyFinding(i, tuple(fired[i]), nearest[i], reference))
    return CopyResult(methods, thresholds, n, len(ref), tuple(findings), key.key_id, seconds)
