"""Membership inference against a run's final global adapter: every attack's scores on members and non-members,
their ROC AUC and TPR at low FPR with bootstrap CIs (:func:`trustfl.attacks.membership.membership_metrics`).

Attacks are found by name among the :class:`~trustfl.attacks.membership.MembershipAttack` subclasses that
``trustfl.attacks.membership`` exports. Reference-calibrated attacks get a **shadow adapter**: the run's own
training recipe (same FM, adapters, optimiser, epochs x rounds) applied to population records that the run
never used (source rows outside every client's data as partitioned, before dedup, and outside the test split,
else the test split; no text equal to a used row's), so
the reference knows the data distribution but none of the audited records (Carlini et al. 2021, 2022;
Watson et al. 2022). Scores and shadow adapters are cached in ``RUN_DIR/audit/privacy/cache`` (resumable;
keys include the run's adapter hash and the records' fingerprint, so a changed input never hits the cache).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from trustfl.audits.privacy.settings import PrivacyAuditError, PrivacyAuditSettings

__all__ = ["AttackOutcome", "PopulationSource", "ScoreCache", "available_attacks", "membership_audit", "online_shadows",
           "population_records", "shadow_attacks", "shadow_reference", "used_rows"]

# what the results say calibrated each attack, by its declared ``calibration``
_REFERENCE_NOTES = {"none": "", "reference_model": "shadow adapter on population data",
                    "shadow_models": "{shadows} shadow federations (federated loop; each record IN some, OUT of others)",
                    "client_updates": "the server's stored client updates"}


def shadow_attacks(names: Any) -> list[str]:
    """The attacks among ``names`` calibrated by shadow federations (``--shadows N``), by their declaration."""
    classes = available_attacks()
    return [n for n in names if n in classes and classes[n].calibration == "shadow_models"]


# ---------------------------------------------------------------------------------------------------- cache
class ScoreCache:
    """JSON score files under ``directory`` keyed by a sha256 of what produced them (atomic writes)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def get(self, name: str, key: str) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        path = self.directory / f"{name}-{key}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a broken cache file is recomputed, never trusted

    def put(self, name: str, key: str, value: dict[str, Any]) -> None:
        if self.directory is None:
            return
        from trustfl.rundir import atomic_write_bytes

        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.directory / f"{name}-{key}.json", json.dumps(value).encode())

    def tensor(self, name: str, key: str) -> torch.Tensor | None:
        if self.directory is None or not (self.directory / f"{name}-{key}.safetensors").is_file():
            return None
        from safetensors.torch import load_file

        try:
            return load_file(str(self.directory / f"{name}-{key}.safetensors"))["vector"]
        except Exception:  # noqa: BLE001 - a truncated cache file is recomputed
            return None

    def put_tensor(self, name: str, key: str, vector: torch.Tensor) -> None:
        if self.directory is None:
            return
        from safetensors.torch import save

        from trustfl.rundir import atomic_write_bytes

        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.directory / f"{name}-{key}.safetensors", save({"vector": vector.contiguous()}))


# ---------------------------------------------------------------------------------------------------- attacks
def available_attacks() -> dict[str, type]:
    """``{name: class}`` of every membership attack ``trustfl.attacks.membership`` exports."""
    import trustfl.attacks.membership as mia

    out: dict[str, type] = {}
    for export in mia.__all__:
        try:
            obj = getattr(mia, export)
        except (ImportError, AttributeError):
            continue
        if isinstance(obj, type) and issubclass(obj, mia.MembershipAttack) and obj is not mia.MembershipAttack:
            out[obj.name] = obj
    return out


@dataclass
class AttackOutcome:
    """One attack's scores (members, non-members) and metrics, or why it did not run."""

    name: str
    metrics: dict[str, Any] | None = None
    member_scores: list[float] = field(default_factory=list)
    nonmember_scores: list[float] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0
    cached: bool = False
    config: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- shadow
