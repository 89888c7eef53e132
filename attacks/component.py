"""Attacks as a run component: who attacks, their poisoned data, their rewritten updates, the ASR set.

Evaluation runs only. The loop knows nothing about attacks: this component rewrites attackers'
datasets on the client side (:meth:`prepare_clients`), the attackers' update rows on the server
side (:meth:`transform_updates`, before the pipeline), names the malicious clients (ground truth
for detection metrics) and hands the loop the triggered test set for attack success rate.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from trustfl.errors import ConfigError
from trustfl.seeding import derive_seed, generator
from trustfl.types import AttackContext, ClientDataContext, DataAttackStage, RunComponent, RunContext, UpdateAttackStage

__all__ = ["AttackComponent", "from_config"]


class AttackComponent(RunComponent):
    """Data attacks per client and one update attack run by ``attackers``.

    Args:
        data_attacks: ``{client_id: DataAttackStage}``.
        data_attack: one data attack run by every client in ``attackers`` (as ``[attack] data`` says).
        update_attack: rewrites the rows of ``attackers`` each round (omniscient ones see the benign rows).
        attackers: clients that run ``update_attack`` (and, for colluding data attacks, the coalition).
        fraction: instead of ``attackers``: draw ``round(fraction * num_clients)`` ids with the run seed.
    """

    name = "attack"

    def __init__(self, *, data_attacks: dict[int, DataAttackStage] | None = None,
                 data_attack: DataAttackStage | None = None, update_attack: UpdateAttackStage | None = None, attackers: Sequence[int] | None = None,
                 fraction: float | None = None) -> None:
        self.data_attacks = {int(k): v for k, v in (data_attacks or {}).items()}
        self.data_attack = data_attack
        self.update_attack = update_attack
        self.attackers = sorted({int(a) for a in attackers}) if attackers is not None else None
        self.fraction = fraction
        for cid, attack in [*self.data_attacks.items(), *([("all", data_attack)] if data_attack else [])]:
            if not isinstance(attack, DataAttackStage):
                raise TypeError(f"data_attacks[{cid}]: {attack!r} is not a trustfl.types.DataAttackStage "
                                "(subclass it: __call__(dataset, *, client_id, seed, attackers))")
        if update_attack is not None and not isinstance(update_attack, UpdateAttackStage):
            raise TypeError(f"update_attack: {update_attack!r} is not a trustfl.types.UpdateAttackStage")
        if (update_attack is not None or data_attack is not None) and not self.attackers and fraction is None:
            raise ConfigError("an update attack or shared data attack is set but no attackers were named")

    def setup(self, context: RunContext) -> None:
        n = context.num_clients
        if self.attackers is None:
            k = max(1, round(float(self.fraction or 0.0) * n)) if self.fraction is not None else 0
            self.attackers = sorted(torch.randperm(n, generator=generator(context.seed, "attackers"))[:k].tolist())
        bad = [a for a in [*self.attackers, *self.data_attacks] if not 0 <= a < n]
        if bad:
            raise ConfigError(f"attackers: client ids {bad} out of range [0, {n - 1}]")
        if self.data_attack is not None:
            self.data_attacks.update({cid: self.data_attack for cid in self.attackers})

    # ------------------------------------------------------------------ client side
    def prepare_clients(self, data: ClientDataContext) -> dict[int, tuple[Any, Any]]:
        coalition = sorted(self.data_attacks)
        out = dict(data.splits)
        for cid, attack in self.data_attacks.items():
            train, holdout = out[cid]
            out[cid] = (attack(train, client_id=cid, seed=derive_seed(data.seed, "data_attack", cid),
                               attackers=coalition), holdout)
        return out

    def eval_sets(self, test: Any) -> dict[str, tuple[Any, int]]:
        for attack in {id(a): a for a in self.data_attacks.values()}.values():
            success = attack.success_set(test)
            if success is not None and len(success[0]) > 0:
                return {"attack_success_rate": (success[0], int(success[1]))}
        return {}

    # ------------------------------------------------------------------ server side
    def malicious_clients(self) -> list[int]:
        return sorted(set(self.update_attackers()) | set(self.data_attacks))

    def update_attackers(self) -> list[int]:
        return list(self.attackers or []) if self.update_attack is not None else []

    def transform_updates(self, round: int, updates: torch.Tensor, client_ids: list[int], *,
                          global_vector: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        attackers = set(self.update_attackers())
        rows = [i for i, cid in enumerate(client_ids) if cid in attackers]
        if self.update_attack is None or not rows:
            return updates
        benign = [i for i in range(len(client_ids)) if i not in rows]
        context = AttackContext(round=round, attacker_ids=[client_ids[i] for i in rows], global_vector=global_vector,
                                benign_updates=updates[benign] if self.update_attack.omniscient else None,
                                generator=generator)
        malicious = self.update_attack(updates[rows].clone(), context=context)
        if not isinstance(malicious, torch.Tensor) or tuple(malicious.shape) != (len(rows), updates.shape[1]):
            shape = tuple(malicious.shape) if isinstance(malicious, torch.Tensor) else type(malicious).__name__
            raise ValueError(f"update attack {self.update_attack!r} returned {shape}, expected "
                             f"{(len(rows), updates.shape[1])}")
        out = updates.clone()
        out[rows] = malicious.to(updates.dtype)
        return out

    def manifest(self) -> dict[str, Any]:
        return {"attackers": self.malicious_clients(), "update_attackers": self.update_attackers(),
                "data_attacks": {str(k): {"class": type(v).__name__, **v.get_config()}
                                 for k, v in self.data_attacks.items()},
                "update_attack": ({"class": type(self.update_attack).__name__, **self.update_attack.get_config()}
                                  if self.update_attack is not None else None)}


def from_config(config: Any) -> list[RunComponent]:
    """The ``[attack]`` section as a component (none when no attack is configured)."""
    from trustfl.attacks.registry import make_attack

    atk = config.attack
    if not atk.active:
        return []
    return [AttackComponent(data_attack=make_attack("data", atk.data) if atk.data is not None else None,
                            update_attack=make_attack("update", atk.update) if atk.update is not None else None,
                            attackers=atk.attackers, fraction=atk.fraction)]
