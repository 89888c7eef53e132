"""Planted near-duplicates with known ground truth, for measuring near-duplicate detection.

Two generators and one scorer:

* :func:`plant_duplicates` takes real texts (e.g. the 5,574 SMS of ``sms_spam``), spreads them
  over clients and plants copies of randomly chosen source records, by type:

  - ``exact``: a verbatim copy whose ASCII letter case and whitespace may differ;
  - ``typo``: character edits (insert / delete / substitute / transpose of letters), about
    ``typo_rate`` edits per character, at least one;
  - ``word_swap``: swaps of adjacent, distinct words at non-overlapping positions, about
    ``swap_rate`` swaps per word, at least one (a small reordering: no word moves by more
    than one position);
  - ``paraphrase``: *edit-based* paraphrase-like rewrites, not a neural paraphraser:
    synonym substitution from a small built-in word list (:data:`SYNONYMS`), insertion of a
    filler word, dropping of a stop word, and swapping two clauses around a sentence break,
    a comma or a conjunction;
  - ``cross_client``: a copy (case/whitespace variant, with probability 1/2 also typo-edited
    at ``typo_rate``) always placed on a client other than its source's.

  Copies of the first four types land on the source's client with probability
  ``same_client_prob`` and on another client otherwise; every record says whether it is a
  cross-client copy. Duplicates already present in the real texts are part of the ground
  truth: every record whose normalised text equals an earlier record's is typed
  ``natural_exact`` with that earlier record as its source.

* :func:`benchmark_corpus` builds a large corpus (default 1M records) *from the real corpora*
  ``sms_spam`` + ``trec`` + ``health_tweets`` (74,281 texts): all real texts once, plus
  distinct records made by joining two whole texts (distinct after normalisation, lengths
  within a factor of 2, each unordered pair used once), then planted copies at ``dup_rate``
  of the final size. Joining two texts of similar length means two joined records that share
  one part have a shingle Jaccard of about 1/3, far below usual thresholds, so the joins
  themselves are not near-duplicates of each other.

* :func:`score_dedup` scores predicted clusters against the ground truth, per duplicate type
  and pairwise (see its docstring for the definitions); :func:`adjudicate_pairs` decides
  whether predicted pairs outside the planted ground truth are genuine near-duplicates by
  their true shingle Jaccard, so near-duplicates already in the real corpora are not
  counted as false positives.

Example:
    >>> corpus = plant_duplicates(["the cat sat on the mat today", "hello there my old friend"] * 3,
    ...                           counts={"typo": 2}, n_clients=2, seed=0, min_source_chars=10)
    >>> sorted(set(corpus.dup_type.tolist()))
    ['natural_exact', 'original', 'typo']
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DUP_TYPES",
    "EditRates",
    "PlantedCorpus",
    "SYNONYMS",
    "adjudicate_pairs",
    "benchmark_corpus",
    "case_whitespace_variant",
    "default_normalize",
    "labels_from_clusters",
    "labels_from_edges",
    "paraphrase_edit",
    "plant_duplicates",
    "score_dedup",
    "shingle_jaccard",
    "typo_edit",
    "word_swap_edit",
]

DUP_TYPES: tuple[str, ...] = ("exact", "typo", "word_swap", "paraphrase", "cross_client")
"""Planted duplicate types; ``natural_exact`` (already in the corpus) and ``original`` complete the labels."""

ORIGINAL, NATURAL_EXACT = "original", "natural_exact"

SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("buy", "purchase"), ("call", "phone"), ("free", "complimentary"), ("get", "receive"),
    ("big", "large"), ("small", "little"), ("happy", "glad"), ("help", "assist"), ("tell", "inform"),
    ("need", "require"), ("send", "forward"), ("reply", "respond"), ("start", "begin"), ("end", "finish"),
    ("quick", "fast"), ("soon", "shortly"), ("home", "house"), ("job", "work"), ("money", "cash"),
    ("prize", "reward"), ("win", "earn"), ("message", "text"), ("mobile", "cellphone"), ("think", "believe"),
    ("know", "realise"), ("see", "notice"), ("say", "state"), ("ask", "inquire"), ("show", "display"),
    ("try", "attempt"), ("use", "utilise"), ("make", "create"), ("find", "discover"), ("come", "arrive"),
    ("leave", "depart"), ("people", "folks"), ("children", "kids"), ("doctor", "physician"),
    ("risk", "danger"), ("increase", "rise"), ("reduce", "lower"), ("disease", "illness"), ("sick", "ill"),
    ("drug", "medication"), ("new", "novel"), ("important", "significant"), ("many", "numerous"),
    ("often", "frequently"), ("maybe", "perhaps"), ("about", "regarding"), ("because", "since"),
    ("very", "really"), ("sorry", "apologies"), ("thanks", "cheers"), ("ok", "okay"), ("tonight", "this evening"),
    ("later", "afterwards"), ("city", "town"), ("country", "nation"), ("largest", "biggest"),
    ("famous", "well-known"), ("called", "named"), ("invented", "created"), ("died", "passed away"),
    ("study", "research"), ("women", "ladies"), ("men", "guys"), ("week", "seven days"), ("today", "this day"),
    ("great", "excellent"), ("good", "fine"), ("bad", "poor"), ("love", "adore"), ("want", "wish"),
)
"""Synonym groups used by :func:`paraphrase_edit` (a word is replaced by another member of its group)."""

_SYNONYM_OF: dict[str, tuple[str, ...]] = {}
for _group in SYNONYMS:
    for _w in _group:
        _SYNONYM_OF[_w] = tuple(x for x in _group if x != _w)
_FILLERS = ("really", "just", "actually", "basically", "honestly", "definitely", "well", "perhaps")
_STOPWORDS = frozenset({"the", "a", "an", "very", "just", "really", "so", "that", "some"})
_CLAUSE_SEPARATORS = (". ", "! ", "? ", ", ", "; ", " and ", " but ", " or ", " because ")
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_EDGE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


def default_normalize(text: str) -> str:
    """NFKC, casefold, whitespace runs collapsed to one space, ends stripped (exact-duplicate rule)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


