"""Verify unlearning runs against the exact baseline (retrain): did the forgotten clients' influence go,
was the rest kept, and at what cost?

Per run (the parent, retrain, each approximate method), on its final adapter:

* backdoor attack success rate, when a forgotten client was a backdoor attacker (should fall to the
  retrain level);
* membership-inference AUC of the LOSS attack (Yeom et al. 2018, :class:`trustfl.attacks.LossAttack`)
  on the forgotten clients' training records (as they trained on them) against their holdout records
  (or test records when the holdout is too small): should fall inside retrain's bootstrap confidence
  interval (95 %);
* clean test accuracy (retained vs retrain);
* L2 and cosine distance of the adapter change (final minus round-0 adapter) to retrain's;
* wall time and client compute (client samples processed since the first round the clients took part
  in), and the compute ratio retrain / method.

Verdict per approximate method: it "meets the goal" when ASR is within ``asr_points`` (5) of retrain,
clean accuracy within ``accuracy_points`` (2), the MIA AUC inside retrain's bootstrap interval (when that
interval is finite; else the AUC is only reported, and a note says so) and client compute at least
``speedup`` (5) times lower.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["GOAL", "MethodRow", "Verification", "verify_unlearning"]

GOAL: dict[str, Any] = {"asr_points": 5.0, "accuracy_points": 2.0, "speedup": 5.0,
                        "mia_auc": "inside retrain's bootstrap CI"}
MIN_NONMEMBERS = 20


@dataclass
class MethodRow:
    """The metrics of one run's final adapter (``None``: not applicable / not measured)."""

    name: str
    run_dir: str
    accuracy: float | None = None
    asr: float | None = None
    mia_auc: float | None = None
    mia_auc_ci: tuple[float, float] | None = None
    l2_to_retrain: float | None = None
    cosine_to_retrain: float | None = None
    wall_seconds: float | None = None
    client_samples: int | None = None
    compute_ratio: float | None = None  # retrain's client samples / this run's
    verdict: str = ""
    meets_goal: bool | None = None


@dataclass
class Verification:
    forgotten: list[int]
    first_round: int
    rows: list[MethodRow]
    membership: dict[str, Any] = field(default_factory=dict)  # members / non-members used
    backdoor: bool = False
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> MethodRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"forgotten": self.forgotten, "first_round": self.first_round, "rows": [asdict(r) for r in self.rows],
                "membership": self.membership, "backdoor": self.backdoor, "notes": self.notes, "goal": GOAL}

    def markdown(self) -> str:
        """One table with every metric (the docs' table)."""
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.1f}"

        def num(v: float | None, f: str = ".3f") -> str:
            return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, f)

        head = ("| run | clean acc % | backdoor ASR % | MIA AUC (forgotten) | L2 to retrain | cosine dist. to retrain"
                " | wall s | client samples | retrain compute ÷ this | verdict |\n|---|---|---|---|---|---|---|---|---|---|")
        lines = [head]
        for r in self.rows:
            ratio = "-" if r.compute_ratio is None else f"{r.compute_ratio:.1f}x"
            lines.append(f"| {r.name} | {pct(r.accuracy)} | {pct(r.asr)} | {num(r.mia_auc)} | {num(r.l2_to_retrain)} | "
                         f"{num(r.cosine_to_retrain)} | {num(r.wall_seconds, '.0f')} | "
                         f"{'-' if r.client_samples is None else r.client_samples} | {ratio} | {r.verdict} |")
        return "\n".join(lines)


def _records(dataset: Any) -> Any:
    return dataset.select_columns([c for c in ("text", "label") if c in dataset.column_names])


def _membership_sets(rebuilt: Any, forget: list[int], max_records: int, seed: int) -> tuple[Any, Any, str]:
    import datasets

    members = datasets.concatenate_datasets([_records(rebuilt.client_train[c]) for c in forget])
    holdout = datasets.concatenate_datasets([_records(rebuilt.client_holdout[c]) for c in forget])
    if len(holdout) >= MIN_NONMEMBERS:
        nonmembers, source = holdout, "the forgotten clients' holdout records"
    else:
        nonmembers, source = _records(rebuilt.test), "test records"
    n = min(max_records, len(members))
    members = members.shuffle(seed=seed).select(range(n)) if len(members) > n else members
    m = min(max_records, len(nonmembers))
    nonmembers = nonmembers.shuffle(seed=seed).select(range(m)) if len(nonmembers) > m else nonmembers
    return members, nonmembers, source


