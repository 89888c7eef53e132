"""Longest common substring (LCS) between synthetic and reference texts, with a k-gram index.

Criterion (Carlini et al. 2021, "Extracting Training Data from Large Language Models",
USENIX Security: a generated sample is a verbatim copy when it shares a long exact
substring with a training document): a synthetic record *copies* a reference when their
longest common substring has at least ``N`` characters (default 50), measured on
:func:`~trustfl.text.normalize_for_matching` output (case, Unicode form, spacing and
token-edge punctuation folded) unless ``normalize=False``.

Efficient candidates, no all-pairs scan: every character ``N``-gram window of every
reference is hashed (keyed 64-bit ids from :class:`~trustfl.text.KeyedMinHash`,
computed vectorised over the whole corpus) into one sorted array. Two texts have a common
substring of length >= N iff they share an N-gram, so the candidates of a synthetic record
are the references holding one of its N-gram ids (``np.searchsorted``), and the index has no
false negatives. Only candidates get the exact ``O(|a| |b|)`` dynamic programme
(:func:`longest_common_substring`), which also rules out 2^-64 hash collisions and gives the
exact length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trustfl.audits.origin.errors import OriginError
from trustfl.text import KeyedMinHash, TextKey, normalize_for_matching

__all__ = ["LcsMatch", "NgramIndex", "longest_common_substring"]


def longest_common_substring(a: str, b: str) -> tuple[int, int, int]:
    """Length and start positions of a longest common substring of ``a`` and ``b``.

    The classic dynamic programme ``L[i][j] = L[i-1][j-1] + 1 if a[i] == b[j] else 0``
    (Gusfield 1997, Sec. 7.4 discusses the linear-time suffix-tree method; the DP suffices
    for candidate pairs of short records), one numpy row per character of ``a``.

    Returns:
        ``(length, start_in_a, start_in_b)``; ``(0, 0, 0)`` when nothing is shared.
        Ties go to the earliest end position in ``a``, then in ``b``.

    Example:
        >>> longest_common_substring("xxhello world", "hello there")
        (6, 2, 0)
    """
    if not a or not b:
        return 0, 0, 0
    bv = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    prev = np.zeros(len(bv) + 1, dtype=np.int32)
    cur = np.zeros_like(prev)
    best, end_a, end_b = 0, 0, 0
    for i, ch in enumerate(a):
        eq = bv == ord(ch)
        cur[1:] = np.where(eq, prev[:-1] + 1, 0)
        j = int(cur.argmax())
        if cur[j] > best:
            best, end_a, end_b = int(cur[j]), i + 1, j
        prev, cur = cur, prev
    return best, end_a - best, end_b - best


@dataclass(frozen=True)
class LcsMatch:
    """The longest verified common substring of one synthetic record with its best reference.

    Attributes:
        query: index of the synthetic record.
        reference: index of the reference record (in the indexed corpus).
        length: LCS length in characters (of the compared, by default normalised, texts).
        query_start, reference_start: where the substring starts in each compared text.
        candidates: how many references shared at least one N-gram id with the query.
    """

    query: int
    reference: int
    length: int
    query_start: int
    reference_start: int
    candidates: int


class NgramIndex:
    """Sorted keyed ids of every character ``min_chars``-gram of the reference texts.

    Args:
        references: the reference texts.
        min_chars: ``N``, the LCS threshold in characters (>= 8).
        key: the :class:`TextKey` that keys the N-gram ids (a fresh random key if ``None``;
            ids are only compared within one index, so any key works).
        normalize: compare :func:`normalize_for_matching` forms (default) or the raw texts.
        max_verify: per query, verify at most this many candidates (those sharing the most
            N-grams first) after the first verified one; the flag is exact either way, the
            reported nearest reference is the best of the verified ones.

    Memory: 16 bytes per reference character (an id and a record number per window).

    Example:
        >>> idx = NgramIndex(["the quick brown fox jumps over the lazy dog today"], min_chars=20)
        >>> m = idx.query(["a fox: The quick brown fox jumps over it"])[0]
        >>> (m.reference, m.length)
        (0, 31)
    """

    def __init__(self, references: Sequence[str], *, min_chars: int = 50, key: TextKey | None = None,
                 normalize: bool = True, max_verify: int = 32) -> None:
        if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 8:
            raise OriginError(f"min_chars (--lcs-chars) must be an integer >= 8, got {min_chars!r}; a shorter "
                              "common substring is no evidence of copying")
        if not isinstance(max_verify, int) or max_verify < 1:
            raise OriginError(f"max_verify must be an integer >= 1, got {max_verify!r}")
        self.min_chars, self.normalize, self.max_verify = min_chars, normalize, max_verify
        self._hasher = KeyedMinHash(key or TextKey.generate(), num_perm=8, shingle="char", ngram=min_chars)
        self.texts = [self.prepare(t) for t in references]
        ids, owner = self._windows(self.texts)
        order = np.argsort(ids, kind="stable")
        self._ids, self._owner = ids[order], owner[order]

    def prepare(self, text: str) -> str:
        """``text`` as the index compares it (normalised unless ``normalize=False``); LCS positions refer to it."""
        return normalize_for_matching(text) if self.normalize else text

    def _windows(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of all N-gram windows of the texts that have one, and the record of each window."""
        if not texts:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
        ids, counts = self._hasher.shingle_ids(texts, normalized=True)  # texts are already prepared
        owner = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
        long_enough = np.repeat(np.fromiter((len(t) >= self.min_chars for t in texts), bool, len(texts)), counts)
        return ids[long_enough], owner[long_enough]

    def __len__(self) -> int:
        return len(self.texts)

    def candidates(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """References sharing an N-gram id with ``text`` (prepared), and how many distinct ids each shares."""
        if len(text) < self.min_chars or len(self._ids) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        q, _ = self._windows([text])
        q = np.unique(q)
        lo = np.searchsorted(self._ids, q, side="left")
        hi = np.searchsorted(self._ids, q, side="right")
        hit = hi > lo
        if not hit.any():
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        owners = np.concatenate([np.unique(self._owner[a:b]) for a, b in zip(lo[hit], hi[hit])])
        refs, shared = np.unique(owners, return_counts=True)
        order = np.lexsort((refs, -shared))
        return refs[order], shared[order]

    def query(self, texts: Sequence[str]) -> list[LcsMatch | None]:
        """For each text: its longest verified common substring (>= ``min_chars``) with a reference, or ``None``."""
        out: list[LcsMatch | None] = []
        for qi, raw in enumerate(texts):
            t = self.prepare(raw)
            refs, _ = self.candidates(t)
            best: LcsMatch | None = None
            verified = 0
            for r in refs:
                length, sa, sb = longest_common_substring(t, self.texts[int(r)])
                if length < self.min_chars:
                    continue  # a 64-bit hash collision: not a real shared N-gram
                verified += 1
                if best is None or length > best.length:
                    best = LcsMatch(qi, int(r), length, sa, sb, len(refs))
                if verified >= self.max_verify:
                    break
            out.append(best)
        return out
