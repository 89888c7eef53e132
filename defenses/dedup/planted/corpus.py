"""Planted-duplicate corpora: real texts spread over clients plus copies with known sources.

* :func:`plant_duplicates` — plant copies of randomly chosen records of real texts, by type;
* :func:`benchmark_corpus` — a large corpus (default 1M records) from the real corpora, with
  planted copies at a given rate;
* :class:`PlantedCorpus` — the records column by column with their ground truth (source,
  type, edits, cluster), saved to / loaded from a folder.

The exact-duplicate rule of the ground truth (``normalize``) defaults to
:func:`trustfl.text.normalize_for_matching`, the rule dedup's exact codes use.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustfl.defenses.dedup.clusters import component_labels
from trustfl.defenses.dedup.planted.edits import EditRates, case_whitespace_variant, paraphrase_edit, typo_edit, word_swap_edit
from trustfl.text import normalize_for_matching

__all__ = ["DUP_TYPES", "NATURAL_EXACT", "ORIGINAL", "PlantedCorpus", "benchmark_corpus", "plant_duplicates"]

DUP_TYPES: tuple[str, ...] = ("exact", "typo", "word_swap", "paraphrase", "cross_client")
"""Planted duplicate types; ``natural_exact`` (already in the corpus) and ``original`` complete the labels."""

ORIGINAL, NATURAL_EXACT = "original", "natural_exact"


@dataclass
class PlantedCorpus:
    """Records with client placement and ground truth, column by column (global record id = position).

    Attributes:
        texts: record texts.
        client_id: int64 ``[n]``, the client holding each record.
        source_id: int64 ``[n]``, the record this one copies (-1 for records that copy nothing).
        dup_type: str ``[n]``: ``original``, ``natural_exact`` or one of :data:`DUP_TYPES`.
        edits: int64 ``[n]``, edits applied to the copy (0 for originals and exact copies).
        cross_client: bool ``[n]``, a copy on another client than its source.
        cluster: int64 ``[n]``, ground-truth cluster label (connected components of source links).
        meta: how the corpus was made (seed, rates, sources, counts).
    """

    texts: list[str]
    client_id: np.ndarray
    source_id: np.ndarray
    dup_type: np.ndarray
    edits: np.ndarray
    cross_client: np.ndarray
    cluster: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def client_ids(self) -> list[int]:
        """Clients holding at least one record, sorted."""
        return sorted(int(c) for c in np.unique(self.client_id))

    @property
    def local_index(self) -> np.ndarray:
        """Index of each record within its client's list (records keep their global order per client)."""
        order = np.argsort(self.client_id, kind="stable")
        local = np.empty(len(self), dtype=np.int64)
        counts = np.bincount(self.client_id[order])
        starts = np.cumsum(counts) - counts
        local[order] = np.arange(len(self)) - np.repeat(starts, counts)
        return local

    def client_global_ids(self) -> dict[int, np.ndarray]:
        """Global record ids of each client, in the client's local order."""
        return {c: np.flatnonzero(self.client_id == c) for c in self.client_ids}

    def client_texts(self) -> dict[int, list[str]]:
        """``{client_id: texts}`` in local order, the input of a federated dedup."""
        return {c: [self.texts[i] for i in ids] for c, ids in self.client_global_ids().items()}

    def to_global(self, client: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Global ids of records given as ``(client_id, local index)`` arrays."""
        ids = self.client_global_ids()
        client, index = np.asarray(client, dtype=np.int64), np.asarray(index, dtype=np.int64)
        out = np.empty(len(client), dtype=np.int64)
        for c, g in ids.items():
            sel = client == c
            out[sel] = g[index[sel]]
        return out

    def type_counts(self) -> dict[str, int]:
        """Records per ``dup_type``."""
        kinds, counts = np.unique(self.dup_type, return_counts=True)
        return {str(k): int(v) for k, v in zip(kinds, counts)}

    def true_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth links ``(copy, source)`` (planted and natural exact)."""
        sel = np.flatnonzero(self.source_id >= 0)
        return sel, self.source_id[sel]

    def save(self, path: str | Path) -> Path:
        """Save as an Arrow dataset directory (``datasets.Dataset.save_to_disk``) plus ``meta.json``."""
        from datasets import Dataset

        path = Path(path)
        ds = Dataset.from_dict({"text": self.texts, "client_id": self.client_id, "source_id": self.source_id,
                                "dup_type": self.dup_type.astype(str).tolist(), "edits": self.edits,
                                "cross_client": self.cross_client, "cluster": self.cluster})
        ds.save_to_disk(str(path))
        (path / "planted_meta.json").write_text(json.dumps(self.meta, indent=1, default=str) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PlantedCorpus:
        """Load what :meth:`save` wrote."""
        from datasets import load_from_disk

        path = Path(path)
        ds = load_from_disk(str(path)).with_format("numpy", columns=["client_id", "source_id", "edits",
                                                                     "cross_client", "cluster"])
        meta = json.loads((path / "planted_meta.json").read_text())
        cols = ds[:]
        plain = ds.with_format(None)
        return cls(texts=plain["text"][:], client_id=cols["client_id"].astype(np.int64),
                   source_id=cols["source_id"].astype(np.int64),
                   dup_type=np.asarray(plain["dup_type"][:], dtype=object), edits=cols["edits"].astype(np.int64),
                   cross_client=cols["cross_client"].astype(bool), cluster=cols["cluster"].astype(np.int64),
                   meta=meta)

    def to_dataset(self) -> Any:
        """The records as a ``datasets.Dataset`` (columns as in :meth:`save`)."""
        from datasets import Dataset

        return Dataset.from_dict({"text": self.texts, "client_id": self.client_id, "source_id": self.source_id,
                                  "dup_type": self.dup_type.astype(str).tolist(), "edits": self.edits,
                                  "cross_client": self.cross_client, "cluster": self.cluster})



def _natural_exact_sources(texts: Sequence[str], normalize: Callable[[str], str]) -> np.ndarray:
    """For each record the first earlier record with the same normalised text, else -1."""
    first: dict[str, int] = {}
    out = np.full(len(texts), -1, dtype=np.int64)
    for i, t in enumerate(texts):
        k = normalize(t)
        j = first.setdefault(k, i)
        if j != i:
            out[i] = j
    return out


def _resolve_counts(n_base: int, counts: Mapping[str, int] | None, rate: float | None,
                    mix: Mapping[str, float] | None) -> dict[str, int]:
    if counts is not None:
        bad = [t for t in counts if t not in DUP_TYPES]
        if bad:
            raise ValueError(f"unknown duplicate types {bad}; choose from {list(DUP_TYPES)}")
        if any(int(v) < 0 for v in counts.values()):
            raise ValueError(f"counts must be >= 0, got {dict(counts)}")
        return {t: int(counts.get(t, 0)) for t in DUP_TYPES}
    if rate is None or not 0.0 <= rate < 1.0:
        raise ValueError(f"give counts={{type: n}} or a rate in [0, 1), got rate={rate!r}")
    weights = dict(mix) if mix is not None else {t: 1.0 for t in DUP_TYPES}
    bad = [t for t in weights if t not in DUP_TYPES]
    if bad or not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"mix must map types of {list(DUP_TYPES)} to non-negative weights, got {weights}")
    total = round(rate * n_base / (1.0 - rate))  # planted / (base + planted) == rate
    w = np.array([weights.get(t, 0.0) for t in DUP_TYPES], dtype=np.float64)
    raw = w / w.sum() * total
    out = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - out))[: total - int(out.sum())]:  # largest remainders
        out[k] += 1
    return {t: int(v) for t, v in zip(DUP_TYPES, out)}


