"""Distributed near-duplicate detection: keyed codes on clients, FAISS search on the server.

Clients never send raw text or embeddings. With a key shared among clients (not the server)
each client computes HMAC codes of normalised text (exact duplicates), keyed MinHash
signatures of shingles (lexical near-duplicates; Broder 1997) and SimHash codes of MiniLM
embeddings under a secret rotation (semantic near-duplicates; Charikar 2002). The server
indexes the codes with FAISS binary indexes, returns candidate pairs within and across
clients, clients confirm the pairs they hold both sides of, and connected components give
duplicate clusters with one record kept per cluster. The text primitives (normalisation, keyed
MinHash, SimHash, FAISS helpers, embeddings) live in :mod:`trustfl.text`; the defaults of every
parameter in :class:`DedupSettings`. See docs/dedup.md.

Example:
    >>> from trustfl.defenses.dedup import DedupKey, deduplicate
    >>> key = DedupKey.generate()
    >>> result = deduplicate({0: ["Call me now!", "see you"], 1: ["call me now"]}, key,
    ...                      methods=("exact", "lexical"))
    >>> result.keep[1].tolist()
    [False]
"""

from trustfl.defenses.dedup.client import METHODS, ClientCodes, DedupClient
from trustfl.defenses.dedup.clusters import cluster_members, component_labels, keep_mask
from trustfl.defenses.dedup.errors import DedupError
from trustfl.defenses.dedup.keys import DedupKey, key_for_run
from trustfl.defenses.dedup.protocol import deduplicate, validate_methods
from trustfl.defenses.dedup.result import DedupResult, DuplicatePair, PairTable
from trustfl.defenses.dedup.server import Candidates, DedupServer, ServerView
from trustfl.defenses.dedup.settings import DedupSettings, resolve_settings

# The text primitives live in trustfl.text (shared with trustfl.audits.origin); re-exported here
# under their old import paths.
from trustfl.text import (KeyedMinHash, SimHasher, cosine_to_hamming, embed_texts, equal_code_pairs, exact_codes,
                          hamming, hamming_range_pairs, hamming_to_cosine, lsh_bands, minhash_jaccard, minhash_pairs,
                          normalize_for_matching)

__all__ = sorted([
    "METHODS",
    "Candidates",
    "ClientCodes",
    "DedupClient",
    "DedupError",
    "DedupKey",
    "DedupResult",
    "DedupServer",
    "DedupSettings",
    "DuplicatePair",
    "KeyedMinHash",
    "PairTable",
    "ServerView",
    "SimHasher",
    "cluster_members",
    "component_labels",
    "cosine_to_hamming",
    "deduplicate",
    "embed_texts",
    "key_for_run",
    "equal_code_pairs",
    "exact_codes",
    "hamming",
    "hamming_range_pairs",
    "hamming_to_cosine",
    "keep_mask",
    "lsh_bands",
    "minhash_jaccard",
    "minhash_pairs",
    "normalize_for_matching",
    "resolve_settings",
    "validate_methods",
])
