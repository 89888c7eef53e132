"""Text primitives shared by near-duplicate detection (``trustfl.defenses.dedup``) and the
synthetic-data origin checks (``trustfl.audits.origin``): one public home, one job per module.

=================  =====================================================================
``normalize``      :func:`normalize_for_matching` (keyed codes, shingles, copy checks) and
                   :func:`normalize_for_fingerprint` (dataset content fingerprints)
``shingles``       character / word n-gram shingles and set Jaccard
``keys``           :class:`TextKey`, the secret of every keyed code; :func:`key_for_run`
``exact``          keyed HMAC codes of normalised text (:func:`exact_codes`)
``minhash``        :class:`KeyedMinHash` signatures (Broder 1997), exact pairwise Jaccard
``simhash``        :class:`SimHasher` codes of embeddings under a secret rotation (Charikar 2002)
``index``          FAISS helpers (imported lazily; FAISS is optional): LSH-banded MinHash
                   pairs, Hamming range pairs, equal-code pairs, nearest cosine
``embed``          MiniLM sentence embeddings (:func:`embed_texts`; torch imported lazily)
=================  =====================================================================

Errors are :class:`TextError` (a ``ValueError``), except that the normalisers raise
``TypeError`` for non-``str`` input.
"""

from trustfl.text.embed import embed_texts, load_embedder
from trustfl.text.errors import TextError
from trustfl.text.exact import EXACT_BYTES, exact_codes
from trustfl.text.index import (bbit_codes, equal_code_pairs, hamming_range_pairs, lsh_bands, minhash_pairs,
                                nearest_cosine, shards)
from trustfl.text.keys import TextKey, key_for_run
from trustfl.text.minhash import KeyedMinHash, jaccard_pairs, minhash_jaccard, unique_per_record
from trustfl.text.normalize import MATCHING_RULE, normalize_for_fingerprint, normalize_for_matching
from trustfl.text.shingles import ShingleUnit, jaccard, shingle_list, shingle_set
from trustfl.text.simhash import SimHasher, cosine_to_hamming, hamming, hamming_to_cosine

__all__ = [
    "EXACT_BYTES",
    "KeyedMinHash",
    "MATCHING_RULE",
    "ShingleUnit",
    "SimHasher",
    "TextError",
    "TextKey",
    "bbit_codes",
    "cosine_to_hamming",
    "embed_texts",
    "equal_code_pairs",
    "exact_codes",
    "hamming",
    "hamming_range_pairs",
    "hamming_to_cosine",
    "jaccard",
    "jaccard_pairs",
    "key_for_run",
    "load_embedder",
    "lsh_bands",
    "minhash_jaccard",
    "minhash_pairs",
    "nearest_cosine",
    "normalize_for_fingerprint",
    "normalize_for_matching",
    "shards",
    "shingle_list",
    "shingle_set",
    "unique_per_record",
]
