"""Distributed near-duplicate detection: keyed codes on clients, FAISS search on the server.

Clients never send raw text or embeddings. With a key shared among clients (not the server)
each client computes HMAC codes of normalised text (exact duplicates), keyed MinHash
signatures of shingles (lexical near-duplicates; Broder 1997) and SimHash codes of MiniLM
embeddings under a secret rotation (semantic near-duplicates; Charikar 2002). The server
indexes the codes with FAISS binary indexes, returns candidate pairs within and across
clients, clients confirm the pairs they hold both sides of, and connected components give
duplicate clusters with one record kept per cluster. See docs/dedup.md.

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
from trustfl.defenses.dedup.embed import embed_texts
from trustfl.defenses.dedup.errors import DedupError
from trustfl.defenses.dedup.exact import exact_codes
from trustfl.defenses.dedup.index import equal_code_pairs, hamming_range_pairs, lsh_bands, minhash_pairs
from trustfl.defenses.dedup.keys import DedupKey, key_for_run
from trustfl.defenses.dedup.minhash import KeyedMinHash, minhash_jaccard
from trustfl.defenses.dedup.normalize import normalize_text, normalize_texts
from trustfl.defenses.dedup.protocol import deduplicate, validate_methods
from trustfl.defenses.dedup.result import DedupResult, DuplicatePair, PairTable
from trustfl.defenses.dedup.server import Candidates, DedupServer, ServerView
from trustfl.defenses.dedup.simhash import SimHasher, cosine_to_hamming, hamming, hamming_to_cosine

__all__ = sorted([
    "METHODS",
    "Candidates",
    "ClientCodes",
    "DedupClient",
    "DedupError",
    "DedupKey",
    "DedupResult",
    "DedupServer",
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
    "normalize_text",
    "normalize_texts",
    "validate_methods",
])
