"""Shadow (reference) adapters trained by the real federated loop, cached and resumable.

LiRA and RMIA compare the target with models trained the same way on data drawn from the same
distribution (Shokri et al. 2017; Carlini et al. 2022, Section IV-A). Here a shadow is a LoRA
adapter trained by :class:`trustfl.federation.Federation` with the target's config (same FM,
adapters, partition scheme, local training, server pipeline, DP, dedup) on a random ``in_fraction``
of a pool of population records. What the shadows change (:func:`shadow_recipe`, recorded in
``shadows.json`` as ``overrides``): the local engine (where the training runs, not what it computes)
and secure aggregation as its plaintext equivalent (the secure sum is the plain sum; its norm bound and
its in-MPC DP noise are kept as ``norm_clip`` / ``[privacy.client]`` with the same B, z and delta).
They plant the target's canaries, as the target did: planting is part of its recipe. Measured on
examples/mia_audit.toml, where ~1/4 of the target's training records are canaries: shadows without
them fit the other records far harder (mean logit confidence ~60 vs the target's ~17) and LiRA fell to
chance (AUC 0.51 with 64 shadows, 0.59 with 16 canary-planting ones). The canary audit is calibrated by
the one-client shadow adapter, which plants none.
With adapters on the top blocks only, the frozen-prefix cache makes a shadow cost a fraction of a
full fine-tune.

Membership of the target's records: give a pool disjoint from them (offline attacks: every
candidate is OUT of every shadow), or a pool that contains the candidates (online LiRA: each
candidate is IN about half of the shadows). Which pool records a shadow trained on is
recorded as sha256 hashes (never the text) after the loop's own test/holdout splits.

Layout of ``out_dir``::

    shadows.json                 pool hashes, config, overrides, settings (refuses a different pool/config)
    shadow_000/adapter.safetensors, shadow_000/meta.json   (meta.json = done marker, written last)
    shadow_000/run/              the shadow's own run directory

A killed job resumes: finished shadows (``meta.json`` present) are reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from trustfl.attacks.membership._records import as_dataset, batch_losses
from trustfl.attacks.membership.errors import MembershipError

__all__ = ["ShadowSet", "record_hash", "shadow_recipe", "train_shadow_adapters"]

_FORMAT = "trustfl-shadows/1"


def record_hash(text: str, label: int | None = None) -> str:
    """sha256 of a record's text (and label): how shadows remember their members without keeping text."""
    return hashlib.sha256(json.dumps([text, label]).encode()).hexdigest()


def _hashes(ds: Any, task: str) -> list[str]:
    labels = ds["label"][:] if task == "classification" else [None] * len(ds)
    return [record_hash(t, y) for t, y in zip(ds["text"][:], labels)]


def _write_json(path: Path, data: Any) -> None:
    from trustfl.rundir.atomic import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())


@dataclass
class ShadowInfo:
    index: int
    path: Path
    seed: int
    members: frozenset[str]  # record hashes trained on
    train_seconds: float