def used_rows(run: Any, cfg: Any) -> tuple[set[int], set[int]]:
    """``(used, test)`` source row ids: ``used`` = every client's training records and holdout as partitioned,
    BEFORE the client-side data steps (dedup drops near-copies of kept training records: they are no population
    data), plus the manifest's recorded rows; ``test`` = the test split."""
    from trustfl.federation.clients import split_data

    data = split_data(cfg)
    used: set[int] = set()
    for train, holdout in data.splits.values():
        used.update(int(r) for r in train["row_id"][:])
        used.update(int(r) for r in holdout["row_id"][:])
    extra = run.manifest.get("extra") or {}
    for info in (extra.get("clients") or {}).values():
        used.update(int(r) for r in info.get("train_rows", []) + info.get("holdout_rows", []) if int(r) >= 0)
    test = {int(r) for r in data.test["row_id"][:]} | {int(r) for r in extra.get("test_rows") or []}
    return used, test - used


@dataclass
class PopulationSource:
    """The source rows a run never trained on nor held out, loaded and partitioned once (an audit draws
    population records several times: the shadow adapter's, RMIA's z, the shadow pool's top-up).

    Rows outside every client's data as partitioned (before dedup) and outside the test split (else the test
    rows, when the run used the whole source), without any text of a used row (the corpus repeats texts).
    """

    run_path: Path
    source: Any
    texts: list[str]
    rows: list[int]
    used_texts: set[str]

    @classmethod
    def of_run(cls, run: Any, cfg: Any) -> "PopulationSource":
        from trustfl.data import load_dataset_source

        used, test = used_rows(run, cfg)
        ds = load_dataset_source(cfg.data.name, text_column=cfg.data.text_column, label_column=cfg.data.label_column)
        texts = ds["text"][:]
        rows = [i for i in range(len(texts)) if i not in used and i not in test]
        if len(rows) < 10:
            rows = sorted(test)  # the run used the whole source: the test split is the only population data
        return cls(run_path=Path(run.path), source=ds, texts=texts, rows=rows,
                   used_texts={texts[i] for i in used if 0 <= i < len(texts)})

    def sample(self, *, exclude_texts: set[str], n: int, seed: int) -> Any:
        """A seeded sample of at most ``n`` population records, none with a text of ``exclude_texts``."""
        import numpy as np

        keep = [i for i in self.rows if self.texts[i] not in self.used_texts and self.texts[i] not in exclude_texts]
        if not keep:
            raise PrivacyAuditError(f"{self.run_path}: no population records left to train a shadow adapter on")
        chosen = sorted(np.random.default_rng(seed).permutation(keep)[:n].tolist())
        return self.source.select(chosen)


def population_records(run: Any, cfg: Any, *, exclude_texts: set[str], n: int, seed: int) -> Any:
    """One draw of :class:`PopulationSource` (library shortcut; an audit keeps the source and draws from it)."""
    return PopulationSource.of_run(run, cfg).sample(exclude_texts=exclude_texts, n=n, seed=seed)


def shadow_reference(run: Any, rm: Any, cfg: Any, population: Any, *, cache: ScoreCache, seed: int = 0,
                     progress: bool = False) -> torch.Tensor:
    """A shadow adapter: the run's recipe (rounds x local epochs from the run's initial adapter) on ``population``,
    as one client. Cached by the run's initial adapter, the whole config but its ``name`` (model, LoRA, client
    optimiser, ``server.server_lr``, rounds, ...) and the population's fingerprint."""
    from trustfl.data import fingerprint_dataset
    from trustfl.federation.clients import tokenize_examples
    from trustfl.federation.setup import build_model_side

    cols = ["text", "label"] if cfg.model.task == "classification" else ["text"]
    recipe = {k: v for k, v in cfg.to_dict().items() if k != "name"}
    key = cache.key(initial=hashlib.sha256(rm.initial.numpy().tobytes()).hexdigest(),
                    config=hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest(),
                    data=fingerprint_dataset(population, cols), seed=seed)
    hit = cache.tensor("shadow", key)
    if hit is not None and hit.numel() == rm.vector.numel():
        return hit
    labels = (run.manifest.get("extra") or {}).get("label_names")
    side = build_model_side(cfg, num_labels=len(labels) if labels else None, privacy=None)
    examples = side.trainer.attach_prefix(tokenize_examples(population, side.fm.tokenizer,
                                                            max_length=cfg.model.max_length, task=cfg.model.task))
    vector = rm.initial.clone()
    server_lr = float(cfg.server.server_lr)
    for r in tqdm(range(1, cfg.federation.rounds + 1), desc="shadow adapter", unit="round", disable=not progress,
                  leave=False):
        result = side.trainer.train(0, examples, vector, round=r, seed=seed + r)
        vector = vector + server_lr * result.delta
    cache.put_tensor("shadow", key, vector)
    return vector


