"""Planted near-duplicates with known ground truth, for measuring near-duplicate detection
(the dedup benchmark and accuracy tests; not used by the protocol itself).

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
  truth: every record whose normalised text (default:
  :func:`trustfl.text.normalize_for_matching`) equals an earlier record's is typed
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

Modules: :mod:`~trustfl.defenses.dedup.planted.edits` (the edits and :class:`EditRates`),
:mod:`~trustfl.defenses.dedup.planted.corpus` (generators, :class:`PlantedCorpus`),
:mod:`~trustfl.defenses.dedup.planted.scoring` (scorer, adjudication, labels).

Example:
    >>> corpus = plant_duplicates(["the cat sat on the mat today", "hello there my old friend"] * 3,
    ...                           counts={"typo": 2}, n_clients=2, seed=0, min_source_chars=10)
    >>> sorted(set(corpus.dup_type.tolist()))
    ['natural_exact', 'original', 'typo']
"""

from trustfl.defenses.dedup.planted.corpus import DUP_TYPES, PlantedCorpus, benchmark_corpus, plant_duplicates
from trustfl.defenses.dedup.planted.edits import (SYNONYMS, EditRates, case_whitespace_variant, paraphrase_edit,
                                                  typo_edit, word_swap_edit)
from trustfl.defenses.dedup.planted.scoring import adjudicate_pairs, labels_from_clusters, score_dedup

__all__ = [
    "DUP_TYPES",
    "EditRates",
    "PlantedCorpus",
    "SYNONYMS",
    "adjudicate_pairs",
    "benchmark_corpus",
    "case_whitespace_variant",
    "labels_from_clusters",
    "paraphrase_edit",
    "plant_duplicates",
    "score_dedup",
    "typo_edit",
    "word_swap_edit",
]
