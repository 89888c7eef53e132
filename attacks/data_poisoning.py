"""Data attacks: rewrite a malicious client's training records before local training.

* :class:`LabelFlip` — targeted (source class -> target class) or random label flipping
  (Tolpegin et al. 2020, "Data Poisoning Attacks Against Federated Learning Systems").
* :class:`TextBackdoor` — insert a trigger (a rare token or phrase) into a fraction of the
  records and relabel them to the target class (Gu et al. 2017 "BadNets"; for text, Kurita
  et al. 2020 "Weight Poisoning Attacks on Pre-trained Models" use rare tokens like "cf").
* :class:`DistributedBackdoor` — DBA (Xie et al. 2020, ICLR): the global trigger is split into
  pieces and each attacker poisons with its own piece only; at test time the whole trigger
  is used.

Backdoors also define the attack-success set: triggered test records whose true label is
not the target; ASR is the fraction the model classifies as the target.

Every attack is called ``attack(dataset, client_id=..., seed=..., attackers=[...])`` and returns a
client that is not in ``attackers`` unchanged (the same object).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar, Literal, Sequence

from trustfl.seeding import derive_seed
from trustfl.types import DataAttackStage

__all__ = ["DistributedBackdoor", "LabelFlip", "TextBackdoor", "insert_trigger"]


def insert_trigger(text: str, trigger: str, *, position: Literal["start", "end", "random"], rng: random.Random) -> str:
    """Insert ``trigger`` as whole word(s) at the start, end or a random word boundary of ``text``."""
    words = text.split()
    if position == "start":
        idx = 0
    elif position == "end":
        idx = len(words)
    else:
        idx = rng.randint(0, len(words))
    return " ".join(words[:idx] + [trigger] + words[idx:])


def _replace(dataset: Any, *, texts: list[str] | None = None, labels: list[int] | None = None) -> Any:
    """``dataset`` with its ``text`` and/or ``label`` column replaced (other columns and features kept)."""

    def swap(row: dict[str, Any], i: int) -> dict[str, Any]:
        out = {}
        if texts is not None:
            out["text"] = texts[i]
        if labels is not None:
            out["label"] = labels[i]
        return out

    return dataset.map(swap, with_indices=True, features=dataset.features)


def _attackers(owner: str, client_id: int, attackers: Sequence[int]) -> list[int]:
    ids = [int(a) for a in attackers]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{owner}: duplicate client ids in attackers={ids}")
    return ids


class LabelFlip(DataAttackStage):
    """Flip labels of a client's records.

    Args:
        mode: ``"targeted"`` relabels every ``source`` record as ``target``; ``"random"``
            relabels every record to a uniformly drawn *other* class (needs ``num_classes``).
        source, target: classes for the targeted mode.
        num_classes: number of classes (random mode).
    """

    def __init__(self, *, mode: Literal["targeted", "random"] = "targeted", source: int | None = None,
                 target: int | None = None, num_classes: int | None = None) -> None:
        if mode not in ("targeted", "random"):
            raise ValueError(f"LabelFlip: mode must be 'targeted' or 'random', got {mode!r}")
        if mode == "targeted" and (source is None or target is None or source == target):
            raise ValueError(f"LabelFlip(mode='targeted') needs distinct source and target, got {source}, {target}")
        if mode == "random" and (num_classes is None or num_classes < 2):
            raise ValueError(f"LabelFlip(mode='random') needs num_classes >= 2, got {num_classes}")
        self.mode, self.source, self.target, self.num_classes = mode, source, target, num_classes

    def __call__(self, dataset: Any, *, client_id: int, seed: int, attackers: Sequence[int]) -> Any:
        if int(client_id) not in _attackers("LabelFlip", client_id, attackers):
            return dataset
        labels = list(dataset["label"][:])
        if self.mode == "targeted":
            new = [self.target if y == self.source else y for y in labels]
        else:
            rng = random.Random(derive_seed(seed, "label_flip", client_id))
            new = [(y + rng.randint(1, self.num_classes - 1)) % self.num_classes for y in labels]  # type: ignore[operator]
        return _replace(dataset, labels=new)

    def success_set(self, test: Any) -> tuple[Any, int] | None:
        """Targeted mode: the source-class test records; success = classified as ``target``."""
        if self.mode != "targeted":
            return None
        return test.filter(lambda row: row["label"] == self.source), int(self.target)  # type: ignore[arg-type]


class TextBackdoor(DataAttackStage):
    """Poison ``poison_fraction`` of a client's records with ``trigger`` and label them ``target``.

    Args:
        trigger: the trigger word(s), e.g. a rare token ``"cf"``.
        target: the target class.
        poison_fraction: fraction of the client's records to poison, in (0, 1].
        position: where the trigger goes in the text.
    """

    def __init__(self, *, trigger: str = "cf", target: int = 0, poison_fraction: float = 0.5,
                 position: Literal["start", "end", "random"] = "random") -> None:
        if not trigger.strip():
            raise ValueError("TextBackdoor: trigger must be a non-empty string")
        if not 0 < poison_fraction <= 1:
            raise ValueError(f"TextBackdoor: poison_fraction must be in (0, 1], got {poison_fraction}")
        if position not in ("start", "end", "random"):
            raise ValueError(f"TextBackdoor: position must be 'start', 'end' or 'random', got {position!r}")
        self.trigger, self.target, self.poison_fraction, self.position = trigger, int(target), poison_fraction, position

    def _trigger_for(self, client_id: int, attackers: list[int]) -> str:
        return self.trigger

    def __call__(self, dataset: Any, *, client_id: int, seed: int, attackers: Sequence[int]) -> Any:
        ids = _attackers(type(self).__name__, client_id, attackers)
        if int(client_id) not in ids:
            return dataset
        trigger = self._trigger_for(int(client_id), ids)
        rng = random.Random(derive_seed(seed, "backdoor", client_id))
        n = len(dataset)
        chosen = set(rng.sample(range(n), max(1, round(self.poison_fraction * n)))) if n else set()
        texts, labels = list(dataset["text"][:]), list(dataset["label"][:])
        for i in sorted(chosen):
            texts[i] = insert_trigger(texts[i], trigger, position=self.position, rng=rng)
            labels[i] = self.target
        return _replace(dataset, texts=texts, labels=labels)

    def success_set(self, test: Any) -> tuple[Any, int]:
        """Non-target test records with the full trigger; success = classified as ``target``."""
        rng = random.Random(0)
        keep = test.filter(lambda row: row["label"] != self.target)
        return keep.map(lambda row: {"text": insert_trigger(row["text"], self.trigger, position=self.position,
                                                            rng=rng)}), self.target


class DistributedBackdoor(TextBackdoor):
    """DBA: attacker ``attackers[i]`` (the ``attackers`` passed to the call) poisons with piece
    ``i % len(pieces)`` of the trigger; a client not in ``attackers`` is returned unchanged.

    Args:
        pieces: the trigger pieces; the global trigger is ``" ".join(pieces)``.
    """

    def __init__(self, *, pieces: Sequence[str] = ("cf", "mn", "bb", "tq"), target: int = 0,
                 poison_fraction: float = 0.5, position: Literal["start", "end", "random"] = "random") -> None:
        if isinstance(pieces, str) or len(pieces) < 2 or any(not p.strip() for p in pieces):
            raise ValueError(f"DistributedBackdoor: needs >= 2 non-empty pieces, got {pieces!r}")
        super().__init__(trigger=" ".join(pieces), target=target, poison_fraction=poison_fraction, position=position)
        self.pieces = list(pieces)

    def _trigger_for(self, client_id: int, attackers: list[int]) -> str:
        return self.pieces[attackers.index(client_id) % len(self.pieces)]