def _records_table(parts: list[Any], task: str) -> Any:
    """One ``datasets.Dataset`` of ``text`` (and int ``label``) rows from several record tables."""
    import datasets

    texts = [t for ds in parts for t in ds["text"][:]]
    if task != "classification":
        return datasets.Dataset.from_dict({"text": texts})
    return datasets.Dataset.from_dict({"text": texts, "label": [int(y) for ds in parts for y in ds["label"][:]]})


def online_shadows(population: PopulationSource, cfg: Any, data: Any, settings: PrivacyAuditSettings, out_dir: Path
                   ) -> tuple[Any, Any, dict[str, Any]]:
    """Shadow federations for LiRA and RMIA: ``(ShadowSet, population z, info)``.

    Each shadow is the run's recipe (FM, adapters, clients, optimiser, rounds x local epochs, server pipeline, DP,
    dedup, the target's canaries; on the local engine, secure aggregation as its plaintext equivalent:
    :func:`~trustfl.attacks.membership.shadows.shadow_recipe`, listed in ``info["overrides"]``)
    trained by the federated loop on a random part of a pool holding the audited records (members and
    non-members), the RMIA population z and, if the pool is too small, more population rows. So every record is
    IN some shadows and OUT of others: online LiRA compares both Gaussians, offline LiRA uses the OUT ones only,
    RMIA averages all references (the online setting of Carlini et al. 2022, Sec. IV, and Zarifzadeh et al.
    2024). Shadows keep no holdout (``data.holdout_fraction = 0``) and draw ``in_fraction`` of the pool so that
    each trains on about as many records as the target did (overfitting depends on records per client).
    """
    import math

    from trustfl.attacks.membership import train_shadow_adapters
    from trustfl.config import RunConfig

    task = cfg.model.task
    cand = _records_table([data.members, data.nonmembers], task)
    excl = set(cand["text"])
    z = population.sample(exclude_texts=excl, n=settings.population, seed=settings.seed + 2)
    z = _records_table([z], task)
    trained = int(data.sampled_from.get("members", len(data.members)))  # records the target trained on
    keep = 1.0 - float(cfg.data.test_fraction)
    parts = [cand, z]
    short = math.ceil(2 * trained / keep) - len(cand) - len(z)
    if short > 0:
        try:
            parts.append(_records_table([population.sample(exclude_texts=excl | set(z["text"]), n=short,
                                                           seed=settings.seed + 3)], task))
        except PrivacyAuditError:
            pass  # the source is used up: shadows train on fewer records than the target (in_fraction 1/2)
    pool = _records_table(parts, task)
    in_fraction = min(0.5, trained / (keep * len(pool)))
    shadow_cfg = cfg.to_dict()
    shadow_cfg["data"]["holdout_fraction"] = 0.0
    shadow_set = train_shadow_adapters(RunConfig.from_dict(shadow_cfg), pool, settings.shadows, out_dir,
                                       in_fraction=in_fraction, progress=settings.progress)
    return shadow_set, z, {"count": len(shadow_set), "pool": len(pool), "population_z": len(z),
                           "in_fraction": round(in_fraction, 4), "target_trained_records": trained,
                           "mode": "online: the pool holds the audited records (each IN some shadows), "
                                   "shadow holdout_fraction = 0",
                           "overrides": shadow_set.overrides,
                           "train_seconds": [round(sh.train_seconds, 1) for sh in shadow_set.shadows]}


