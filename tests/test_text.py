"""trustfl.text: the one home of the text primitives shared by dedup and origin checks."""

from __future__ import annotations

import subprocess
import sys
import unicodedata

import pytest

import trustfl.text as text
from trustfl.data import fingerprint_records
from trustfl.text import normalize_for_fingerprint, normalize_for_matching


def test_public_api_is_sorted_and_importable():
    namespace: dict = {}
    exec("from trustfl.text import *", namespace)
    assert set(text.__all__) <= set(namespace) and text.__all__ == sorted(text.__all__)


def test_importing_trustfl_text_loads_no_optional_or_plugin_module():
    """FAISS (optional) and torch are imported inside functions; a core package imports no plug-in."""
    code = ("import sys, trustfl.text; bad = [m for m in sys.modules if m.split('.')[0] in ('faiss', 'torch') "
            "or m.startswith(('trustfl.defenses', 'trustfl.attacks', 'trustfl.audits', 'trustfl.cli'))]; "
            "print(','.join(sorted(bad)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------- one normaliser per purpose
@pytest.mark.parametrize("raw, matching, fingerprint", [
    ("  Hello,  WORLD!! :)", "hello world", "Hello, WORLD!! :)"),     # case, edge punctuation: matching only
    ("ＦＵＬＬ width", "full width", "ＦＵＬＬ width"),                    # NFKC vs NFC
    ("Straße", "strasse", "Straße"),                                  # casefold: matching only
    ("cafe\u0301\t au\n lait", "caf\u00e9 au lait", "caf\u00e9 au lait"),  # both compose and collapse spaces
    ("don't stop 3.5", "don't stop 3.5", "don't stop 3.5"),
    ("...", "", "..."),
])
def test_matching_and_fingerprint_normalisers_differ_by_purpose(raw, matching, fingerprint):
    assert normalize_for_matching(raw) == matching
    assert normalize_for_fingerprint(raw) == fingerprint
    assert unicodedata.is_normalized("NFC", normalize_for_fingerprint(raw))


def test_fingerprint_uses_the_fingerprint_normaliser_and_keys_use_the_matching_one():
    # re-saving (NFD, other whitespace) keeps the fingerprint; case and punctuation are content
    assert fingerprint_records(["cafe\u0301  au lait"]) == fingerprint_records(["caf\u00e9 au lait"])
    assert fingerprint_records(["Hello, World!"]) != fingerprint_records(["hello world"])
    key = text.TextKey(b"k" * 32)
    codes = text.exact_codes(["Hello, World!", "hello world"], key)
    assert (codes[0] == codes[1]).all()  # same text for matching


def test_normalisers_refuse_non_str():
    for fn in (normalize_for_matching, normalize_for_fingerprint):
        with pytest.raises(TypeError, match=f"{fn.__name__} expects str"):
            fn(None)  # type: ignore[arg-type]


def test_old_ambiguous_normalize_text_names_are_gone():
    import trustfl.data
    import trustfl.data.fingerprint
    import trustfl.defenses.dedup

    for mod in (trustfl.data, trustfl.data.fingerprint, trustfl.defenses.dedup):
        assert not hasattr(mod, "normalize_text"), mod.__name__


# ---------------------------------------------------------------------- shingles, keys, nearest cosine
def test_shingles_are_what_keyed_minhash_summarises():
    mh = text.KeyedMinHash(text.TextKey(b"k" * 32), num_perm=16, shingle="word", ngram=2)
    assert mh.shingles("The cat, the HAT!") == text.shingle_set("The cat, the HAT!", "word", 2) == \
        {"the cat", "cat the", "the hat"}
    assert text.shingle_list("ab", "char", 5) == ["ab"] and text.shingle_list("", "word", 2) == [""]
    assert text.jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3) and text.jaccard(set(), set()) == 1.0
    with pytest.raises(text.TextError, match="'char' or 'word'"):
        text.shingle_list("x", "byte", 2)  # type: ignore[arg-type]


def test_dedup_key_is_the_text_key_and_run_keys_are_stable():
    from trustfl.defenses.dedup import DedupKey, DedupError, key_for_run

    assert DedupKey is text.TextKey and key_for_run is text.key_for_run
    assert issubclass(DedupError, text.TextError)
    # codes are a function of the key: the derivation labels must not change
    assert text.key_for_run(None, 7).key_id == text.key_for_run(None, 7).key_id != text.key_for_run(None, 8).key_id
    assert text.key_for_run(None, 7, purpose="origin") != text.key_for_run(None, 7)


def test_nearest_cosine_errors_are_text_errors():
    import numpy as np

    pytest.importorskip("faiss")
    idx, cos = text.nearest_cosine(np.array([[1.0, 0.1]]), np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert idx.tolist() == [1] and cos[0] == pytest.approx(0.995, abs=1e-3)
    with pytest.raises(text.TextError, match="dimension"):
        text.nearest_cosine(np.zeros((1, 3)), np.zeros((2, 2)))
