"""Edits that turn a source text into a planted near-duplicate (ground truth of the dedup benchmark).

* :func:`case_whitespace_variant` — ``exact`` copies: ASCII letter case and whitespace differ;
* :func:`typo_edit` — ``typo`` copies: character edits at letters;
* :func:`word_swap_edit` — ``word_swap`` copies: swaps of adjacent distinct words;
* :func:`paraphrase_edit` — ``paraphrase`` copies: synonym substitution (:data:`SYNONYMS`),
  filler insertion, stop-word dropping, clause reordering (edit-based, not a neural paraphraser);
* :class:`EditRates` — the strengths of all of these and where copies are placed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

__all__ = ["SYNONYMS", "EditRates", "case_whitespace_variant", "paraphrase_edit", "typo_edit", "word_swap_edit"]

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