class ShadowSet:
    """Trained shadow adapters: which records each trained on, and their per-record losses.

    Build with :func:`train_shadow_adapters` (or ``ShadowSet.open(out_dir)`` for a finished set).
    """

    def __init__(self, out_dir: Path, config: Any, shadows: list[ShadowInfo], num_labels: int | None,
                 overrides: dict[str, str] | None = None) -> None:
        self.out_dir, self.config, self.shadows, self.num_labels = out_dir, config, shadows, num_labels
        self.overrides: dict[str, str] = dict(overrides or {})  # target setting -> what the shadows use, and why
        self._side: Any = None

    def __len__(self) -> int:
        return len(self.shadows)

    @classmethod
    def open(cls, out_dir: str | Path) -> "ShadowSet":
        """The finished shadows of ``out_dir`` (error if none)."""
        from trustfl.config import RunConfig

        out_dir = Path(out_dir)
        head = out_dir / "shadows.json"
        if not head.is_file():
            raise MembershipError(f"{out_dir}: no shadows.json; not a shadow directory (train_shadow_adapters)")
        info = json.loads(head.read_text())
        shadows = [_read_meta(p) for p in sorted(out_dir.glob("shadow_*/meta.json"))]
        if not shadows:
            raise MembershipError(f"{out_dir}: no finished shadow adapters")
        return cls(out_dir, RunConfig.from_dict(info["config"]), shadows, info["num_labels"], info.get("overrides"))

    def membership(self, records: Any) -> torch.Tensor:
        """``[m, n]`` bool: did shadow i train on record j (matched by text and label)?"""
        task = self.config.model.task
        hashes = _hashes(as_dataset(records, task=task), task)
        return torch.tensor([[h in s.members for h in hashes] for s in self.shadows], dtype=torch.bool)

    def _model_side(self) -> Any:
        if self._side is None:
            from trustfl.federation.setup import build_model_side

            self._side = build_model_side(self.config, num_labels=self.num_labels, privacy=None)
        return self._side

    def model(self, index: int) -> tuple[torch.nn.Module, Any]:
        """``(model, tokenizer)`` with shadow ``index``'s adapter loaded (one model object, reloaded per call)."""
        side = self._model_side()
        side.layout.load_into(side.model, _load_vector(self.shadows[index].path, side.layout.size))
        return side.model, side.fm.tokenizer

    @torch.no_grad()
    def losses(self, records: Any, *, max_length: int | None = None, batch_size: int = 32,
               progress: bool = False) -> torch.Tensor:
        """``[m, n]`` float64 per-record losses of every shadow (as :func:`per_record_loss`).

        The records are tokenized once and, with top-block adapters, their frozen prefix is
        computed once and replayed for every shadow (the training path's cache).
        """
        from trustfl.federation.clients import tokenize_examples

        task = self.config.model.task
        ds = as_dataset(records, task=task)
        side = self._model_side()
        max_length = self.config.model.max_length if max_length is None else max_length
        cols = ["text"] + (["label"] if task == "classification" else [])
        examples = tokenize_examples(ds.select_columns(cols), side.fm.tokenizer, max_length=max_length, task=task)
        need = 2 if task == "causal_lm" else 1
        short = [i for i, ex in enumerate(examples) if ex["input_ids"].numel() < need]
        if short:
            raise MembershipError(f"records: {len(short)} record(s) (first: {short[0]}) tokenize to fewer than {need} "
                                  "token(s)")
        trainer = side.trainer
        examples = trainer.attach_prefix(examples)
        order = sorted(range(len(examples)), key=lambda i: int(examples[i]["input_ids"].shape[0]))
        out = torch.empty((len(self.shadows), len(examples)), dtype=torch.float64)
        model = side.model
        was_training = model.training
        model.eval()
        try:
            for s in tqdm(range(len(self.shadows)), desc="shadow losses", disable=not progress, leave=False):
                side.layout.load_into(model, _load_vector(self.shadows[s].path, side.layout.size))
                for start in range(0, len(order), batch_size):
                    idx = order[start:start + batch_size]
                    batch = trainer.batcher([examples[i] for i in idx])
                    logits = trainer.forward(batch, with_labels=False).logits.detach()
                    out[s, torch.tensor(idx)] = batch_losses(logits, batch, task=task).loss
        finally:
            model.train(was_training)
        if not torch.isfinite(out).all():
            raise MembershipError("shadow losses: NaN/Inf values; is a shadow adapter non-finite?")
        return out


def _load_vector(path: Path, size: int) -> torch.Tensor:
    from safetensors.torch import load_file

    file = path / "adapter.safetensors"
    try:
        vector = load_file(str(file))["vector"]
    except Exception as exc:
        raise MembershipError(f"{file}: cannot read the shadow adapter ({exc}); delete {path} to retrain it") from exc
    if vector.ndim != 1 or vector.numel() != size or not torch.isfinite(vector).all():
        raise MembershipError(f"{file}: adapter of shape {tuple(vector.shape)} (expected ({size},), finite); "
                              f"delete {path} to retrain it")
    return vector