def _plant(base_texts: list[str], base_client: np.ndarray, counts: dict[str, int], n_clients: int,
           rates: EditRates, rng: random.Random, normalize: Callable[[str], str],
           base_norm: list[str] | None = None) -> tuple[list[str], list[int], list[int], list[str], list[int]]:
    """Plant copies of base records; returns texts, clients, sources, types, edit counts of the copies."""
    norm = base_norm if base_norm is not None else [normalize(t) for t in base_texts]
    natural = _natural_exact_sources(norm, lambda s: s)
    eligible = [i for i, t in enumerate(norm) if natural[i] < 0 and len(t) >= rates.min_source_chars
                and len(t.split()) >= rates.min_source_words]
    need = sum(counts.values())
    if need and not eligible:
        raise ValueError(f"no source text has >= {rates.min_source_chars} characters and >= "
                         f"{rates.min_source_words} words after normalisation; lower EditRates.min_source_*")
    if need and n_clients < 2 and counts.get("cross_client", 0):
        raise ValueError("cross_client copies need n_clients >= 2")
    texts: list[str] = []
    clients: list[int] = []
    sources: list[int] = []
    kinds: list[str] = []
    edits: list[int] = []
    for kind in DUP_TYPES:
        made = 0
        attempts = 0
        while made < counts.get(kind, 0):
            attempts += 1
            if attempts > 50 * counts[kind] + 1000:
                raise ValueError(f"could not plant {counts[kind]} {kind!r} copies: edits kept failing "
                                 "(sources too short?)")
            src = rng.choice(eligible)
            text = base_texts[src]
            n_edits = 0
            if kind == "exact":
                new = case_whitespace_variant(text, rng)
            elif kind == "typo":
                new, n_edits = typo_edit(text, rates.typo_rate, rng)
            elif kind == "word_swap":
                new, n_edits = word_swap_edit(text, rates.swap_rate, rng)
            elif kind == "paraphrase":
                new, n_edits = paraphrase_edit(text, rates.paraphrase_rate, rng, filler_prob=rates.filler_prob,
                                               drop_prob=rates.drop_prob, reorder_prob=rates.reorder_prob)
            else:  # cross_client
                new = case_whitespace_variant(text, rng)
                if rng.random() < 0.5:
                    new, n_edits = typo_edit(new, rates.typo_rate, rng)
            if kind != "exact" and n_edits == 0 and kind != "cross_client":
                continue
            if kind in ("exact", "cross_client") and n_edits == 0:
                if normalize(new) != norm[src]:
                    continue  # the variant must be an exact duplicate under `normalize`
            elif normalize(new) == norm[src]:
                continue  # an edit that normalisation undoes is not a near-duplicate edit
            home = int(base_client[src])
            if kind == "cross_client" or (n_clients > 1 and rng.random() >= rates.same_client_prob):
                client = rng.randrange(n_clients - 1)
                client += client >= home
            else:
                client = home
            texts.append(new)
            clients.append(client)
            sources.append(src)
            kinds.append(kind)
            edits.append(n_edits)
            made += 1
    return texts, clients, sources, kinds, edits


