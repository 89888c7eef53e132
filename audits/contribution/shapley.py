"""Per-client contribution from stored updates: leave-one-out and GTG-Shapley, on a utility function.

GTG-Shapley (Liu, Chen, Cao, Wang, Yu 2022, "GTG-Shapley: Efficient and Accurate Participant
Contribution Evaluation in Federated Learning", ACM TIST 13(4)): per round ``r``, the utility of
a subset ``S`` of the round's clients is ``U(global(r-1) + server_lr * FedAvg(S))`` (the model is
*reconstructed* from the stored updates, never retrained). With ``v0 = U(empty)`` and
``vN = U(all)``:

* between-round truncation: ``|vN - v0| < tolerance`` -> every value of the round is 0;
* guided Monte Carlo permutations: permutation ``k`` starts with client ``k mod n`` (each client
  is first equally often), the rest in random order;
* within-round truncation: once ``|vN - v(prefix)| < tolerance`` the remaining marginal gains of
  that permutation are 0 (their utility is not evaluated);
* the Shapley value of a client is the running mean of its marginal gains; sampling stops after
  ``permutations`` permutations or when the mean relative change of the values over the last
  ``n`` permutations falls below ``convergence``.

Utilities are cached per round by subset (``frozenset`` of client ids), so leave-one-out
(``U(all) - U(all minus i)``) and the permutations share evaluations.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

__all__ = ["ContributionResult", "RoundContribution", "classify", "contributions", "fedavg_vector"]

Updates = Mapping[str, tuple[torch.Tensor, float]]


def fedavg_vector(base: torch.Tensor, updates: Updates, subset: frozenset[str], server_lr: float) -> torch.Tensor:
    """``base + server_lr * FedAvg(updates of subset)`` (sample-weighted mean; ``base`` for the empty subset)."""
    if not subset:
        return base
    ids = sorted(subset)
    w = torch.tensor([float(updates[c][1]) for c in ids], dtype=torch.float64)
    w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / len(ids))
    mean = (w.to(torch.float32)[:, None] * torch.stack([updates[c][0].float() for c in ids])).sum(dim=0)
    return base + server_lr * mean


@dataclass
class RoundContribution:
    round: int
    client_ids: list[str]
    shapley: dict[str, float]
    loo: dict[str, float]
    v_empty: float
    v_full: float
    permutations: int
    evaluations: int
    truncated_round: bool


@dataclass
class ContributionResult:
    rounds: list[RoundContribution] = field(default_factory=list)

    @property
    def shapley(self) -> dict[str, float]:
        """Per client: sum of its per-round Shapley values."""
        out: dict[str, float] = {}
        for r in self.rounds:
            for c, v in r.shapley.items():
                out[c] = out.get(c, 0.0) + v
        return out

    @property
    def loo(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.rounds:
            for c, v in r.loo.items():
                out[c] = out.get(c, 0.0) + v
        return out

    def ranking(self) -> list[tuple[str, float]]:
        """Clients by total Shapley value, highest first."""
        return sorted(self.shapley.items(), key=lambda kv: (-kv[1], kv[0]))

    def to_json(self) -> dict[str, Any]:
        return {"shapley": self.shapley, "leave_one_out": self.loo,
                "ranking": [c for c, _ in self.ranking()],
                "rounds": {str(r.round): {"clients": r.client_ids, "shapley": r.shapley, "leave_one_out": r.loo,
                                          "utility_empty": r.v_empty, "utility_full": r.v_full,
                                          "permutations": r.permutations, "utility_evaluations": r.evaluations,
                                          "truncated_round": r.truncated_round} for r in self.rounds}}


def classify(values: Mapping[str, float], tolerance: float) -> dict[str, str]:
    """``helped`` (> tolerance), ``free-rode`` (within ±tolerance) or ``hurt`` (< -tolerance) per client."""
    return {c: "helped" if v > tolerance else "hurt" if v < -tolerance else "free-rode" for c, v in values.items()}


def contributions(updates_by_round: Mapping[int, Updates], utility_fn: Callable[[torch.Tensor], float], *,
                  base_by_round: Mapping[int, torch.Tensor] | None = None, server_lr: float = 1.0,
                  permutations: int = 10, tolerance: float = 1e-3, convergence: float = 0.0, seed: int = 0,
                  leave_one_out: bool = True, progress: bool = False) -> ContributionResult:
    """GTG-Shapley and leave-one-out values of every client in every round (see the module docstring).

    Args:
        updates_by_round: round -> {client id: (delta [d], num_samples)}.
        utility_fn: utility of a global vector (e.g. test accuracy; higher is better).
        base_by_round: round -> global(r-1) (default: zeros, i.e. the updates alone).
        permutations: cap on Monte Carlo permutations per round.
        tolerance: truncation tolerance on utility differences.
        convergence: stop a round early when the mean relative change of the values over the last
            ``n`` permutations is below it (0: always run ``permutations``).
    """
    result = ContributionResult()
    rounds = sorted(updates_by_round)
    bar = tqdm(total=len(rounds), desc="contribution: rounds", unit="round", disable=not progress)
    for r in rounds:
        updates = dict(updates_by_round[r])
        ids = list(updates)
        n = len(ids)
        if n == 0:
            bar.update(1)
            continue
        d = next(iter(updates.values()))[0].numel()
        base = base_by_round[r] if base_by_round is not None and r in base_by_round else torch.zeros(d)
        base = base.float()
        cache: dict[frozenset[str], float] = {}

        def U(subset: frozenset[str]) -> float:
            if subset not in cache:
                cache[subset] = float(utility_fn(fedavg_vector(base, updates, subset, server_lr)))
            return cache[subset]

        full = frozenset(ids)
        v0, vN = U(frozenset()), U(full)
        loo = {c: vN - U(full - {c}) for c in ids} if leave_one_out else {}
        phi = {c: 0.0 for c in ids}
        done = 0
        truncated = abs(vN - v0) < tolerance
        if not truncated:
            rng = random.Random(f"{seed}:{r}")
            history: list[dict[str, float]] = []
            for k in range(permutations):
                rest = [c for c in ids if c != ids[k % n]]
                rng.shuffle(rest)
                perm = [ids[k % n], *rest]
                prefix: frozenset[str] = frozenset()
                v_prev = v0
                done = k + 1
                for c in perm:
                    if abs(vN - v_prev) < tolerance:
                        v_new = v_prev  # within-round truncation
                    else:
                        v_new = U(prefix | {c})
                    prefix = prefix | {c}
                    phi[c] += (v_new - v_prev - phi[c]) / done
                    v_prev = v_new
                history.append(dict(phi))
                if convergence > 0 and len(history) > n:
                    old = history[-n - 1]
                    change = sum(abs(phi[c] - old[c]) / max(abs(phi[c]), 1e-12) for c in ids) / n
                    if change < convergence:
                        break
        result.rounds.append(RoundContribution(round=r, client_ids=ids, shapley=phi, loo=loo, v_empty=v0,
                                               v_full=vN, permutations=done, evaluations=len(cache),
                                               truncated_round=truncated))
        bar.update(1)
    bar.close()
    return result