def _read_meta(meta: Path) -> ShadowInfo:
    try:
        data = json.loads(meta.read_text())
        return ShadowInfo(index=int(data["index"]), path=meta.parent, seed=int(data["seed"]),
                          members=frozenset(data["members"]), train_seconds=float(data["train_seconds"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MembershipError(f"{meta}: unreadable shadow metadata ({exc}); delete {meta.parent} to retrain") from exc


def _config_changes(old: Any, new: Any, default: Any, prefix: str = "") -> list[str]:
    """Leaf keys whose value differs between two config dicts. A key the old config lacks is no change when the
    new value is the current default (a setting added to trustfl since, left at its default, e.g. a new plug-in
    section that is off): the shadows were trained the same way."""
    out: list[str] = []
    for k in sorted(set(old) | set(new)):
        name, d = f"{prefix}{k}", default.get(k) if isinstance(default, dict) else None
        if k not in old:
            if new[k] != d:
                out.append(name)
        elif k not in new:
            out.append(name)
        elif isinstance(old[k], dict) and isinstance(new[k], dict):
            out.extend(_config_changes(old[k], new[k], d if isinstance(d, dict) else {}, f"{name}."))
        elif old[k] != new[k]:
            out.append(name)
    return out


def shadow_recipe(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The config a shadow federation trains with, from the target's config dict, and what it overrides.

    Returns ``(recipe, overrides)``; ``overrides`` maps each changed setting to what the shadows use and why.
    Kept as is: model, LoRA, data recipe, partition, client optimiser, server pipeline, ``[privacy]``, dedup,
    ``[canaries]`` (the target's training records included them).

    Raises:
        MembershipError: secure aggregation with ``over_bound = "zero"`` and no DP noise (no plaintext stage
            reproduces "leave an over-bound update out of the sum").
    """
    from trustfl.config import RunConfig

    recipe = json.loads(json.dumps(config))
    default = RunConfig().to_dict()
    out: dict[str, str] = {}
    fed = recipe["federation"]
    if fed.get("engine", "local") != "local":
        out["federation.engine"] = (f"{fed['engine']!r} -> 'local': the engine decides where the same training runs, "
                                    "not what it computes")
        fed["engine"] = "local"
    if "flower" in fed and fed["flower"] != default["federation"]["flower"]:
        out["federation.flower"] = "defaults: settings of the Flower engine only (SecAgg+ is a secure FedAvg sum)"
        fed["flower"] = dict(default["federation"]["flower"])
    sa = recipe.get("secure_aggregation") or {}
    if sa.get("enabled"):
        bound, z = sa.get("norm_bound"), sa.get("noise_multiplier")
        what = "off (the secure sum is the plain FedAvg sum)"
        if z is not None:
            recipe.setdefault("privacy", {})["client"] = {"noise_multiplier": z, "clip_norm": bound,
                                                          "delta": sa.get("delta", 1e-5),
                                                          "max_epsilon": sa.get("max_epsilon")}
            what += (f"; its client-level DP kept as [privacy.client] noise_multiplier = {z}, clip_norm = {bound} "
                     "(the same release: clip to B, N(0, z^2 B^2) on the sum, divided by qN)")
        elif bound is not None:
            if sa.get("over_bound", "scale") != "scale":
                raise MembershipError("shadows: secure_aggregation.over_bound = 'zero' (over-bound updates left out of "
                                      "the sum) has no plaintext stage to reproduce it; audit with --shadows 0 or "
                                      "train the target with over_bound = 'scale'")
            recipe["server"]["pre"] = [*recipe["server"].get("pre", []), {"name": "norm_clip", "max_norm": bound}]
            what += f"; its norm bound kept as server.pre norm_clip(max_norm = {bound})"
        if sa.get("cosine_threshold") is not None:
            what += "; cosine_threshold dropped (it only reveals flags, the sum is unchanged)"
        out["secure_aggregation"] = what
        recipe["secure_aggregation"] = dict(default["secure_aggregation"])
    return recipe, out


def _num_labels(ds: Any) -> int:
    from datasets import ClassLabel

    feature = ds.features.get("label")
    if isinstance(feature, ClassLabel):
        return len(feature.names)
    return int(max(ds["label"][:])) + 1


def train_shadow_adapters(config: Any, population: Any, n: int, out_dir: str | Path, *, in_fraction: float = 0.5,
                          rounds: int | None = None, progress: bool = False) -> ShadowSet:
    """Train (or reuse) ``n`` shadow adapters with the federated loop on random subsets of ``population``.

    Args:
        config: the target's :class:`~trustfl.config.RunConfig` (shadows copy it as :func:`shadow_recipe`
            rewrites it; seed, name and data are replaced per shadow; ``rounds`` overrides ``federation.rounds``).
        population: records (``datasets.Dataset`` or list of dicts: ``text``, ``label``, and the
            partition's ``key_column`` if it partitions by key) the shadows draw from.
        n: number of shadows (>= 1).
        out_dir: cache folder (keep it inside the audited run directory: it briefly holds the
            subset's text while a shadow trains, then only hashes).
        in_fraction: fraction of the pool each shadow draws (before the loop's own test/holdout splits).
        progress: progress bar over shadows (and the loop's own bars).

    Raises:
        MembershipError: bad arguments, a population missing a class or a column, a config
            :func:`shadow_recipe` cannot reproduce, or an ``out_dir`` holding shadows of a different pool or recipe.
    """
    from trustfl.config import RunConfig
    from trustfl.federation import Federation
    from trustfl.seeding import derive_seed

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MembershipError(f"n={n!r}: the number of shadow models must be an integer >= 1")
    if not 0.0 < in_fraction <= 1.0:
        raise MembershipError(f"in_fraction={in_fraction!r}: must be in (0, 1]")
    if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1):
        raise MembershipError(f"rounds={rounds!r}: must be an integer >= 1 or None (the config's)")
    if not isinstance(config, RunConfig):
        raise MembershipError(f"config: expected a trustfl RunConfig, got {type(config).__name__}")
    task = config.model.task
    pool = as_dataset(population, task=task)
    if task != "classification":
        pool = pool.add_column("label", [0] * len(pool)) if "label" not in pool.column_names else pool
    blank = [i for i, t in enumerate(pool["text"][:]) if not t.strip()]
    if blank:
        raise MembershipError(f"population: {len(blank)} record(s) (first: {blank[0]}) have an empty text; drop them")
    key = config.partition.key_column if config.partition.scheme == "key" else None
    if key is not None and key not in pool.column_names:
        raise MembershipError(f"population: column {key!r} (partition.key_column) is missing; columns: "
                              f"{pool.column_names}")
    num_labels = _num_labels(pool) if task == "classification" else None
    base, overrides = shadow_recipe(config.to_dict())
    if rounds is not None:
        base["federation"]["rounds"] = rounds
    base["federation"]["save_client_updates"] = False
    base["data"].update(max_records=None, text_column="text", label_column="label")
    pool_hashes = _hashes(pool, task)
    out_dir = Path(out_dir)
    head = out_dir / "shadows.json"
    settings = {"format": _FORMAT, "pool_sha256": hashlib.sha256("".join(pool_hashes).encode()).hexdigest(),
                "pool_size": len(pool), "in_fraction": in_fraction, "config": base, "overrides": overrides,
                "num_labels": num_labels}
    if head.is_file():
        old = json.loads(head.read_text())
        old.setdefault("overrides", {})  # written before overrides were recorded: the config says what was trained
        diff = sorted(k for k in settings if k != "config" and old.get(k) != settings[k])
        changed = _config_changes(old.get("config") or {}, base, RunConfig().to_dict())
        if diff or changed:
            raise MembershipError(f"{out_dir}: holds shadows trained with a different "
                                  f"{diff + [f'config {c}' for c in changed[:5]]}; use another out_dir or delete it")
        settings["config"] = old["config"]  # keys added since (at their defaults) do not rewrite the record
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise MembershipError(f"{out_dir}: exists, is not empty and is not a shadow directory; refusing to write there")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(head, settings)
    texts, labels = pool["text"][:], pool["label"][:]
    keys = pool[key][:] if key else None
    for i in tqdm(range(n), desc="shadow adapters", disable=not progress, unit="shadow"):
        sdir = out_dir / f"shadow_{i:03d}"
        if (sdir / "meta.json").is_file():
            continue
        if sdir.exists():
            shutil.rmtree(sdir)  # an unfinished shadow: retrain from scratch
        sdir.mkdir()
        seed = derive_seed(config.seed, "shadow", i) % 2**31
        gen = torch.Generator().manual_seed(seed)
        chosen = sorted(torch.randperm(len(pool), generator=gen)[:max(1, round(in_fraction * len(pool)))].tolist())
        if task == "classification":
            missing = sorted(set(range(num_labels)) - {int(labels[j]) for j in chosen})  # type: ignore[arg-type]
            if missing:
                raise MembershipError(f"shadow {i}: its random subset of the population lacks classes {missing}; "
                                      "give a larger population or a larger in_fraction")
        data_file = sdir / ".subset.jsonl"
        with open(data_file, "w", encoding="utf-8") as fh:
            for j in chosen:
                row = {"text": texts[j], "label": f"{int(labels[j]) if task == 'classification' else 0:06d}"}
                if key:
                    row[key] = keys[j]  # type: ignore[index]
                fh.write(json.dumps(row) + "\n")
        cfg_dict = json.loads(json.dumps(base))
        cfg_dict.update(seed=seed, name=f"shadow-{i:03d}")
        cfg_dict["data"]["name"] = str(data_file)
        try:
            cfg = RunConfig.from_dict(cfg_dict)
            fed = Federation(cfg, out_dir=sdir / "run", overwrite=True, progress=False)
            import time

            t0 = time.perf_counter()
            fed.run()
            seconds = time.perf_counter() - t0
            row_ids = sorted({int(r) for d in fed.client_train.values() for r in d["row_id"][:]})
            members = sorted({pool_hashes[chosen[r]] for r in row_ids})
        finally:
            data_file.unlink(missing_ok=True)
        from safetensors.torch import save

        from trustfl.rundir.atomic import atomic_write_bytes

        atomic_write_bytes(sdir / "adapter.safetensors",
                           save({"vector": fed.global_vector.detach().to(torch.float32).contiguous()}))
        _write_json(sdir / "meta.json", {"index": i, "seed": seed, "members": members, "train_seconds": seconds,
                                         "rounds": cfg.federation.rounds, "layout_size": fed.layout.size})
    shadows = [_read_meta(out_dir / f"shadow_{i:03d}" / "meta.json") for i in range(n)]
    return ShadowSet(out_dir, RunConfig.from_dict(base), shadows, num_labels, overrides)