def _assemble(base_texts: list[str], base_client: np.ndarray, base_norm: list[str], planted: tuple,
              shuffle: bool, rng: random.Random, meta: dict[str, Any]) -> PlantedCorpus:
    p_texts, p_clients, p_sources, p_kinds, p_edits = planted
    n_base, n = len(base_texts), len(base_texts) + len(p_texts)
    natural = _natural_exact_sources(base_norm, lambda s: s)
    source = np.concatenate([natural, np.asarray(p_sources, dtype=np.int64)])
    dup_type = np.asarray([NATURAL_EXACT if s >= 0 else ORIGINAL for s in natural] + list(p_kinds), dtype=object)
    client = np.concatenate([base_client.astype(np.int64), np.asarray(p_clients, dtype=np.int64)])
    edits = np.concatenate([np.zeros(n_base, dtype=np.int64), np.asarray(p_edits, dtype=np.int64)])
    texts = list(base_texts) + list(p_texts)
    if shuffle:
        perm = np.arange(n)
        np.random.Generator(np.random.PCG64(rng.getrandbits(64))).shuffle(perm)
        inv = np.empty(n, dtype=np.int64)
        inv[perm] = np.arange(n)
        texts = [texts[i] for i in perm]
        client, edits, dup_type = client[perm], edits[perm], dup_type[perm]
        source = source[perm]
        source = np.where(source >= 0, inv[np.maximum(source, 0)], -1)
    has = source >= 0
    cross = np.zeros(n, dtype=bool)
    cross[has] = client[has] != client[source[has]]
    cluster = component_labels(n, np.flatnonzero(has), source[has])
    meta = dict(meta, counts={str(k): int(v) for k, v in zip(*np.unique(dup_type.astype(str), return_counts=True))})
    return PlantedCorpus(texts=texts, client_id=client, source_id=source, dup_type=dup_type, edits=edits,
                         cross_client=cross, cluster=cluster, meta=meta)


