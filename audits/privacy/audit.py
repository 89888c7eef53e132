"""``privacy_audit(RUN_DIR)``: membership inference + the one-run canary audit, written into the run directory.

Writes ``RUN_DIR/audit/privacy/results.json`` (atomically) and ``roc.png`` (log-log ROC of every attack);
caches scores and the shadow adapter in ``RUN_DIR/audit/privacy/cache``. Nothing but scores, counts and
metrics is written: no record text leaves the run directory (and none is printed).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustfl.audits.privacy.settings import PrivacyAuditError, PrivacyAuditSettings
from trustfl.errors import TrustFLError

__all__ = ["PRIVACY_DIR", "PrivacyAuditResult", "privacy_audit"]

PRIVACY_DIR = Path("audit") / "privacy"


@dataclass
class PrivacyAuditResult:
    """What the privacy audit found (``to_dict()`` is ``results.json``)."""

    run_dir: str
    membership: dict[str, Any] = field(default_factory=dict)  # attack name -> metrics (or "skipped")
    canaries: dict[str, Any] | None = None
    not_run: dict[str, str] = field(default_factory=dict)     # part -> why
    data: dict[str, Any] = field(default_factory=dict)        # record counts, duplicates dropped, shadow
    accounted: dict[str, Any] | None = None
    paths: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def best_attack(self) -> str | None:
        """The attack with the highest TPR at the first target FPR (ties: higher AUC)."""
        ran = {k: v for k, v in self.membership.items() if "auc" in v}
        if not ran:
            return None

        def first_tpr(v: dict[str, Any]) -> float:
            return float(next(iter(v["tpr_at_fpr"].values())))

        return max(ran, key=lambda k: (first_tpr(ran[k]), ran[k]["auc"]))

    def to_dict(self) -> dict[str, Any]:
        best = self.best_attack()
        summary: dict[str, Any] = {"best_attack": best}
        if best is not None:
            b = self.membership[best]
            summary.update(best_auc=b["auc"], best_tpr_at_fpr=b["tpr_at_fpr"])
            loss = self.membership.get("loss")
            if loss and "auc" in loss:
                k = next(iter(b["tpr_at_fpr"]))
                lt = loss["tpr_at_fpr"][k]
                summary["best_over_loss_tpr_ratio"] = (b["tpr_at_fpr"][k] / lt) if lt > 0 else None
        if self.canaries:
            summary["empirical_epsilon"] = self.canaries["epsilon_lower_bound"]
            summary["accounted_epsilon"] = (self.accounted or {}).get("epsilon")
        return {"format": "trustfl-privacy-audit/1", "run_dir": self.run_dir, "summary": summary,
                "membership": self.membership, "canaries": self.canaries, "not_run": self.not_run,
                "data": self.data, "accounted": self.accounted, "seconds": round(self.seconds, 3)}


def _as_run(run_dir: Any) -> Any:
    from trustfl.rundir import RunDir, RunDirError

    if hasattr(run_dir, "manifest") and hasattr(run_dir, "global_vector"):
        return run_dir
    root = Path(run_dir)
    if not (root / "manifest.json").is_file():
        raise RunDirError(f"{root} is not a run directory (no manifest.json; a run directory is written by "
                          "`trustfl run` or trustfl.rundir.RunWriter)")
    return RunDir(root)


def privacy_audit(run_dir: Any, settings: PrivacyAuditSettings | None = None, *, config: Any = None,
                  model: Any = None, tokenizer: Any = None, task: str | None = None, max_length: int = 128,
                  members: Any = None, nonmembers: Any = None, write: bool = True) -> PrivacyAuditResult:
    """Audit the privacy of a run directory.

    A run of ``trustfl run``: everything is rebuilt from its recorded config (model, members = the clients'
    training records, non-members = their holdouts, checked against the manifest's fingerprints). A run of
    your own loop (:class:`~trustfl.rundir.RunWriter`): pass ``model`` (with the run's adapter layout; the
    last global adapter is loaded into it), ``tokenizer``, ``task`` and the ``members``/``nonmembers``
    records, or a trustfl ``config`` that rebuilds them.

    Raises:
        RunDirError: not a run directory.
        PrivacyAuditError: missing files or records, overlapping or empty member/non-member sets, a dataset that
            changed since the run, bad settings.
    """
    from trustfl.audits.privacy.canary import accounted_epsilon, canary_audit
    from trustfl.audits.privacy.empirical import MIN_CANARIES
    from trustfl.audits.privacy.membership import (PopulationSource, ScoreCache, membership_audit, online_shadows,
                                                   shadow_attacks, shadow_reference)
    from trustfl.audits.privacy.model import RunModel, load_adapter, load_run_model
    from trustfl.audits.privacy.records import (MembershipData, check_disjoint, membership_data, recorded_canaries,
                                                run_config)

    t0 = time.perf_counter()
    settings = settings or PrivacyAuditSettings()
    run = _as_run(run_dir)
    out_dir = run.path / PRIVACY_DIR
    cache = ScoreCache(out_dir / "cache" if write and settings.cache else None)
    result = PrivacyAuditResult(run_dir=str(run.path), accounted=accounted_epsilon(run.manifest))
    if (members is None) != (nonmembers is None):
        raise PrivacyAuditError("privacy audit: give members and nonmembers together (or neither: the clients' "
                                "training records and holdouts are rebuilt from the run's config)")
    cfg = None
    if model is not None:
        if members is None:
            raise PrivacyAuditError("privacy audit: with your own model also give members= and nonmembers= records")
        if tokenizer is None or task not in ("classification", "causal_lm"):
            raise PrivacyAuditError("privacy audit: with your own model also give tokenizer= and task= "
                                    "('classification' or 'causal_lm')")
        layout, vector = load_adapter(run, model)
        rm = RunModel(model=model, tokenizer=tokenizer, task=task, max_length=max_length, layout=layout,
                      vector=vector, initial=run.global_vector(0), round=run.completed_rounds)
        if config is not None:
            cfg = run_config(run, config)
    else:
        cfg = run_config(run, config)
        rm = load_run_model(run, config=cfg)
    data = None
    if members is not None:
        from trustfl.attacks.membership._records import as_dataset

        try:
            mem, non = as_dataset(members, task=rm.task), as_dataset(nonmembers, task=rm.task)
        except Exception as exc:  # MembershipError: empty, missing columns, bad labels
            raise PrivacyAuditError(f"privacy audit: {str(exc).splitlines()[0]}") from exc
        check_disjoint(mem, non)
        data = MembershipData(members=mem, nonmembers=non, task=rm.task,
                              sampled_from={"members": len(mem), "nonmembers": len(non)})
    elif settings.membership:
        assert cfg is not None
        data = membership_data(run, config=cfg, max_records=settings.max_records, seed=settings.seed,
                               progress=settings.progress)
    canaries = recorded_canaries(run)
    source: list[PopulationSource] = []  # loaded and partitioned once, on first use

    def population_source() -> PopulationSource:
        if not source:
            source.append(PopulationSource.of_run(run, cfg))
        return source[0]

    # the shadow adapter (reference for calibrated attacks and canary scores)
    shadow, note = None, ""
    wants_shadow = settings.shadow and ((settings.membership and "reference" in settings.attacks)
                                        or (settings.canaries and canaries))
    if cfg is not None and wants_shadow:
        excl = set(data.members["text"]) | set(data.nonmembers["text"]) if data is not None else set()
        per_client = max(10, (data.sampled_from.get("members", 0) // max(1, cfg.partition.num_clients))
                         if data is not None else 100)
        try:
            population = population_source().sample(exclude_texts=excl, n=per_client, seed=settings.seed)
            shadow = shadow_reference(run, rm, cfg, population, cache=cache, seed=settings.seed,
                                      progress=settings.progress)
            result.data["shadow"] = {"records": len(population), "rounds": cfg.federation.rounds,
                                     "source": "population rows the run never used (outside clients and test)"}
        except PrivacyAuditError as exc:
            note = str(exc)
    elif cfg is None:
        note = "a run of your own loop without a trustfl config: no recipe to train a shadow adapter with"
    elif not settings.shadow:
        note = "turned off (shadow = false)"

    # shadow adapters of the federated loop for LiRA / RMIA (trustfl.attacks.membership.train_shadow_adapters)
    shadow_set, pop_z, shadow_note = None, None, ""
    if settings.membership and shadow_attacks(settings.attacks):
        if settings.shadows == 0:
            shadow_note = "shadows = 0"
        elif cfg is None or data is None:
            shadow_note = "no trustfl config to train shadows with"
        elif not write or not settings.cache:
            shadow_note = "shadow adapters are kept in RUN_DIR/audit/privacy/cache (needs write=True and cache)"
        else:
            try:
                shadow_set, pop_z, info = online_shadows(population_source(), cfg, data, settings,
                                                         out_dir / "cache" / "shadows")
                result.data["shadows"] = info
            except TrustFLError as exc:  # MembershipError: a pool missing a class, ...
                shadow_note = str(exc).splitlines()[0]
    if settings.membership:
        assert data is not None
        result.data.update(members=len(data.members), nonmembers=len(data.nonmembers),
                           available=data.sampled_from, dropped_duplicate_nonmembers=data.dropped_duplicates)
        outcomes = membership_audit(rm, data, settings, cache=cache, reference_vector=shadow, reference_note=note,
                                    shadow_set=shadow_set, population=pop_z, shadow_note=shadow_note, run=run)
        for o in outcomes:
            result.membership[o.name] = ({**o.metrics, "seconds": round(o.seconds, 3), "cached": o.cached, **o.config}
                                         if o.metrics is not None else {"skipped": o.skipped})
        curves = {o.name: (o.member_scores, o.nonmember_scores) for o in outcomes if o.metrics is not None}
        if curves and write:
            from trustfl.attacks.membership import roc_plot

            result.paths["roc"] = str(roc_plot(curves, out_dir / "roc.png"))
    else:
        result.not_run["membership"] = "turned off (membership = false)"
    if not settings.canaries:
        result.not_run["canaries"] = "turned off (canaries = false)"
    elif canaries is None:
        result.not_run["canaries"] = ("the run planted no canaries (set [canaries] count = 200 in the run's config "
                                      "to get an empirical epsilon)")
    elif len(canaries) < MIN_CANARIES:
        result.not_run["canaries"] = (f"the run drew {len(canaries)} canary; the one-run bound needs at least "
                                      f"{MIN_CANARIES} (one 'in' and one 'out' guess; a useful bound needs hundreds): "
                                      "set [canaries] count = 200 in the run's config")
    else:
        result.canaries = canary_audit(run, rm, canaries, settings, cache=cache, reference_vector=shadow)
    result.seconds = time.perf_counter() - t0
    if write:
        from trustfl.rundir import atomic_write_bytes

        out_dir.mkdir(parents=True, exist_ok=True)
        data_bytes = json.dumps(result.to_dict(), indent=2, allow_nan=False).encode() + b"\n"
        atomic_write_bytes(out_dir / "results.json", data_bytes)
        result.paths["json"] = str(out_dir / "results.json")
    return result
