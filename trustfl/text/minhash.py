"""Keyed MinHash signatures of shingle sets (Broder 1997), vectorised with numpy.

Pipeline for a batch of texts (no per-shingle Python):

1. normalise (:func:`~trustfl.text.normalize.normalize_for_matching`) and cut into shingles
   (:mod:`trustfl.text.shingles`):
   character ``ngram``-grams (default 5) or word ``ngram``-grams; a text shorter than one
   shingle is a single shingle (the whole text);
2. **keyed shingle id** ``x`` (32 bits): a polynomial of the shingle's code points (or
   word hashes) with secret odd 64-bit multipliers, XOR a secret seed, then the splitmix64
   finaliser; the top 32 bits are kept. For word shingles each distinct word is first
   hashed with keyed BLAKE2b;
3. ``num_perm`` keyed **multiply-add-shift** hashes ``h_k(x) = ((a_k x + b_k) mod 2^64) >> 32``
   with secret 64-bit ``a_k`` (odd), ``b_k`` (Dietzfelbinger 1996: strongly universal on 32-bit
   keys); slot ``k`` of a signature is ``min`` over the record's shingles (``np.minimum.reduceat``).

Why this is still keyed although step 2 is not a cryptographic PRF: every constant of steps 2
and 3 comes from the secret key. The server only ever sees the per-slot minima, never a
shingle id, and without the key it cannot compute the signature of a guessed text; signatures
under two keys agree on a slot with probability ~2^-32 (tests/test_dedup_privacy.py). A
cryptographic per-shingle PRF (keyed BLAKE2b) is available with ``shingle_hash="blake2b"``
at ~5-10x the cost.

The estimator: ``P[sig_a[k] == sig_b[k]] = J(A, B)`` (up to 2^-32 collisions), so the fraction
of equal slots estimates the Jaccard index with standard deviation ``sqrt(J(1-J)/num_perm)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import numpy as np

from trustfl.text.errors import TextError
from trustfl.text.keys import TextKey
from trustfl.text.normalize import normalize_for_matching
from trustfl.text.shingles import jaccard, shingle_list, shingle_set

__all__ = ["KeyedMinHash", "jaccard_pairs", "minhash_jaccard", "unique_per_record"]

_SENTINEL = np.uint64(0x110000)  # beyond the last Unicode code point: pads texts shorter than one shingle
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (Steele et al. 2014), in place on a uint64 array."""
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return h


def minhash_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard index = fraction of equal slots (Broder 1997).

    Args:
        sig_a, sig_b: ``[k]`` or ``[m, k]`` signatures (broadcast against each other).

    Returns:
        float64 array of shape ``[]`` or ``[m]``.

    Example:
        >>> float(minhash_jaccard(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])))
        0.75
    """
    a, b = np.asarray(sig_a), np.asarray(sig_b)
    if a.shape[-1] != b.shape[-1]:
        raise TextError(f"signatures have different num_perm: {a.shape[-1]} vs {b.shape[-1]}")
    return (a == b).mean(axis=-1)


def unique_per_record(ids: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ids of each record (the shingle *set*), and the new counts."""
    counts = np.asarray(counts, dtype=np.int64)
    rec = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    order = np.lexsort((ids, rec))
    ids, rec = ids[order], rec[order]
    new = np.ones(len(ids), dtype=bool)
    new[1:] = (ids[1:] != ids[:-1]) | (rec[1:] != rec[:-1])
    return ids[new], np.bincount(rec[new], minlength=len(counts)).astype(np.int64)