# ---------------------------------------------------------------------- edits
def case_whitespace_variant(text: str, rng: random.Random) -> str:
    """A verbatim copy whose ASCII letter case and whitespace may differ (same text after normalisation).

    One of: unchanged, all ASCII letters upper-cased, all lower-cased, first letter's case
    flipped, a doubled space, surrounding whitespace added.
    """
    kind = rng.randrange(6)
    ascii_map = str.maketrans(_LOWER, _LOWER.upper())
    if kind == 1:
        return text.translate(ascii_map)
    if kind == 2:
        return text.translate(str.maketrans(_LOWER.upper(), _LOWER))
    if kind == 3 and text and text[0].isascii() and text[0].isalpha():
        return text[0].swapcase() + text[1:]
    if kind == 4 and " " in text:
        i = rng.choice([k for k, c in enumerate(text) if c == " "])
        return text[:i] + "  " + text[i + 1:]
    if kind == 5:
        return " " + text + "\n"
    return text


def typo_edit(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    """Apply ``max(1, round(rate * len(text)))`` character edits at letters.

    Each edit is one of insert (a random lower-case letter after a letter), delete,
    substitute (a different letter of the same case) or transpose (with the next character,
    when it differs). Returns ``(edited_text, number_of_edits)``; the Damerau-Levenshtein
    distance to ``text`` is at most the number of edits and, when ``text`` has a letter, at least 1
    (if the edits happen to cancel out they are redrawn). A text without letters comes back unchanged.
    """
    k = max(1, round(rate * len(text)))
    if not any(c.isalpha() for c in text):
        return text, 0
    for _attempt in range(10):  # edits can cancel (a transpose undone by another): retry until text changes
        new, done = _typo_once(text, k, rng)
        if new != text:
            return new, done
    return new, done


def _typo_once(text: str, k: int, rng: random.Random) -> tuple[str, int]:
    chars = list(text)
    done = 0
    for _ in range(k):
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        if not letters:
            break
        i = rng.choice(letters)
        op = rng.randrange(4)
        if op == 3 and i + 1 < len(chars) and chars[i + 1] != chars[i]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == 0:
            chars.insert(i + 1, rng.choice(_LOWER))
        elif op == 1 and len(chars) > 1:
            del chars[i]
        else:
            c = chars[i]
            new = rng.choice(_LOWER.replace(c.lower(), ""))
            chars[i] = new.upper() if c.isupper() else new
        done += 1
    return "".join(chars), done


def word_swap_edit(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    """Swap ``max(1, round(rate * words))`` pairs of adjacent, distinct words at non-overlapping positions.

    Words are whitespace-separated tokens (re-joined with single spaces). Returns
    ``(edited_text, number_of_swaps)``; zero swaps when no two adjacent words differ.
    """
    words = text.split()
    positions = [i for i in range(len(words) - 1) if words[i].casefold() != words[i + 1].casefold()]
    rng.shuffle(positions)
    k = max(1, round(rate * len(words)))
    used: set[int] = set()
    done = 0
    for i in positions:
        if done == k:
            break
        if i in used or i + 1 in used:
            continue
        words[i], words[i + 1] = words[i + 1], words[i]
        used.update((i, i + 1))
        done += 1
    return " ".join(words), done


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _clause_swap(text: str, rng: random.Random) -> str | None:
    """Swap the two sides of one separator near the middle of ``text`` (None when there is none)."""
    n = len(text)
    cuts = [(m.start(), sep) for sep in _CLAUSE_SEPARATORS for m in re.finditer(re.escape(sep), text)
            if 0.2 * n <= m.start() <= 0.8 * n]
    if not cuts:
        return None
    pos, sep = rng.choice(cuts)
    left, right = text[:pos], text[pos + len(sep):]
    if sep.strip() in ".!?":  # sentences: "A. B" -> "B A." (each keeps its own end mark)
        left = left + sep.strip()
        return f"{right.strip()} {left.strip()}"
    left = left.rstrip(" ,;")
    tail = re.search(r"[.!?]+\s*$", right)
    end = tail.group(0).strip() if tail else ""
    right = right[:tail.start()] if tail else right
    return f"{right.strip()}{sep}{left.strip()}{end}"


def paraphrase_edit(text: str, rate: float, rng: random.Random, *, filler_prob: float = 0.5,
                    drop_prob: float = 0.5, reorder_prob: float = 0.5) -> tuple[str, int]:
    """An edit-based paraphrase-like rewrite (not a neural paraphraser).

    Steps: replace each word found in :data:`SYNONYMS` by another member of its group with
    probability ``rate`` (case kept, surrounding punctuation kept); with ``drop_prob`` drop
    one stop word; with ``filler_prob`` insert a filler word ("really", "just", ...); with
    ``reorder_prob`` swap two clauses around a sentence break, comma or conjunction near the
    middle. When nothing changed, a filler is inserted. Returns ``(edited_text, edits)``.
    """
    words = text.split()
    edits = 0
    for i, tok in enumerate(words):
        pre, core, post = _EDGE.match(tok).groups()  # type: ignore[union-attr]
        alts = _SYNONYM_OF.get(core.casefold())
        if alts and rng.random() < rate:
            words[i] = pre + _match_case(rng.choice(alts), core) + post
            edits += 1
    if rng.random() < drop_prob:
        drops = [i for i, tok in enumerate(words) if tok.casefold() in _STOPWORDS]
        if drops and len(words) > 3:
            del words[rng.choice(drops)]
            edits += 1
    if rng.random() < filler_prob or edits == 0:
        words.insert(rng.randrange(1, len(words) + 1) if words else 0, rng.choice(_FILLERS))
        edits += 1
    out = " ".join(words)
    if rng.random() < reorder_prob:
        swapped = _clause_swap(out, rng)
        if swapped is not None and swapped != out:
            out, edits = swapped, edits + 1
    return out, edits


# ---------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class EditRates:
    """Edit strengths and placement of planted copies.

    Attributes:
        typo_rate: character edits per character for ``typo`` (and half of ``cross_client``) copies.
        swap_rate: adjacent word swaps per word for ``word_swap`` copies.
        paraphrase_rate: probability that a word of :data:`SYNONYMS` is replaced in a ``paraphrase``.
        filler_prob, drop_prob, reorder_prob: see :func:`paraphrase_edit`.
        min_source_chars: a source's normalised text has at least this many characters...
        min_source_words: ...and at least this many words.
        same_client_prob: probability that a non-``cross_client`` copy stays on its source's client.
    """

    typo_rate: float = 0.01
    swap_rate: float = 0.04
    paraphrase_rate: float = 0.7
    filler_prob: float = 0.5
    drop_prob: float = 0.5
    reorder_prob: float = 0.5
    min_source_chars: int = 60
    min_source_words: int = 6
    same_client_prob: float = 0.5

    def __post_init__(self) -> None:
        for name in ("typo_rate", "swap_rate", "paraphrase_rate", "filler_prob", "drop_prob", "reorder_prob",
                     "same_client_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"EditRates.{name} must be in [0, 1], got {v!r}")
        if self.min_source_chars < 0 or self.min_source_words < 1:
            raise ValueError(f"EditRates.min_source_chars must be >= 0 and min_source_words >= 1, got "
                             f"{self.min_source_chars}, {self.min_source_words}")


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


def labels_from_edges(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` records given undirected edges ``(a[k], b[k])``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)


def labels_from_clusters(n: int, clusters: Iterable[Sequence[int]]) -> np.ndarray:
    """Labels for ``n`` records from clusters of global ids; records in no cluster get their own label."""
    a, b = [], []
    for members in clusters:
        m = np.asarray(members, dtype=np.int64)
        if len(m) > 1:
            a.append(np.full(len(m) - 1, m[0]))
            b.append(m[1:])
    if not a:
        return np.arange(n, dtype=np.int64)
    return labels_from_edges(n, np.concatenate(a), np.concatenate(b))


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
    cluster = labels_from_edges(n, np.flatnonzero(has), source[has])
    meta = dict(meta, counts={str(k): int(v) for k, v in zip(*np.unique(dup_type.astype(str), return_counts=True))})
    return PlantedCorpus(texts=texts, client_id=client, source_id=source, dup_type=dup_type, edits=edits,
                         cross_client=cross, cluster=cluster, meta=meta)


def plant_duplicates(texts: Sequence[str], *, counts: Mapping[str, int] | None = None, rate: float | None = None,
                     mix: Mapping[str, float] | None = None, n_clients: int = 8,
                     client_of: Sequence[int] | np.ndarray | None = None, seed: int = 0,
                     rates: EditRates | None = None, normalize: Callable[[str], str] = default_normalize,
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
                     normalize: Callable[[str], str] = default_normalize,
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


# ---------------------------------------------------------------------- scoring
def shingle_jaccard(a: set[str], b: set[str]) -> float:
    """Jaccard index of two shingle sets (1.0 for two empty sets)."""
    return len(a & b) / len(a | b) if (a or b) else 1.0


def adjudicate_pairs(texts: Sequence[str], a: np.ndarray, b: np.ndarray, shingles: Callable[[str], set[str]],
                     threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """True shingle Jaccard of record pairs and whether it reaches ``threshold``.

    Used to decide whether a predicted pair that the planted ground truth does not contain is
    a genuine near-duplicate (already in the real data) rather than a false positive.

    Returns:
        ``(jaccard float64 [m], genuine bool [m])``.
    """
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    cache: dict[int, set[str]] = {}

    def sh(i: int) -> set[str]:
        s = cache.get(i)
        if s is None:
            s = cache[i] = shingles(texts[i])
        return s

    jac = np.fromiter((shingle_jaccard(sh(int(i)), sh(int(j))) for i, j in zip(a, b)), dtype=np.float64,
                      count=len(a))
    return jac, jac >= threshold - 1e-12


def _pair_count(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x * (x - 1) / 2


def score_dedup(corpus: PlantedCorpus, pred_labels: np.ndarray, *,
                extra_true_edges: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Score predicted clusters against the ground truth, per duplicate type and overall.

    Ground truth: clusters are the connected components of the source links (planted copy ->
    source, natural exact duplicate -> first occurrence) plus ``extra_true_edges`` (pairs
    adjudicated as genuine near-duplicates, e.g. by :func:`adjudicate_pairs`).

    Definitions (``P(r)``: the predicted cluster of record ``r``, ``G(r)``: its true cluster):

    * **recall of type T**: fraction of records of type T (each is a copy) with ``P(r) = P(source(r))``;
    * **precision of type T**: over records r of type T, ``sum |P(r) ∩ G(r)| - 1`` divided by
      ``sum |P(r)| - 1``: of the pairs (r, s) the detector puts together, the fraction that are
      true duplicates (1.0 when the detector pairs no record of type T);
    * **pairwise** precision / recall / F1 over all unordered record pairs: a pair is predicted
      when both are in one predicted cluster, true when both are in one true cluster.

    Args:
        corpus: the corpus with ground truth.
        pred_labels: int ``[n]`` predicted cluster label per global record id (singletons unique).

    Returns:
        ``{"per_type": {type: {...}}, "pairwise": {...}, "ground_truth": {...}}``.
    """
    n = len(corpus)
    pred = np.asarray(pred_labels, dtype=np.int64)
    if pred.shape != (n,):
        raise ValueError(f"pred_labels must have shape ({n},), got {pred.shape}")
    la, lb = corpus.true_pairs()
    if extra_true_edges is not None:
        la = np.concatenate([la, np.asarray(extra_true_edges[0], dtype=np.int64)])
        lb = np.concatenate([lb, np.asarray(extra_true_edges[1], dtype=np.int64)])
    gt = labels_from_edges(n, la, lb)
    _, pred = np.unique(pred, return_inverse=True)
    size_p = np.bincount(pred)
    size_g = np.bincount(gt)
    joint_key = pred * (int(gt.max()) + 1) + gt
    uniq, joint_inv, joint_cnt = np.unique(joint_key, return_inverse=True, return_counts=True)
    joint = joint_cnt[joint_inv]
    pp = size_p[pred] - 1  # predicted partners of each record
    tp = joint - 1  # correctly predicted partners
    per_type: dict[str, dict[str, Any]] = {}
    for kind in (NATURAL_EXACT, *DUP_TYPES, ORIGINAL):
        sel = np.flatnonzero(corpus.dup_type == kind)
        if not sel.size:
            continue
        row: dict[str, Any] = {"records": int(sel.size)}
        if kind != ORIGINAL:
            src = corpus.source_id[sel]
            hit = pred[sel] == pred[src]
            row["recall"] = float(hit.mean())
            row["missed"] = int((~hit).sum())
            cross = corpus.cross_client[sel]
            if cross.any() and (~cross).any():
                row["recall_cross_client"] = float(hit[cross].mean())
                row["recall_same_client"] = float(hit[~cross].mean())
        npp, ntp = float(pp[sel].sum()), float(tp[sel].sum())
        row["precision"] = ntp / npp if npp else 1.0
        row["predicted_partners"] = int(npp)
        row["false_partners"] = int(npp - ntp)
        per_type[kind] = row
    tp_pairs = float(_pair_count(joint_cnt).sum())
    pred_pairs = float(_pair_count(size_p).sum())
    true_pairs = float(_pair_count(size_g).sum())
    precision = tp_pairs / pred_pairs if pred_pairs else 1.0
    recall = tp_pairs / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "per_type": per_type,
        "pairwise": {"precision": precision, "recall": recall, "f1": f1, "true_positive_pairs": int(tp_pairs),
                     "predicted_pairs": int(pred_pairs), "true_pairs": int(true_pairs)},
        "ground_truth": {"links": int(len(corpus.true_pairs()[0])),
                         "adjudicated_edges": 0 if extra_true_edges is None else int(len(extra_true_edges[0])),
                         "clusters": int((size_g > 1).sum()), "records_in_clusters": int(size_g[size_g > 1].sum())},
        "predicted": {"clusters": int((size_p > 1).sum()), "records_in_clusters": int(size_p[size_p > 1].sum())},
    }
