"""Split data among federated clients and hold data out, as pure seeded functions.

Every partitioner returns `list[np.ndarray]` (int64 row indices, sorted within a
client), one per client, assigning every row exactly once and never leaving a client
empty; the same arguments and seed always give the same split. `partition_dataset` and
the split helpers apply them to a `datasets.Dataset`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from datasets import Dataset

from trustfl.data.errors import PartitionError

__all__ = [
    "dirichlet_partition",
    "holdout_split",
    "iid_partition",
    "key_partition",
    "partition_dataset",
    "train_test_split_dataset",
]

Scheme = Literal["iid", "dirichlet", "key"]


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PartitionError(f"{name}={value!r} is invalid: it must be an integer >= {minimum}")
    return int(value)


def _check_fraction(name: str, value: Any, *, low_open: bool) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (0 < value < 1 if low_open else 0 <= value < 1)
    if not ok:
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise PartitionError(f"{name}={value!r} is invalid: it must be a number in {interval}")
    return float(value)


def _check_enough(n_rows: int, num_clients: int, min_size: int = 1) -> None:
    if n_rows < num_clients * min_size:
        raise PartitionError(
            f"num_clients={num_clients} with min_size={min_size} needs at least {num_clients * min_size} rows, "
            f"but there are {n_rows}; use at most {n_rows // min_size} clients, a smaller min_size or more data"
        )


def iid_partition(n_rows: int, num_clients: int, *, seed: int) -> list[np.ndarray]:
    """Shuffle the rows with `seed` and cut them into `num_clients` near-equal parts.

    Sizes differ by at most one row. Raises PartitionError (a ValueError) on bad arguments.

    >>> [p.tolist() for p in iid_partition(5, 2, seed=0)]  # doctest: +SKIP
    """
    n_rows = _check_int("n_rows", n_rows, minimum=0)
    seed = _check_int("seed", seed, minimum=0)
    num_clients = _check_int("num_clients", num_clients, minimum=1)
    _check_enough(n_rows, num_clients)
    perm = np.random.default_rng(seed).permutation(n_rows)
    return [np.sort(part).astype(np.int64) for part in np.array_split(perm, num_clients)]


def dirichlet_partition(
    labels: Sequence[Any] | np.ndarray,
    num_clients: int,
    *,
    alpha: float,
    seed: int,
    min_size: int = 1,
    max_retries: int = 100,
) -> list[np.ndarray]:
    """Label-skewed split: each class's rows go to clients in proportions ~ Dir(alpha).

    Hsu, Qi & Brown 2019, "Measuring the effects of non-identical data distribution for
    federated visual classification" (arXiv:1909.06335), Sec. 3: small `alpha` gives each
    client few classes, `alpha -> inf` tends to IID. For every class independently a
    vector p ~ Dir(alpha * 1_K) over the K clients is drawn and the class's shuffled rows
    are cut at the cumulative proportions. If some client gets fewer than `min_size`
    rows the whole draw is repeated (up to `max_retries` times, from the same seeded
    generator, so the result is deterministic).

    Args:
        labels: shape [n], one class label (any sortable value) per row.

    Raises:
        PartitionError: alpha <= 0, too few rows, or no valid draw within `max_retries`.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise PartitionError(f"labels must be one-dimensional, got shape {y.shape}")
    num_clients = _check_int("num_clients", num_clients, minimum=1)
    min_size = _check_int("min_size", min_size, minimum=1)
    max_retries = _check_int("max_retries", max_retries, minimum=1)
    seed = _check_int("seed", seed, minimum=0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not (0 < alpha < math.inf):
        raise PartitionError(f"alpha={alpha!r} is invalid: the Dirichlet concentration must be a finite number > 0")
    _check_enough(len(y), num_clients, min_size)
    rng = np.random.default_rng(seed)
    _, y_codes = np.unique(y, return_inverse=True)
    by_class = [np.flatnonzero(y_codes == c) for c in range(int(y_codes.max(initial=-1)) + 1)]
    for _ in range(max_retries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for rows in by_class:
            rows = rng.permutation(rows)
            proportions = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(proportions)[:-1] * len(rows)).astype(np.int64)
            for client, chunk in enumerate(np.split(rows, cuts)):
                parts[client].append(chunk)
        result = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(r) for r in result) >= min_size:
            return result
    raise PartitionError(
        f"no Dirichlet draw with alpha={alpha} gave all num_clients={num_clients} clients at least "
        f"min_size={min_size} rows in max_retries={max_retries} tries; raise alpha, lower "
        "num_clients or min_size, or raise max_retries"
    )


def key_partition(keys: Sequence[Any] | np.ndarray, *, num_clients: int | None = None) -> list[np.ndarray]:
    """One client per distinct key (e.g. tweet account), keys in sorted order.

    With `num_clients` smaller than the number of distinct keys, the sorted keys are dealt
    round-robin: key i goes to client i % num_clients. Deterministic; needs no seed.

    Raises:
        PartitionError: no rows, or `num_clients` greater than the number of distinct keys.
    """
    k = np.asarray(keys)
    if k.ndim != 1 or len(k) == 0:
        raise PartitionError(f"keys must be a non-empty one-dimensional sequence, got shape {k.shape}")
    try:
        distinct, codes = np.unique(k, return_inverse=True)
    except TypeError as exc:
        raise PartitionError(f"keys must be mutually sortable (e.g. all str or all int): {exc}") from exc
    n_keys = len(distinct)
    if num_clients is None:
        num_clients = n_keys
    num_clients = _check_int("num_clients", num_clients, minimum=1)
    if num_clients > n_keys:
        raise PartitionError(
            f"num_clients={num_clients} exceeds the {n_keys} distinct keys; it must be <= {n_keys} "
            "(or None for one client per key)"
        )
    client_of_row = codes.reshape(-1) % num_clients
    return [np.flatnonzero(client_of_row == c).astype(np.int64) for c in range(num_clients)]


