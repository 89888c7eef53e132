"""The ``[dedup]`` config section: the one source of dedup defaults.

:class:`DedupSettings` is read three ways, all with the same defaults and the same validation:

* the run config's ``[dedup]`` table (the loop's dedup component);
* :func:`~trustfl.defenses.dedup.protocol.deduplicate` (``settings=`` and/or keyword overrides,
  resolved by :func:`resolve_settings`);
* ``trustfl dedup`` (argparse defaults come from ``DedupSettings()``).

Every rejected value raises :class:`~trustfl.errors.ConfigError` whose message starts with the
field's dotted path, e.g. ``dedup.jaccard_threshold: must be in (0, 1], got 0``.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal

from trustfl.config import check as _check

__all__ = ["DEDUP_METHODS", "DedupSettings", "resolve_settings"]

DEDUP_METHODS: tuple[str, ...] = ("exact", "lexical", "semantic")
"""Every dedup method, in canonical order."""


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass
class DedupSettings:
    """Near-duplicate removal over the clients' training records before training (docs/dedup.md).

    Runs after the per-client holdout split and before data attacks; in every duplicate cluster
    (within or across clients) one record is kept (smallest client id, then index) and the rest
    dropped.

    Attributes:
        enabled: run dedup in the federated loop (run configs only; ``deduplicate()`` ignores it).
        methods: ``exact`` (keyed HMAC of the normalised text), ``lexical`` (keyed MinHash over
            ``ngram`` character/word shingles), ``semantic`` (SimHash of MiniLM embeddings; loads the FM).
        jaccard_threshold: lexical pairs need (estimated, or for within-client pairs confirmed)
            Jaccard >= this, in (0, 1].
        semantic_threshold: semantic pairs need cosine >= this (estimated as ``cos(pi h / bits)``), in (-1, 1].
        num_perm: MinHash signature length (>= 8).
        shingle, ngram: shingle unit (``char``/``word``) and length (>= 1).
        simhash_bits: SimHash code length (a positive multiple of 8).
        confirm: clients confirm within-client candidates with the true score (else the estimate decides).
        confirm_margin: within-client candidates are searched down to ``threshold - margin``, in [0, 1).
        embed_model: encoder of the semantic method (``minilm``: offline built-in).
        embed_batch_size, max_length: embedding batch size (>= 1) and tokens per text (>= 2).
        bands, rows: lexical LSH banding (unset: chosen from the threshold); ``1 <= rows <= 7``.
        index: semantic FAISS index, ``auto`` (flat up to 200k records per shard, IVF beyond), ``flat`` or ``ivf``.
        shard_size: records per FAISS index shard (unset: one index).
        nprobe: IVF lists probed (>= 1).
        key_file: the key shared by clients (created if missing); unset, the loop derives the key
            from the run seed so a run is reproducible (a simulation: the seed is not secret).
    """

    enabled: bool = False
    methods: list[str] = field(default_factory=lambda: ["exact", "lexical"])
    jaccard_threshold: float = 0.7
    semantic_threshold: float = 0.9
    num_perm: int = 128
    shingle: Literal["char", "word"] = "char"
    ngram: int = 5
    simhash_bits: int = 256
    confirm: bool = True
    confirm_margin: float = 0.1
    embed_model: str = "minilm"
    embed_batch_size: int = 64
    max_length: int = 64
    bands: int | None = None
    rows: int | None = None
    index: Literal["auto", "flat", "ivf"] = "auto"
    shard_size: int | None = None
    nprobe: int = 16
    key_file: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):  # "exact,lexical" (CLI style)
            self.methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        elif isinstance(self.methods, (tuple, list)):
            self.methods = list(self.methods)
        valid = list(DEDUP_METHODS)
        _check(isinstance(self.methods, list), "dedup.methods", f"must be a list of {valid}, got {self.methods!r}")
        bad = [m for m in self.methods if m not in valid]
        _check(not bad and bool(self.methods), "dedup.methods",
               f"must be a non-empty subset of {valid}, got {self.methods}")
        _check(len(set(self.methods)) == len(self.methods), "dedup.methods", f"has repeated entries: {self.methods}")
        for name in ("jaccard_threshold", "semantic_threshold", "confirm_margin"):
            value = getattr(self, name)
            _check(_is_number(value), f"dedup.{name}", f"must be a number, got {value!r}")
        for name in ("num_perm", "ngram", "simhash_bits", "embed_batch_size", "max_length", "nprobe"):
            value = getattr(self, name)
            _check(_is_int(value), f"dedup.{name}", f"must be an int, got {value!r}")
        for name in ("bands", "rows", "shard_size"):
            value = getattr(self, name)
            _check(value is None or _is_int(value), f"dedup.{name}", f"must be an int or unset, got {value!r}")
        _check(0 < self.jaccard_threshold <= 1, "dedup.jaccard_threshold",
               f"must be in (0, 1], got {self.jaccard_threshold}")
        _check(-1 < self.semantic_threshold <= 1, "dedup.semantic_threshold",
               f"must be in (-1, 1], got {self.semantic_threshold}")
        _check(self.num_perm >= 8, "dedup.num_perm", f"must be >= 8, got {self.num_perm}")
        _check(self.shingle in ("char", "word"), "dedup.shingle", f"must be 'char' or 'word', got {self.shingle!r}")
        _check(self.ngram >= 1, "dedup.ngram", f"must be >= 1, got {self.ngram}")
        _check(self.simhash_bits >= 8 and self.simhash_bits % 8 == 0, "dedup.simhash_bits",
               f"must be a positive multiple of 8, got {self.simhash_bits}")
        _check(isinstance(self.confirm, bool), "dedup.confirm", f"must be true or false, got {self.confirm!r}")
        _check(0 <= self.confirm_margin < 1, "dedup.confirm_margin", f"must be in [0, 1), got {self.confirm_margin}")
        _check(isinstance(self.embed_model, str) and bool(self.embed_model), "dedup.embed_model",
               f"must be a non-empty str, got {self.embed_model!r}")
        _check(self.embed_batch_size >= 1, "dedup.embed_batch_size", f"must be >= 1, got {self.embed_batch_size}")
        _check(self.max_length >= 2, "dedup.max_length", f"must be >= 2, got {self.max_length}")
        _check(self.bands is None or self.bands >= 1, "dedup.bands", f"must be >= 1 or unset, got {self.bands}")
        _check(self.rows is None or 1 <= self.rows <= 7, "dedup.rows",
               f"must be in [1, 7] or unset (a band must fit FAISS's 64-bit hash key), got {self.rows}")
        if self.bands is not None and self.rows is not None:
            _check(self.bands * self.rows <= self.num_perm, "dedup.bands",
                   f"bands * rows must be <= num_perm = {self.num_perm}, got {self.bands} * {self.rows}")
        _check(self.index in ("auto", "flat", "ivf"), "dedup.index",
               f"must be one of ['auto', 'flat', 'ivf'], got {self.index!r}")
        _check(self.shard_size is None or self.shard_size >= 1, "dedup.shard_size",
               f"must be >= 1 or unset, got {self.shard_size}")
        _check(self.nprobe >= 1, "dedup.nprobe", f"must be >= 1, got {self.nprobe}")
        _check(self.key_file is None or isinstance(self.key_file, str), "dedup.key_file",
               f"must be a path string or unset, got {self.key_file!r}")


_FIELDS = frozenset(f.name for f in dataclasses.fields(DedupSettings))


def resolve_settings(settings: DedupSettings | None = None, **overrides: Any) -> DedupSettings:
    """``settings`` (default: ``DedupSettings()``) with ``overrides`` applied and validated.

    Raises:
        ConfigError: an unknown override name, or a value :class:`DedupSettings` rejects
            (``dedup.<field>: ...``).

    Example:
        >>> resolve_settings(jaccard_threshold=0.8).jaccard_threshold
        0.8
    """
    base = DedupSettings() if settings is None else settings
    _check(isinstance(base, DedupSettings), "dedup", f"settings must be a DedupSettings, got {type(base).__name__}")
    unknown = sorted(set(overrides) - _FIELDS)
    _check(not unknown, "dedup", f"unknown key(s) {unknown}; valid keys: {sorted(_FIELDS)}")
    return dataclasses.replace(base, **overrides) if overrides else base