def verify_unlearning(parent: Any, runs: dict[str, Any], *, retrain: str = "retrain", mia_records: int = 500,
                      bootstrap: int = 200, progress: bool = False, rebuilt: Any = None) -> Verification:
    """Measure every run in ``runs`` (name -> :class:`~trustfl.rundir.RunDir` linked to ``parent``) and the parent.

    Args:
        parent: the original run (:class:`~trustfl.rundir.RunDir`).
        runs: unlearning runs of the same clients; the one named ``retrain`` is the reference (optional:
            without it, only absolute numbers are reported).
        mia_records: cap on members and on non-members scored.

    Raises:
        ValueError: a run is not an unlearning run of ``parent`` or forgot other clients than the others.
    """
    from trustfl.attacks.membership import LossAttack, membership_metrics
    from trustfl.audits.unlearning.rebuild import rebuild
    from trustfl.defenses.unlearning import client_samples
    from trustfl.rundir import sha256_file

    parent_sha = sha256_file(Path(parent.path) / "manifest.json")
    links = {}
    for name, run in runs.items():
        link = (run.manifest.get("extra") or {}).get("unlearning") or {}
        if link.get("parent_manifest_sha256") != parent_sha:
            raise ValueError(f"run {run.path} ({name}) is not an unlearning run of {parent.path} (its manifest links "
                             f"{link.get('parent')!r} with another manifest hash)")
        links[name] = link
    forgotten = {tuple(link["forgotten"]) for link in links.values()}
    if len(forgotten) > 1:
        raise ValueError(f"the runs forgot different clients: {sorted(forgotten)}; compare runs of one request")
    if not links:
        raise ValueError("no unlearning run to verify")
    forget = list(next(iter(forgotten)))
    first = int(next(iter(links.values()))["first_round"])
    rebuilt = rebuilt or rebuild(parent, progress=progress)
    extra = parent.manifest.get("extra") or {}
    data_attackers = {int(c) for c in (extra.get("data_attacks") or {})}
    backdoor = bool(data_attackers & set(forget)) and "attack_success_rate" in rebuilt.eval_sets
    members, nonmembers, source = _membership_sets(rebuilt, forget, mia_records, int(rebuilt.config.seed))
    attack = LossAttack()
    g0 = parent.global_vector(0)
    cfg = rebuilt.config

    def measure(name: str, run: Any, first_round: int, wall: float | None) -> tuple[MethodRow, torch.Tensor]:
        vector = run.global_vector(run.completed_rounds)
        ev = rebuilt.evaluate(vector)
        rebuilt.layout.load_into(rebuilt.model, vector)
        kw = dict(tokenizer=rebuilt.fm.tokenizer, task=cfg.model.task, max_length=cfg.model.max_length)
        mm = membership_metrics(attack.score(rebuilt.model, members, **kw), attack.score(rebuilt.model, nonmembers, **kw),
                                bootstrap=bootstrap, seed=int(cfg.seed))
        row = MethodRow(name=name, run_dir=str(run.path), accuracy=ev.get("accuracy"),
                        asr=ev.get("attack_success_rate") if backdoor else None, mia_auc=mm.auc,
                        mia_auc_ci=tuple(mm.auc_ci), wall_seconds=wall,
                        client_samples=client_samples(run, first_round=first_round))
        return row, vector

    rows: dict[str, MethodRow] = {}
    vectors: dict[str, torch.Tensor] = {}
    row, vectors["original"] = measure("original", parent, first, None)
    row.verdict = "before unlearning"
    rows["original"] = row
    for name, run in runs.items():
        rows[name], vectors[name] = measure(name, run, first, links[name].get("wall_seconds"))
    notes = list(rebuilt.warnings)
    if retrain in rows:
        ref, ref_delta = rows[retrain], vectors[retrain] - g0
        for name, row in rows.items():
            delta = vectors[name] - g0
            row.l2_to_retrain = float((vectors[name] - vectors[retrain]).norm())
            denom = float(delta.norm() * ref_delta.norm())
            row.cosine_to_retrain = 1.0 - float(delta.double() @ ref_delta.double()) / denom if denom > 0 else None
            if row.client_samples and ref.client_samples:
                row.compute_ratio = ref.client_samples / row.client_samples
        ref.verdict = "exact baseline"
        if not _has_ci(ref):
            notes.append("retrain's MIA AUC has no finite bootstrap interval: the MIA AUCs are reported, not part of "
                         "the verdicts")
        for name, row in rows.items():
            if name in ("original", retrain):
                continue
            row.meets_goal, row.verdict = _verdict(row, ref, backdoor)
    else:
        notes.append("no retrain run: distances, compute ratios and verdicts need the exact baseline "
                     "(trustfl unlearn RUN --method retrain)")
    return Verification(forgotten=forget, first_round=first, rows=list(rows.values()), backdoor=backdoor, notes=notes,
                        membership={"members": len(members), "nonmembers": len(nonmembers),
                                    "nonmember_source": source, "attack": "loss"})


def _verdict(row: MethodRow, ref: MethodRow, backdoor: bool) -> tuple[bool, str]:
    short: list[str] = []
    parts: list[str] = []
    if backdoor and row.asr is not None and ref.asr is not None:
        d = 100 * (row.asr - ref.asr)
        parts.append(f"ASR {d:+.1f} pt")
        if abs(d) > GOAL["asr_points"] and d > 0:
            short.append(f"ASR {d:+.1f} pt above retrain (goal <= {GOAL['asr_points']:g})")
    if row.accuracy is not None and ref.accuracy is not None:
        d = 100 * (row.accuracy - ref.accuracy)
        parts.append(f"acc {d:+.1f} pt")
        if d < -GOAL["accuracy_points"]:
            short.append(f"clean accuracy {d:+.1f} pt vs retrain (goal >= -{GOAL['accuracy_points']:g})")
    if row.mia_auc is not None and ref.mia_auc is not None:
        parts.append(f"MIA AUC {row.mia_auc:.3f} vs {ref.mia_auc:.3f}")
        if _has_ci(ref):
            lo, hi = ref.mia_auc_ci  # type: ignore[misc]
            if not lo <= row.mia_auc <= hi:
                short.append(f"MIA AUC {row.mia_auc:.3f} outside retrain's interval [{lo:.3f}, {hi:.3f}]")
    if row.compute_ratio is not None:
        parts.append(f"{row.compute_ratio:.1f}x less client compute")
        if row.compute_ratio < GOAL["speedup"]:
            short.append(f"only {row.compute_ratio:.1f}x less client compute (goal >= {GOAL['speedup']:g}x)")
    else:
        short.append("client compute not measured")
    head = "meets the goal" if not short else "falls short: " + "; ".join(short)
    return not short, f"{head} ({', '.join(parts)})"


def _has_ci(row: MethodRow) -> bool:
    """True when ``row`` carries a finite bootstrap interval of its MIA AUC."""
    ci = row.mia_auc_ci
    return ci is not None and all(isinstance(v, float) and math.isfinite(v) for v in ci)