# ---------------------------------------------------------------------------------------------------- server view
def _server_view_missing(run: Any, data: Any) -> str:
    if run is None:
        return "needs the run directory's stored client updates"
    if "client" not in data.members.column_names:
        return "needs each record's client (records rebuilt from the run's config)"
    if not any(run.client_ids(r) for r in range(1, run.completed_rounds + 1)):
        return "the run stored no client updates (federation.save_client_updates = false or secure aggregation)"
    return ""


def _server_scores(cls: type, run: Any, rm: Any, records: Any, settings: PrivacyAuditSettings,
                   kw: dict[str, Any]) -> torch.Tensor:
    """The server's attack on each record from ITS client's stored updates of the last ``update_rounds`` rounds
    that client took part in (gradient alignment at the round's starting global adapter)."""
    scores = torch.zeros(len(records), dtype=torch.float64)
    clients = records["client"]
    for cid in sorted(set(clients)):
        idx = [i for i, c in enumerate(clients) if c == cid]
        rounds = [r for r in range(1, run.completed_rounds + 1) if str(cid) in run.client_ids(r)]
        rounds = rounds[-settings.update_rounds:]
        if not rounds:
            raise PrivacyAuditError(f"{run.path}: client {cid} has no stored update; cannot score its records")
        attack = cls().fit(updates=[run.client_update(r, cid)[0] for r in rounds],
                           global_vectors=[run.global_vector(r - 1) for r in rounds])
        scores[torch.tensor(idx)] = attack.score(rm.use(rm.vector), records.select(idx), **kw)
    rm.use(rm.vector)
    return scores


# ---------------------------------------------------------------------------------------------------- audit
def _scores(rm: Any, vector: torch.Tensor, records: Any, *, attack: Any, settings: PrivacyAuditSettings) -> torch.Tensor:
    model = rm.use(vector)
    return attack.score(model, records, tokenizer=rm.tokenizer, task=rm.task, max_length=rm.max_length,
                        batch_size=settings.batch_size, progress=settings.progress)