def partition_dataset(
    ds: Dataset,
    *,
    scheme: Scheme,
    num_clients: int | None,
    seed: int,
    alpha: float | None = None,
    key_column: str | None = None,
    label_column: str = "label",
) -> list[Dataset]:
    """Split `ds` into client datasets with `iid_partition`, `dirichlet_partition` or `key_partition`.

    `alpha` is required for (and only accepted with) "dirichlet", `key_column` for "key";
    `num_clients=None` is allowed only with "key" (one client per key). `seed` is unused by
    "key", which is deterministic.

    Raises:
        PartitionError: an unknown scheme, a missing/extra argument, or any partitioner error.
    """
    schemes = ("iid", "dirichlet", "key")
    if scheme not in schemes:
        raise PartitionError(f"scheme={scheme!r} is unknown; valid schemes: {list(schemes)}")
    if (alpha is not None) != (scheme == "dirichlet"):
        raise PartitionError(f"alpha={alpha!r} with scheme={scheme!r}: alpha is required for, and only for, 'dirichlet'")
    if (key_column is not None) != (scheme == "key"):
        raise PartitionError(
            f"key_column={key_column!r} with scheme={scheme!r}: key_column is required for, and only for, 'key'"
        )
    if num_clients is None and scheme != "key":
        raise PartitionError(f"num_clients=None is only valid with scheme='key'; scheme={scheme!r} needs an integer")
    if scheme == "iid":
        parts = iid_partition(len(ds), num_clients, seed=seed)  # type: ignore[arg-type]
    elif scheme == "dirichlet":
        _require_column(ds, "label_column", label_column)
        parts = dirichlet_partition(ds[label_column][:], num_clients, alpha=alpha, seed=seed)  # type: ignore[arg-type]
    else:
        _require_column(ds, "key_column", key_column)  # type: ignore[arg-type]
        parts = key_partition(ds[key_column][:], num_clients=num_clients)
    return [ds.select(p) for p in parts]


def train_test_split_dataset(
    ds: Dataset,
    *,
    test_fraction: float,
    seed: int,
    stratify: bool = True,
    label_column: str = "label",
) -> tuple[Dataset, Dataset]:
    """Global held-out test set: `(train, test)` with round(test_fraction * n) test rows.

    With `stratify`, class proportions are kept (scikit-learn's `train_test_split`).
    Rows keep their original relative order in both parts.

    Raises:
        PartitionError: test_fraction outside (0, 1), a split leaving a side empty, or a
            class too small to stratify.
    """
    from sklearn.model_selection import train_test_split

    test_fraction = _check_fraction("test_fraction", test_fraction, low_open=True)
    seed = _check_int("seed", seed, minimum=0)
    n = len(ds)
    n_test = round(test_fraction * n)
    if n_test < 1 or n_test >= n:
        raise PartitionError(
            f"test_fraction={test_fraction} of {n} rows gives {n_test} test rows; both sides need at least one row"
        )
    strata = None
    if stratify:
        _require_column(ds, "label_column", label_column)
        strata = np.asarray(ds[label_column][:])
    try:
        train_idx, test_idx = train_test_split(
            np.arange(n), test_size=n_test, random_state=_sk_seed(seed), stratify=strata
        )
    except ValueError as exc:
        raise PartitionError(f"stratified split failed ({exc}); pass stratify=False or merge rare classes") from exc
    return ds.select(np.sort(train_idx)), ds.select(np.sort(test_idx))


def holdout_split(ds: Dataset, *, holdout_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split one client's data into `(train, holdout)`; holdout rows are never trained on.

    The holdout keeps floor(holdout_fraction * n) random rows as non-members for later
    membership-inference audits. `holdout_fraction=0` gives an empty holdout.

    Raises:
        PartitionError: holdout_fraction outside [0, 1).
    """
    holdout_fraction = _check_fraction("holdout_fraction", holdout_fraction, low_open=False)
    seed = _check_int("seed", seed, minimum=0)
    n = len(ds)
    n_hold = math.floor(holdout_fraction * n + 1e-9)
    perm = np.random.default_rng(seed).permutation(n)
    return ds.select(np.sort(perm[n_hold:])), ds.select(np.sort(perm[:n_hold]))


def _require_column(ds: Dataset, param: str, column: str) -> None:
    if column not in ds.column_names:
        raise PartitionError(f"{param}={column!r} is not a column; available columns: {ds.column_names}")


def _sk_seed(seed: int) -> int:
    """scikit-learn wants a seed in [0, 2**32); derive one deterministically from any seed >= 0."""
    return int(np.random.default_rng(seed).integers(0, 2**32 - 1))