def plant_duplicates(texts: Sequence[str], *, counts: Mapping[str, int] | None = None, rate: float | None = None,
                     mix: Mapping[str, float] | None = None, n_clients: int = 8,
                     client_of: Sequence[int] | np.ndarray | None = None, seed: int = 0,
                     rates: EditRates | None = None, normalize: Callable[[str], str] = normalize_for_matching,
                     shuffle: bool = True, min_source_chars: int | None = None) -> PlantedCorpus:
    """Spread ``texts`` over clients and plant near-duplicates with known sources.

    Args:
        texts: the real records (base); duplicates among them become ``natural_exact``.
        counts: copies to plant per type (keys from :data:`DUP_TYPES`), or
        rate: planted share of the *final* corpus, split over types by ``mix`` (default: equal).
        n_clients: clients; base records are placed uniformly at random unless ``client_of`` is given.
        seed: all randomness (placement, sources, edits, shuffling) derives from it.
        rates: edit strengths and placement (:class:`EditRates`).
        normalize: the exact-duplicate rule (pass the detector's normaliser so ground truth and
            detector agree on what "exact" means).
        shuffle: shuffle all records (else base records first, then copies by type).
        min_source_chars: shortcut overriding ``rates.min_source_chars``.

    Returns:
        :class:`PlantedCorpus`; sources are always ``original`` records (never copies).

    Raises:
        ValueError: bad counts/rate/mix, ``client_of`` of the wrong length or out of range, or no
            text long enough to be a source.
    """
    rates = rates or EditRates()
    if min_source_chars is not None:
        rates = EditRates(**{**rates.__dict__, "min_source_chars": int(min_source_chars)})
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1, got {n_clients}")
    base = [str(t) for t in texts]
    rng = random.Random(seed)
    if client_of is None:
        base_client = np.random.Generator(np.random.PCG64(rng.getrandbits(64))).integers(0, n_clients, len(base))
    else:
        base_client = np.asarray(client_of, dtype=np.int64)
        if base_client.shape != (len(base),) or (len(base) and (base_client.min() < 0
                                                                or base_client.max() >= n_clients)):
            raise ValueError(f"client_of must hold {len(base)} ints in [0, {n_clients}), got shape "
                             f"{base_client.shape}")
    want = _resolve_counts(len(base), counts, rate, mix)
    norm = [normalize(t) for t in base]
    planted = _plant(base, base_client, want, n_clients, rates, rng, normalize, norm)
    meta = {"generator": "plant_duplicates", "seed": seed, "n_clients": n_clients, "planted": want,
            "rates": rates.__dict__, "shuffle": shuffle}
    return _assemble(base, base_client, norm, planted, shuffle, rng, meta)


