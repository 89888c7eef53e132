"""Canary records planted into a run for one-run privacy auditing (the ``[canaries]`` config section).

Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1) training run" (NeurIPS 2023, arXiv:2305.08846),
Sec. 2: draw ``m`` canaries, include each one independently with probability 1/2 (a seeded coin), train ONCE,
then guess from the trained model which canaries were in. The canaries are random secrets in the style of
Carlini et al. 2019, "The secret sharer" (USENIX Security): ``"my secret code is 4821 0937 5512"``, with a
random label for classification (a random record the model can only fit by memorising it).

Each included canary is appended to the training set of one client (drawn with the seed), so the relation
audited is the sample-level one (add/remove one record of one client). The coin flips, the canary texts
(synthetic, never client data), their labels and clients are recorded in the run manifest
(``extra["canaries"]``); :mod:`trustfl.audits.privacy` reads them back. Canaries carry negative ``row_id``
values, so they are never mistaken for the client's own records.

Example (config)::

    [canaries]
    count = 200          # m canary records; 0 (default) plants none
    secret_digits = 12   # random digits per secret
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from trustfl.config import check
from trustfl.seeding import generator
from trustfl.types import ClientDataContext, RunComponent, RunContext

__all__ = ["CANARY_FORMAT", "MAX_CANARIES", "CanaryComponent", "CanarySettings", "canaries_from_config",
           "canary_records", "canary_text", "validate_canaries"]

CANARY_FORMAT = "trustfl-canaries/1"
MAX_CANARIES = 100_000


@dataclass
class CanarySettings:
    """The ``[canaries]`` section: how many canary records, and what they look like.

    Attributes:
        count: ``m``, the number of canaries drawn (each included with probability 1/2). 0: none.
        secret_digits: random decimal digits of each secret (grouped by four), 1..64.
        prefix: the fixed text before the secret (Carlini et al. 2019 use "my social security number is").
        clients: clients that may receive canaries (default: all); each canary goes to one, drawn with the seed.
        seed: the canary seed (default: derived from the run seed).
    """

    count: int = 0
    secret_digits: int = 12
    prefix: str = "my secret code is"
    clients: list[int] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        check(isinstance(self.count, int) and not isinstance(self.count, bool) and 0 <= self.count <= MAX_CANARIES,
              "canaries.count", f"must be an integer in [0, {MAX_CANARIES}], got {self.count!r}")
        check(isinstance(self.secret_digits, int) and not isinstance(self.secret_digits, bool)
              and 1 <= self.secret_digits <= 64, "canaries.secret_digits",
              f"must be an integer in [1, 64], got {self.secret_digits!r}")
        check(isinstance(self.prefix, str) and len(self.prefix) <= 200 and "\x00" not in self.prefix,
              "canaries.prefix", "must be a text of at most 200 characters without NUL")
        check(self.clients is None or (len(self.clients) > 0 and len(set(self.clients)) == len(self.clients)),
              "canaries.clients", f"must be a non-empty list of distinct client ids or unset, got {self.clients!r}")
        check(self.clients is None or all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                          for c in self.clients),
              "canaries.clients", f"client ids must be integers >= 0, got {self.clients!r}")
        check(self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0),
              "canaries.seed", f"must be an integer >= 0 or unset, got {self.seed!r}")
        # 10^digits must exceed the count comfortably, or secrets repeat (and the audit would be ill-posed)
        check(self.count == 0 or 10 ** self.secret_digits >= 100 * self.count, "canaries.secret_digits",
              f"{self.secret_digits} digit(s) give only {10 ** min(self.secret_digits, 18)} secrets for "
              f"count = {self.count}; use at least {len(str(100 * self.count)) - 1} digits")

    @property
    def active(self) -> bool:
        return self.count > 0


def canary_text(prefix: str, digits: str) -> str:
    """The text of a canary whose secret is the digit string ``digits``: ``"<prefix> dddd dddd dddd"``.

    Example:
        >>> canary_text("my secret code is", "482109375512")
        'my secret code is 4821 0937 5512'
    """
    return f"{prefix} {' '.join(digits[i:i + 4] for i in range(0, len(digits), 4))}".strip()


def _secret(gen: torch.Generator, digits: int) -> str:
    return "".join(str(int(x)) for x in torch.randint(0, 10, (digits,), generator=gen))


def canary_records(settings: CanarySettings, *, seed: int, num_clients: int,
                   labels: list[int] | None) -> list[dict[str, Any]]:
    """The ``m`` canaries: ``{"index", "text", "label", "client", "included"}`` each, deterministic in ``seed``.

    ``included`` is the seeded fair coin of Steinke et al. 2023 (Sec. 2); ``label`` is uniform over
    ``labels`` (``None`` for a causal LM). Secrets are distinct.

    Raises:
        ConfigError: a client id in ``settings.clients`` is out of range, or ``labels`` is empty.
    """
    base = settings.seed if settings.seed is not None else seed
    clients = settings.clients if settings.clients is not None else list(range(num_clients))
    check(all(0 <= c < num_clients for c in clients), "canaries.clients",
          f"ids {[c for c in clients if not 0 <= c < num_clients]} out of range [0, {num_clients - 1}]")
    check(labels is None or len(labels) > 0, "canaries", "the training data has no labels to draw canary labels from")
    gen = generator(base, "canaries")
    coins = torch.randint(0, 2, (settings.count,), generator=generator(base, "canary_coins"))
    owners = torch.randint(0, len(clients), (settings.count,), generator=generator(base, "canary_clients"))
    out, seen = [], set()
    for i in range(settings.count):
        secret = _secret(gen, settings.secret_digits)
        while secret in seen:  # astronomically rare with the digits check; never a silent duplicate
            secret = _secret(gen, settings.secret_digits)
        seen.add(secret)
        label = int(labels[int(torch.randint(0, len(labels), (1,), generator=gen))]) if labels is not None else None
        out.append({"index": i, "text": canary_text(settings.prefix, secret), "label": label,
                    "client": int(clients[int(owners[i])]), "included": bool(coins[i])})
    return out


def _digest(records: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


class CanaryComponent(RunComponent):
    """Plants the canaries into the clients' training sets (client side) and records them in the manifest.

    Args:
        settings: the ``[canaries]`` section.
    """

    name = "canaries"

    def __init__(self, settings: CanarySettings) -> None:
        if not isinstance(settings, CanarySettings):
            raise TypeError(f"settings: expected CanarySettings, got {type(settings).__name__}")
        self.settings = settings
        self.records: list[dict[str, Any]] = []
        self.task = "classification"
        self._context: RunContext | None = None

    def setup(self, context: RunContext) -> None:
        self._context = context
        self.task = getattr(getattr(context.config, "model", None), "task", "classification")

    def prepare_clients(self, data: ClientDataContext) -> dict[int, tuple[Any, Any]]:
        import datasets

        splits = dict(data.splits)
        labels = None
        if self.task == "classification":
            labels = sorted({int(v) for train, _ in splits.values() for v in train["label"]})
        self.records = canary_records(self.settings, seed=data.seed, num_clients=len(splits), labels=labels)
        for cid, (train, holdout) in splits.items():
            mine = [r for r in self.records if r["included"] and r["client"] == cid]
            if not mine:
                continue
            columns: dict[str, list[Any]] = {c: [None] * len(mine) for c in train.column_names}
            columns["text"] = [r["text"] for r in mine]
            if "label" in columns:
                columns["label"] = [r["label"] if r["label"] is not None else 0 for r in mine]
            if "row_id" in columns:
                columns["row_id"] = [-1 - r["index"] for r in mine]  # negative: never a source row
            planted = datasets.Dataset.from_dict(columns, features=train.features)
            splits[cid] = (datasets.concatenate_datasets([train, planted]), holdout)
        return splits

    def manifest(self) -> dict[str, Any]:
        s = self.settings
        return {"canaries": {"format": CANARY_FORMAT, "kind": "records", "count": s.count,
                             "included": sum(r["included"] for r in self.records),
                             "settings": {"secret_digits": s.secret_digits, "prefix": s.prefix,
                                          "clients": s.clients, "seed": s.seed},
                             "relation": "add/remove one training record of one client",
                             "sha256": _digest(self.records), "records": self.records}}


def canaries_from_config(config: Any) -> list[RunComponent]:
    """The ``[canaries]`` section as a component (none when ``count = 0``)."""
    s = config.canaries
    return [CanaryComponent(s)] if s.active else []


def validate_canaries(config: Any) -> None:
    """Cross-section check: canary clients must be clients of the partition."""
    s = config.canaries
    n = config.partition.num_clients
    bad = [c for c in s.clients or [] if not 0 <= c < n]
    check(not bad, "canaries.clients", f"ids {bad} out of range [0, {n - 1}]")