def membership_audit(rm: Any, data: Any, settings: PrivacyAuditSettings, *, cache: ScoreCache,
                     reference_vector: torch.Tensor | None = None, reference_note: str = "",
                     shadow_set: Any = None, population: Any = None, shadow_note: str = "",
                     run: Any = None) -> list[AttackOutcome]:
    """Run every attack of ``settings.attacks`` on ``data`` (a :class:`~trustfl.audits.privacy.records.MembershipData`)
    against ``rm`` (a :class:`~trustfl.audits.privacy.model.RunModel`).

    ``reference_vector``: the shadow adapter for reference-calibrated attacks (none: they are skipped, with why).
    ``shadow_set``: a :class:`~trustfl.attacks.membership.ShadowSet` from :func:`online_shadows`, whose pool holds
    the audited members and non-members: each audited record is IN some shadows and OUT of the others. ``lira``
    (offline) uses only the shadows OUT of each record, ``lira_online`` both sides, ``rmia`` all of them as
    references (online RMIA) and also compares with ``population`` records (non-members of the target).
    """
    from trustfl.attacks.membership import membership_metrics, per_record_loss

    classes = available_attacks()
    target_key = hashlib.sha256(rm.vector.numpy().tobytes()).hexdigest()
    data_key = data.fingerprint()
    ref_key = hashlib.sha256(reference_vector.numpy().tobytes()).hexdigest() if reference_vector is not None else None
    ref_losses: dict[str, torch.Tensor] = {}
    outcomes: list[AttackOutcome] = []
    shadow_losses: dict[str, torch.Tensor] = {}
    shadow_key = hashlib.sha256(json.dumps([sorted(s.members) for s in shadow_set.shadows]).encode()).hexdigest() \
        if shadow_set is not None else ""
    kw = dict(tokenizer=rm.tokenizer, task=rm.task, max_length=rm.max_length, batch_size=settings.batch_size,
              progress=settings.progress)
    bar = tqdm(settings.attacks, desc="membership attacks", unit="attack", disable=not settings.progress, leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        cls = classes.get(name)
        if cls is None:
            outcomes.append(AttackOutcome(name, skipped=f"not installed (available: {sorted(classes)})"))
            continue
        if rm.task not in cls.tasks:
            outcomes.append(AttackOutcome(name, skipped=f"does not support task {rm.task!r}"))
            continue
        calibration = cls.calibration  # declared by the attack: what this audit must build to fit it
        if calibration == "client_updates":
            why = _server_view_missing(run, data)
            if why:
                outcomes.append(AttackOutcome(name, skipped=why))
                continue
            ref_id: str | None = f"server-{settings.update_rounds}"
        elif calibration == "shadow_models":
            if shadow_set is None:
                outcomes.append(AttackOutcome(name, skipped=f"no shadow adapters: {shadow_note or 'shadows = 0'}"))
                continue
            ref_id = "online" + shadow_set.out_dir.name + str(len(shadow_set)) + shadow_key
        elif calibration == "reference_model":
            if reference_vector is None:
                outcomes.append(AttackOutcome(name, skipped=f"no shadow adapter: {reference_note or 'not trained'}"))
                continue
            ref_id = ref_key
        elif calibration == "none":
            ref_id = None
        else:
            outcomes.append(AttackOutcome(name, skipped=f"calibration {calibration!r}: references this audit does "
                                                        "not build"))
            continue
        key = ScoreCache.key(attack=name, target=target_key, data=data_key, ref=ref_id, max_length=rm.max_length)
        hit = cache.get(f"scores-{name}", key) if settings.cache else None
        if hit is not None:
            mem, non = torch.tensor(hit["members"], dtype=torch.float64), torch.tensor(hit["nonmembers"],
                                                                                       dtype=torch.float64)
        else:
            if calibration == "client_updates":
                mem, non = (_server_scores(cls, run, rm, getattr(data, side), settings, kw)
                            for side in ("members", "nonmembers"))
            elif calibration == "shadow_models":
                records = _records_table([data.members, data.nonmembers], rm.task)
                if not shadow_losses:
                    shadow_losses["all"] = shadow_set.losses(records, max_length=rm.max_length,
                                                             batch_size=settings.batch_size, progress=settings.progress)
                    shadow_losses["population"] = shadow_set.losses(population, max_length=rm.max_length,
                                                                    batch_size=settings.batch_size)
                # one fit over all records: the same score function for members and non-members
                attack = cls.from_shadow_models(shadow_losses=shadow_losses["all"],
                                                shadow_in=shadow_set.membership(records), population=population,
                                                population_losses=shadow_losses["population"])
                both = attack.score(rm.use(rm.vector), records, **kw)
                mem, non = both[:len(data.members)], both[len(data.members):]
            elif calibration == "reference_model":
                assert reference_vector is not None
                if not ref_losses:
                    ref_model = rm.use(reference_vector)
                    ref_losses = {side: per_record_loss(ref_model, getattr(data, side), **kw)
                                  for side in ("members", "nonmembers")}
                mem = cls().fit(reference_losses=ref_losses["members"]).score(rm.use(rm.vector), data.members, **kw)
                non = cls().fit(reference_losses=ref_losses["nonmembers"]).score(rm.use(rm.vector), data.nonmembers,
                                                                                 **kw)
            else:
                attack = cls()  # reference-free: LOSS, zlib, Min-K%, Min-K%++
                mem = _scores(rm, rm.vector, data.members, attack=attack, settings=settings)
                non = _scores(rm, rm.vector, data.nonmembers, attack=attack, settings=settings)
            cache.put(f"scores-{name}", key, {"members": mem.tolist(), "nonmembers": non.tolist()})
        metrics = membership_metrics(mem, non, fprs=settings.fprs, bootstrap=settings.bootstrap,
                                     confidence=settings.confidence, seed=settings.seed)
        outcomes.append(AttackOutcome(name, metrics=metrics.to_dict(), member_scores=mem.tolist(),
                                      nonmember_scores=non.tolist(), seconds=time.perf_counter() - t0,
                                      cached=hit is not None,
                                      config={"reference": _REFERENCE_NOTES[calibration].format(
                                          shadows=len(shadow_set) if shadow_set is not None else 0)}
                                      if _REFERENCE_NOTES[calibration] else {}))
    rm.use(rm.vector)
    return outcomes