def _join_pairs(lengths: np.ndarray, n_pairs: int, gen: np.random.Generator, *, window: int = 2000,
                max_ratio: float = 2.0) -> np.ndarray:
    """``n_pairs`` distinct unordered index pairs ``[n_pairs, 2]`` of similar length (random order within a pair)."""
    m = len(lengths)
    order = np.argsort(lengths, kind="stable")
    srt = lengths[order].astype(np.float64)
    max_pairs = m * min(window, m - 1) // 2
    if n_pairs > max_pairs * 0.9:
        raise ValueError(f"cannot make {n_pairs} distinct joined records from {m} texts (window {window}); "
                         "lower n_records or add sources")
    keys = np.zeros(0, dtype=np.int64)
    while len(keys) < n_pairs:
        size = int((n_pairs - len(keys)) * 1.3) + 1000
        i = gen.integers(0, m, size)
        j = i + gen.integers(-window, window + 1, size)
        ok = (j >= 0) & (j < m) & (j != i)
        i, j = i[ok], j[ok]
        ratio = np.maximum(srt[i], srt[j]) / np.maximum(np.minimum(srt[i], srt[j]), 1.0)
        i, j = i[ratio <= max_ratio], j[ratio <= max_ratio]
        new = np.minimum(i, j).astype(np.int64) * m + np.maximum(i, j)
        keys = np.concatenate([keys, new])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]
    keys = keys[:n_pairs]
    a, b = order[keys // m], order[keys % m]
    flip = gen.random(n_pairs) < 0.5
    return np.stack([np.where(flip, b, a), np.where(flip, a, b)], axis=1)


def benchmark_corpus(n_records: int = 1_000_000, *, dup_rate: float = 0.1,
                     sources: Sequence[str] = ("sms_spam", "trec", "health_tweets"), n_clients: int = 8,
                     seed: int = 0, mix: Mapping[str, float] | None = None, rates: EditRates | None = None,
                     normalize: Callable[[str], str] = normalize_for_matching,
                     texts: Sequence[str] | None = None) -> PlantedCorpus:
    """A large corpus built from the real corpora, with planted duplicates at ``dup_rate``.

    Base records (``(1 - dup_rate) * n_records``): every real text of ``sources`` once (their own
    exact duplicates included, typed ``natural_exact``), then records made by joining two whole
    real texts with a space: the two are distinct after normalisation, their lengths differ by at
    most a factor of 2 and every unordered pair is used at most once. Then ``dup_rate *
    n_records`` copies are planted as in :func:`plant_duplicates` (sources: any original base
    record, real or joined), and everything is shuffled.

    Args:
        n_records: final corpus size.
        dup_rate: planted share of the final corpus.
        sources: corpora for :func:`trustfl.data.load_dataset_source` (ignored when ``texts`` is given).
        texts: use these real texts instead of loading ``sources``.
        mix, rates, normalize, n_clients, seed: as in :func:`plant_duplicates`.
    """
    if n_records < 1 or not 0.0 <= dup_rate < 1.0:
        raise ValueError(f"need n_records >= 1 and dup_rate in [0, 1), got {n_records}, {dup_rate}")
    rates = rates or EditRates()
    rng = random.Random(seed)
    gen = np.random.Generator(np.random.PCG64(rng.getrandbits(64)))
    if texts is None:
        from trustfl.data.sources import load_dataset_source

        real: list[str] = []
        for name in sources:
            real.extend(load_dataset_source(name)["text"][:])
    else:
        real = [str(t) for t in texts]
    n_planted = round(dup_rate * n_records)
    n_base = n_records - n_planted
    if n_base <= len(real):
        keep = np.sort(gen.choice(len(real), size=n_base, replace=False))
        base = [real[i] for i in keep]
        n_joined = 0
    else:
        norm_real = [normalize(t) for t in real]
        first: dict[str, int] = {}
        for i, t in enumerate(norm_real):
            first.setdefault(t, i)
        distinct = np.fromiter(first.values(), dtype=np.int64)
        lengths = np.array([len(norm_real[i]) for i in distinct])
        n_joined = n_base - len(real)
        pairs = _join_pairs(lengths, n_joined, gen)
        base = list(real) + [f"{real[distinct[i]]} {real[distinct[j]]}" for i, j in pairs]
    base_client = gen.integers(0, n_clients, len(base))
    norm = [normalize(t) for t in base]
    want = _resolve_counts(n_base, None, dup_rate, mix) if n_planted else {t: 0 for t in DUP_TYPES}
    planted = _plant(base, base_client, want, n_clients, rates, rng, normalize, norm)
    meta = {"generator": "benchmark_corpus", "seed": seed, "n_records": n_records, "dup_rate": dup_rate,
            "sources": list(sources) if texts is None else "texts", "real_texts": len(real), "joined": n_joined,
            "n_clients": n_clients, "planted": want, "rates": rates.__dict__}
    return _assemble(base, base_client, norm, planted, True, rng, meta)

