"""What the server sees does not reveal the text: codes match only for near-duplicates,
codes under different keys are unrelated, and the server view holds no text or embedding."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from trustfl.defenses.dedup import (ClientCodes, DedupKey, KeyedMinHash, ServerView, SimHasher, deduplicate,
                                    exact_codes, hamming, minhash_jaccard)

KEY_A = DedupKey(b"client-shared-key-A-0123456789")
KEY_B = DedupKey(b"client-shared-key-B-0123456789")
TEXTS = [
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005!",  # near-duplicate of 0
    "Nah I don't think he goes to usf, he lives around here though",
    "Even my brother is not like to speak with me. They treat me like aids patent",
    "Ok lar... Joking wif u oni...",
]


def test_minhash_slots_match_only_for_near_duplicates():
    sig = KeyedMinHash(KEY_A).signatures(TEXTS)
    agree = (sig[:, None, :] == sig[None, :, :]).mean(-1)
    assert agree[0, 1] > 0.8
    off = agree[np.triu_indices(len(TEXTS), 1)]
    assert (np.sort(off)[:-1] < 0.15).all()  # every other pair: (near) no slot in common


def test_codes_under_different_keys_are_unrelated():
    k = 256
    a, b = KeyedMinHash(KEY_A, num_perm=k).signatures(TEXTS), KeyedMinHash(KEY_B, num_perm=k).signatures(TEXTS)
    # same text, different keys: slot agreement at chance level (2^-32 per slot)
    assert minhash_jaccard(a, b).max() == 0.0
    ea, eb = exact_codes(TEXTS, KEY_A), exact_codes(TEXTS, KEY_B)
    assert not (ea == eb).all(axis=1).any()
    bit_agree = np.unpackbits(ea ^ eb, axis=1).mean()  # ~1/2 of the bits differ, as for random strings
    assert abs(bit_agree - 0.5) < 0.05
    rng = np.random.default_rng(0)
    e = rng.standard_normal((500, 384)).astype(np.float32)
    bits = 256
    h = hamming(SimHasher(KEY_A, bits=bits).codes(e), SimHasher(KEY_B, bits=bits).codes(e))
    # the same embedding under two keys: Binomial(bits, 1/2) distances (mean bits/2, sd sqrt(bits)/2)
    assert abs(h.mean() - bits / 2) < 4 * (math.sqrt(bits) / 2) / math.sqrt(len(h))
    assert h.min() > bits / 2 - 6 * math.sqrt(bits) / 2


def test_server_cannot_recompute_codes_without_the_key():
    """A dictionary attack with a guessed key fails: the guessed text's codes do not match."""
    sent = exact_codes(TEXTS[:1], KEY_A)
    guess = exact_codes(TEXTS[:1], DedupKey(b"\x00" * 32))
    assert not (sent == guess).all()
    sig = KeyedMinHash(KEY_A).signatures(TEXTS[:1])
    assert minhash_jaccard(sig, KeyedMinHash(DedupKey(b"\x00" * 32)).signatures(TEXTS[:1]))[0] == 0.0


def _walk(obj, seen=None):
    """Every leaf value reachable from obj (dataclass fields, dicts, lists, tuples)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _walk(getattr(obj, f.name), seen)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _walk(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk(v, seen)
    else:
        yield obj


def test_server_view_holds_codes_only_no_text_no_embeddings():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((len(TEXTS), 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    r = deduplicate({0: TEXTS[:3], 1: TEXTS[3:]}, KEY_A, methods=["exact", "lexical", "semantic"],
                    embeddings={0: emb[:3], 1: emb[3:]})
    view = r.server_view
    assert isinstance(view, ServerView) and all(isinstance(c, ClientCodes) for c in view.codes)
    leaves = list(_walk(view))
    words = {w.lower() for t in TEXTS for w in t.split() if len(w) > 3}
    for leaf in leaves:
        if isinstance(leaf, str):
            assert leaf.lower() not in words and all(leaf not in t for t in TEXTS if len(leaf) > 3)
        if isinstance(leaf, np.ndarray):
            assert leaf.dtype in (np.uint8, np.uint32), f"server got a {leaf.dtype} array"  # codes, no floats
            raw = leaf.tobytes()
            for t in TEXTS:
                assert t.encode() not in raw and t.lower().encode() not in raw
            assert emb.tobytes()[:64] not in raw
    # the report written for the server holds ids and scores only
    doc = str(r.to_json())
    assert not any(t.lower()[:20] in doc.lower() for t in TEXTS)


@pytest.mark.parametrize("method", ["exact", "lexical"])
def test_non_duplicates_never_share_a_full_code(method):
    other = ["completely different message about lunch", "see you at the station at nine"]
    r = deduplicate({0: TEXTS, 1: other}, KEY_A, methods=[method])
    assert all({p.client_a, p.client_b} == {0} for p in r.pairs)  # no cross-client match