def _gather(ids: np.ndarray, starts: np.ndarray, counts: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the segments ``rows`` of a ragged array; also return the segment number of each element."""
    c = counts[rows]
    seg = np.repeat(np.arange(len(rows), dtype=np.int64), c)
    pos = np.repeat(starts[rows] - (np.cumsum(c) - c), c) + np.arange(int(c.sum()), dtype=np.int64)
    return ids[pos], seg


def jaccard_pairs(ids: np.ndarray, counts: np.ndarray, i: np.ndarray, j: np.ndarray,
                  chunk: int = 100_000) -> np.ndarray:
    """Exact Jaccard of shingle-id *sets* for record pairs ``(i[k], j[k])``, vectorised.

    Ids are first replaced by their dense rank (exact: equal ids <-> equal ranks), so a pair's
    elements sort as one uint64 key ``pair << 32 | rank``; equal neighbours are the intersection.

    Args:
        ids, counts: per-record distinct ids back to back (:func:`unique_per_record`).

    Returns:
        float64 ``[len(i)]``; two empty sets have Jaccard 1.
    """
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.zeros(len(counts), dtype=np.int64)
    starts[1:] = np.cumsum(counts)[:-1]
    _, rank = np.unique(ids, return_inverse=True)
    if len(rank) and rank.max() >= 2**32:
        raise TextError("more than 2^32 distinct shingles in one confirmation batch; confirm in smaller batches")
    rank = rank.astype(np.uint64)
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    out = np.empty(len(i), dtype=np.float64)
    for lo in range(0, len(i), chunk):
        pi, pj = i[lo:lo + chunk], j[lo:lo + chunk]
        va, sa = _gather(rank, starts, counts, pi)
        vb, sb = _gather(rank, starts, counts, pj)
        keys = np.concatenate([(sa.astype(np.uint64) << np.uint64(32)) | va,
                               (sb.astype(np.uint64) << np.uint64(32)) | vb])
        keys.sort()
        dup = keys[1:] == keys[:-1]  # in both sets (each side is a set)
        inter = np.bincount((keys[1:][dup] >> np.uint64(32)).astype(np.int64), minlength=len(pi)).astype(np.float64)
        union = counts[pi] + counts[pj] - inter
        out[lo:lo + len(pi)] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return out


class KeyedMinHash:
    """Keyed MinHash over character or word n-gram shingles.

    Args:
        key: the shared :class:`~trustfl.text.keys.TextKey`.
        num_perm: signature length ``k`` (slots), >= 8.
        shingle: ``"char"`` (character n-grams of the normalised text) or ``"word"``.
        ngram: shingle length in characters or words, >= 1.
        shingle_hash: ``"fast"`` (vectorised keyed polynomial + splitmix64) or ``"blake2b"``
            (keyed BLAKE2b per distinct shingle; a cryptographic PRF, slower).
        chunk: shingles processed per vectorised step (memory ``chunk * num_perm * 8`` bytes).

    Example:
        >>> mh = KeyedMinHash(TextKey(b"k" * 32), num_perm=64)
        >>> s = mh.signatures(["the quick brown fox", "the quick brown fox!", "lorem ipsum"])
        >>> s.shape, s.dtype.name, float(minhash_jaccard(s[0], s[1]))
        ((3, 64), 'uint32', 1.0)
    """

    def __init__(self, key: TextKey, num_perm: int = 128, shingle: Literal["char", "word"] = "char",
                 ngram: int = 5, *, shingle_hash: Literal["fast", "blake2b"] = "fast", chunk: int = 8192) -> None:
        if not isinstance(key, TextKey):
            raise TextError(f"key must be a TextKey, got {type(key).__name__}")
        if not isinstance(num_perm, int) or num_perm < 8:
            raise TextError(f"num_perm must be an int >= 8, got {num_perm!r}")
        if shingle not in ("char", "word"):
            raise TextError(f"shingle must be 'char' or 'word', got {shingle!r}")
        if not isinstance(ngram, int) or ngram < 1:
            raise TextError(f"ngram must be an int >= 1, got {ngram!r}")
        if shingle_hash not in ("fast", "blake2b"):
            raise TextError(f"shingle_hash must be 'fast' or 'blake2b', got {shingle_hash!r}")
        self.num_perm, self.shingle, self.ngram, self.shingle_hash = num_perm, shingle, ngram, shingle_hash
        self.chunk = max(256, int(chunk))
        self._blake_key = key.derive(f"minhash/{shingle}{ngram}/blake2b")[:32]
        rng = np.random.Generator(np.random.PCG64(key.seed(f"minhash/{shingle}{ngram}/params")))
        self._mult = rng.integers(0, 2**64, size=ngram, dtype=np.uint64) | np.uint64(1)
        self._seed = rng.integers(0, 2**64, dtype=np.uint64)
        perm = np.random.Generator(np.random.PCG64(key.seed(f"minhash/perm/{num_perm}")))
        self._a = perm.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self._b = perm.integers(0, 2**64, size=num_perm, dtype=np.uint64)
        self.key_id = key.key_id

    def __repr__(self) -> str:
        return (f"KeyedMinHash(key={self.key_id}, num_perm={self.num_perm}, shingle={self.shingle!r}, "
                f"ngram={self.ngram}, shingle_hash={self.shingle_hash!r})")

    # ------------------------------------------------------------------ shingles
    def shingles(self, text: str) -> set[str]:
        """The exact shingle set of ``text`` (after normalisation) whose hashes the signature minimises
        (:func:`trustfl.text.shingles.shingle_set` with this hasher's unit and ``ngram``)."""
        return shingle_set(text, self.shingle, self.ngram)  # type: ignore[arg-type]

    def jaccard(self, text_a: str, text_b: str) -> float:
        """True Jaccard index of the two shingle sets (the quantity the signatures estimate)."""
        return jaccard(self.shingles(text_a), self.shingles(text_b))

    # ------------------------------------------------------------------ shingle ids
    def _poly(self, units: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keyed 64-bit ids of all n-gram windows of the concatenated unit sequences, and per-record counts.

        ``units``: uint64 code points (or word hashes) of all records back to back; ``lengths``:
        units per record. Windows never cross a record boundary; a record shorter than ``ngram``
        gives one window padded with a sentinel.
        """
        n = self.ngram
        lengths = lengths.astype(np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        counts = np.maximum(lengths - n + 1, 1)
        # rolling polynomial over the whole concatenation (windows past the end read zeros)
        ext = np.zeros(total + n, dtype=np.uint64)
        ext[:total] = units
        h = ext[:total] * self._mult[0] if total else np.zeros(0, dtype=np.uint64)
        for j in range(1, n):
            h += ext[j:total + j] * self._mult[j]
        long_ = lengths >= n
        starts_parts = []
        if long_.any():
            lc = counts[long_]
            base = np.repeat(offsets[:-1][long_] - np.cumsum(lc) + lc, lc)
            starts_parts.append((np.flatnonzero(long_), base + np.arange(int(lc.sum()), dtype=np.int64)))
        ids = np.empty(int(counts.sum()), dtype=np.uint64)
        rec_start = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(counts, out=rec_start[1:])
        if starts_parts:
            recs, pos = starts_parts[0]
            dest = np.repeat(rec_start[:-1][recs], counts[recs]) + (
                np.arange(len(pos)) - np.repeat(np.cumsum(counts[recs]) - counts[recs], counts[recs]))
            ids[dest] = h[pos]
        short = np.flatnonzero(~long_)
        if short.size:  # pad with the sentinel: [code points..., SENTINEL, ...]
            idx = offsets[:-1][short, None] + np.arange(n)[None, :]
            valid = np.arange(n)[None, :] < lengths[short, None]
            vals = np.where(valid, ext[np.minimum(idx, total + n - 1)], _SENTINEL)
            ids[rec_start[:-1][short]] = (vals * self._mult[None, :]).sum(axis=1, dtype=np.uint64)
        ids ^= self._seed
        return _mix64(ids), counts

    def _blake_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, counts, cache = [], [], {}
        for t in texts:
            sh = shingle_list(t, self.shingle, self.ngram, normalized=True)  # type: ignore[arg-type]
            ids.extend(self._keyed_token_id(s, 8, cache) for s in sh)
            counts.append(len(sh))
        return np.asarray(ids, dtype=np.uint64), np.asarray(counts, dtype=np.int64)

    def _keyed_token_id(self, token: str, size: int, cache: dict[str, int]) -> int:
        """Keyed BLAKE2b of ``token`` as a ``size``-byte integer, memoised in ``cache``."""
        v = cache.get(token)
        if v is None:
            v = cache[token] = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=size,
                                                              key=self._blake_key).digest(), "little")
        return v

    def shingle_ids(self, texts: Sequence[str], *, normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Keyed 64-bit shingle ids of all records back to back (duplicates kept), and counts per record.

        MinHash uses the top 32 bits; :func:`jaccard_pairs` uses all 64 (collisions ~2^-64, so
        the Jaccard it computes is the true shingle-set Jaccard).
        """
        norm = list(texts) if normalized else [normalize_for_matching(t) for t in texts]
        if self.shingle_hash == "blake2b":
            return self._blake_ids(norm)
        if self.shingle == "char":
            joined = "".join(norm)
            units = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
            lengths = np.fromiter((len(t) for t in norm), dtype=np.int64, count=len(norm))
            return self._poly(units, lengths)
        cache: dict[str, int] = {}
        word_ids: list[int] = []
        lengths_l: list[int] = []
        for t in norm:
            words = t.split(" ") if t else []
            word_ids.extend(self._keyed_token_id(w, 7, cache) for w in words)
            lengths_l.append(len(words))
        return self._poly(np.asarray(word_ids, dtype=np.uint64), np.asarray(lengths_l, dtype=np.int64))

    # ------------------------------------------------------------------ signatures
    def signatures(self, texts: Sequence[str], *, normalized: bool = False, batch_size: int = 20_000) -> np.ndarray:
        """MinHash signatures of ``texts``.

        Returns:
            ``[n, num_perm]`` uint32: slot ``k`` is ``min_x ((a_k x + b_k) mod 2^64) >> 32`` over the
            record's keyed shingle ids ``x``.
        """
        if isinstance(texts, str):
            raise TextError("texts must be a sequence of str, got a single str; wrap it in a list")
        n = len(texts)
        out = np.empty((n, self.num_perm), dtype=np.uint32)
        for lo in range(0, n, batch_size):
            ids, counts = self.shingle_ids(texts[lo:lo + batch_size], normalized=normalized)
            out[lo:lo + len(counts)] = self._minhash(ids, counts)
        return out

    def shingle_sets(self, texts: Sequence[str], *, normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per-record sorted distinct 64-bit shingle ids and counts (input of :func:`jaccard_pairs`)."""
        ids, counts = self.shingle_ids(texts, normalized=normalized)
        return unique_per_record(ids, counts)

    def signatures_from_ids(self, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Signatures from precomputed shingle ids (see :meth:`shingle_ids`)."""
        return self._minhash(np.asarray(ids, dtype=np.uint64), np.asarray(counts, dtype=np.int64))

    def _minhash(self, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
        m = len(counts)
        out = np.empty((m, self.num_perm), dtype=np.uint32)
        if m == 0:
            return out
        bounds = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        a, b = self._a[:, None], self._b[:, None]
        x = ids >> np.uint64(32)  # 32-bit keys for multiply-add-shift
        buf = np.empty((self.num_perm, self.chunk), dtype=np.uint64)
        r = 0
        while r < m:  # records [r, r2) with about `chunk` shingles (at least one record)
            r2 = int(np.searchsorted(bounds, bounds[r] + self.chunk, side="right")) - 1
            r2 = max(r2, r + 1)
            s0, s1 = int(bounds[r]), int(bounds[r2])
            width = s1 - s0
            v = buf[:, :width] if width <= self.chunk else np.empty((self.num_perm, width), dtype=np.uint64)
            np.multiply(a, x[None, s0:s1], out=v)
            v += b
            mins = np.minimum.reduceat(v, bounds[r:r2] - s0, axis=1)
            out[r:r2] = (mins >> np.uint64(32)).T
            r = r2
        return out
