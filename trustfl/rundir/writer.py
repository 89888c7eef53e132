"""Record a federated run into a run directory, one committed round at a time.

Write order inside a round: tensors (each atomically), then ``metrics.jsonl``, then
``manifest.json``. The manifest write is the commit point: a process killed at any moment
leaves the previous complete round intact, and :meth:`RunWriter.resume` discards whatever
the interrupted round had already written.
"""

from __future__ import annotations

import copy
import json
import operator
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from trustfl.rundir.atomic import TEMP_PREFIX, atomic_write_bytes, fsync_dir, safetensors_bytes
from trustfl.rundir.errors import (
    ConfigMismatchError,
    InvalidTensorError,
    RoundOrderError,
    RunDirError,
    RunDirExistsError,
    advice,
)
from trustfl.rundir.manifest import (
    FORMAT,
    GLOBALS_DIR,
    MANIFEST_NAME,
    METRICS_NAME,
    STATE_DIR,
    UPDATES_DIR,
    client_filename,
    dumps_manifest,
    global_relpath,
    layout_size,
    new_manifest,
    normalize_client_id,
    parse_round_from_relpath,
    state_relpath,
    to_jsonable,
    update_relpath,
)
from trustfl.rundir.reader import RunDir
from trustfl.rundir.signing import (
    SigningKeyError,
    as_private_key,
    genesis_hash,
    is_signed,
    key_id,
    record_hash,
    sign_manifest,
    signer,
)

__all__ = ["RunWriter"]

_KNOWN_ENTRIES = frozenset({MANIFEST_NAME, METRICS_NAME, GLOBALS_DIR, UPDATES_DIR, STATE_DIR})


def _check_vector(t: object, *, d: int, what: str) -> torch.Tensor:
    """Validate a flat float32 vector of size ``d``; ``what`` names it in errors."""
    if not isinstance(t, torch.Tensor):
        raise InvalidTensorError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise InvalidTensorError(
            f"{what} has dtype {t.dtype}; the run directory stores float32 vectors. Convert "
            "explicitly with .float() if the precision loss is intended"
        )
    if t.ndim != 1 or t.numel() != d:
        raise InvalidTensorError(
            f"{what} has shape {tuple(t.shape)}; expected a flat vector of shape ({d},) "
            "(d = total size of the layout's shapes)"
        )
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise InvalidTensorError(
            f"{what} has {bad} non-finite value(s) (NaN/Inf); nothing was written for this round"
        )
    return t


class RunWriter:
    """Writes a run directory. Create with :meth:`create` or :meth:`resume`, not directly.

    Example:
        >>> import tempfile, torch
        >>> layout = {"names": ["w"], "shapes": [[4]], "dtype": "float32"}
        >>> w = RunWriter.create(tempfile.mkdtemp() + "/run", config={"lr": 0.1},
        ...                      layout=layout, seeds={"global": 0})
        >>> w.write_initial(torch.zeros(4))
        >>> w.write_round(1, global_vector=torch.ones(4),
        ...               client_updates={3: (torch.ones(4), 10)}, metrics={"loss": 0.5})
        >>> w.completed_rounds
        1
    """

    def __init__(self, path: Path, manifest: dict[str, Any], metrics_bytes: bytes, *, _token: object,
                 signing_key: Any = None) -> None:
        if _token is not _TOKEN:
            raise RunDirError("use RunWriter.create(...) or RunWriter.resume(...) to get a writer")
        self._root = path
        self._manifest = manifest
        self._d = layout_size(manifest["layout"])
        self._metrics_bytes = metrics_bytes
        self._key = signing_key  # Ed25519 private key object (never written anywhere) or None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        config: Mapping[str, Any],
        layout: Mapping[str, Any],
        seeds: Mapping[str, Any],
        fingerprints: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        signing_key: Any = None,
    ) -> RunWriter:
        """Start a new run directory at ``path`` and write its manifest (0 completed rounds).

        Args:
            path: directory to create (parents too); may exist if empty.
            config: the run config (JSON-able dict; NaN rejected).
            layout: JSON-able description of the flat vector; ``layout["shapes"]`` fixes ``d``.
            seeds: the seeds of the run.
            fingerprints: dataset / model name -> sha256.
            extra: free JSON-able dict (see :meth:`update_extra`).
            overwrite: replace an existing trustfl run directory. Only a directory whose
                manifest.json is a trustfl manifest and which holds nothing but run files
                is deleted; anything else is refused.
            signing_key: sign the manifest at every commit with this Ed25519 private key (a key
                object, or the path of its PEM file from ``trustfl keygen``; a path inside ``path``
                is refused). Check with ``RunDir(path).verify(public_key=...)``.

        Raises:
            RunDirExistsError: ``path`` is non-empty and ``overwrite`` is False, or it is not
                a trustfl run directory and would have to be deleted.
            SigningKeyError: ``signing_key`` cannot be loaded or lies inside ``path``.
            RunDirError: an argument is invalid.
        """
        root = Path(path)
        key = None if signing_key is None else as_private_key(signing_key, run_dir=root)
        manifest = new_manifest(
            config=config, layout=layout, seeds=seeds, fingerprints=fingerprints, extra=extra
        )
        if root.exists() and not root.is_dir():
            raise RunDirExistsError(f"run directory path {root} exists and is not a directory")
        if root.is_dir() and any(root.iterdir()):
            if not overwrite:
                raise RunDirExistsError(
                    f"run directory {root} already exists and is not empty. "
                    + advice("Pass overwrite=True to replace it (only a trustfl run directory is deleted), "
                             "use RunWriter.resume(path) to continue it, or choose another path",
                             "Pass --overwrite to replace it (only a trustfl run directory is deleted), "
                             "--resume to continue it, or choose another --out")
                )
            _remove_run_dir(root)
        root.mkdir(parents=True, exist_ok=True)
        fsync_dir(root.parent)
        writer = cls(root, manifest, b"", _token=_TOKEN, signing_key=key)
        manifest["files"][METRICS_NAME] = atomic_write_bytes(root / METRICS_NAME, b"")
        writer._commit(manifest)
        return writer

    @classmethod
    def resume(
        cls, path: str | os.PathLike[str], *, config: Mapping[str, Any] | None = None,
        signing_key: Any = None, complete_recorded: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> RunWriter:
        """Continue a run after its last committed round.

        Verifies every file the manifest lists (sha256 + parse), the hash chain and, for a
        signed run, the signature against ``signing_key``'s public key; then deletes what an
        interrupted round left behind (its tensors, temp files, uncommitted metrics lines).

        Args:
            path: an existing run directory.
            config: if given, must equal the recorded config (compared after JSON conversion).
            complete_recorded: fills the recorded config's missing settings with today's defaults
                before the comparison (e.g. ``RunConfig.from_dict(c).to_dict()``), so a run recorded
                before a setting existed resumes when that setting is left at its default. Only
                missing keys can change this way; if it fails, the recorded config is compared as is.
            signing_key: required for a signed run (its private key, object or PEM path; every
                later commit is re-signed); refused for an unsigned one.

        Raises:
            CorruptRunError: a recorded file is missing, modified or unparsable.
            SignatureError: the signed manifest was changed after signing.
            SigningKeyError: a signed run without its key, another key, or a key for an unsigned run.
            ConfigMismatchError: ``config`` differs; lists every differing leaf key.
        """
        run = RunDir(path)
        manifest = run.manifest
        key = None if signing_key is None else as_private_key(signing_key, run_dir=run.path)
        if is_signed(manifest) and key is None:
            raise SigningKeyError(
                f"run {run.path} is signed by {signer(manifest)}; resuming re-signs every commit and needs that "
                f"private key: {advice('pass signing_key=', 'pass --sign-key FILE')}")
        if key is not None and not is_signed(manifest):
            raise SigningKeyError(
                f"run {run.path} is unsigned; a signature added now would vouch for a history nobody signed. "
                f"Resume it without a signing key, or start a new signed run")
        if key is not None and signer(manifest) != key_id(key.public_key()):
            raise SigningKeyError(
                f"run {run.path} is signed by {signer(manifest)}, not by the given key {key_id(key.public_key())}")
        report = run.verify(public_key=None if key is None else key.public_key())
        if config is not None:
            given = to_jsonable(config, where="config", nan="raise")
            diffs = _config_diff(_completed(manifest["config"], complete_recorded), given)
            if diffs:
                raise ConfigMismatchError(run.path, diffs)
        root = run.path
        for rel in report.incomplete:
            if rel.startswith(METRICS_NAME):
                continue
            (root / rel).unlink(missing_ok=True)
        updates = root / UPDATES_DIR
        if updates.is_dir():
            last = len(manifest["rounds"]) - 1
            for sub in updates.iterdir():
                r = parse_round_from_relpath(f"{UPDATES_DIR}/{sub.name}")
                if sub.is_dir() and r is not None and r > last and not any(sub.iterdir()):
                    sub.rmdir()
        lines = (root / METRICS_NAME).read_bytes().splitlines(keepends=True)
        metrics_bytes = b"".join(lines[: manifest["completed_rounds"]])
        if len(lines) > manifest["completed_rounds"]:
            atomic_write_bytes(root / METRICS_NAME, metrics_bytes)
        return cls(root, manifest, metrics_bytes, _token=_TOKEN, signing_key=key)

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> Path:
        """The run directory."""
        return self._root

    @property
    def completed_rounds(self) -> int:
        """Number of committed training rounds."""
        return int(self._manifest["completed_rounds"])

    @property
    def d(self) -> int:
        """Size of every global / update vector."""
        return self._d

    @property
    def manifest(self) -> dict[str, Any]:
        """A deep copy of the last committed manifest."""
        return copy.deepcopy(self._manifest)

    # ------------------------------------------------------------------ writes
    def write_initial(self, vector: torch.Tensor) -> None:
        """Record the initial global vector as round 0 (``globals/round_0000.safetensors``).

        Raises:
            RoundOrderError: round 0 was already written.
            InvalidTensorError: ``vector`` is not a finite float32 tensor of shape ``(d,)``.
        """
        if self._manifest["rounds"]:
            raise RoundOrderError(
                f"the initial global (round 0) of {self._root} was already written; "
                f"next is write_round({self.completed_rounds + 1}, ...)"
            )
        _check_vector(vector, d=self._d, what="initial global vector (round 0)")
        manifest = copy.deepcopy(self._manifest)
        rel = global_relpath(0)
        manifest["files"][rel] = self._write_tensors(
            rel, {"vector": vector}, {"round": "0", "kind": "global"}
        )
        manifest["rounds"].append(
            {"round": 0, "global": rel, "updates": {}, "state": None, "metrics": None,
             "prev": genesis_hash(manifest), "sha256": {rel: manifest["files"][rel]}}
        )
        self._commit(manifest)

    def write_round(
        self,
        round: int,
        *,
        global_vector: torch.Tensor,
        client_updates: Mapping[str | int, tuple[torch.Tensor, int]] | None = None,
        metrics: Mapping[str, Any] | None = None,
        state: Mapping[str, torch.Tensor] | None = None,
        component_state: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record and commit one round (one manifest commit, whatever the round carries).

        Everything is validated before anything is written; on any error the previous
        round stays the last committed one.

        Args:
            round: must be ``completed_rounds + 1``.
            global_vector: the global after this round, float32 ``(d,)``, finite.
            client_updates: client id (non-negative int, zero-padded in the file name, or a
                filename-safe str) -> ``(delta (d,) float32 finite, num_samples >= 0)``.
                ``num_samples`` is recorded as reported (untrusted), not used.
            metrics: JSON-able dict; numpy/torch scalars are converted, NaN/Inf are written
                as ``null``. The key ``"round"`` is reserved. Dict keys (at any depth) may be
                str or int, like the client ids of ``client_updates`` (e.g. per-client
                metrics ``{0: {"loss": ...}}``); JSON keys are strings, so int keys are
                written, and read back, as str (``0`` -> ``"0"``). ``0`` and ``"0"`` in one
                dict collide and are rejected.
            state: server state tensors (any shapes/dtypes) needed to resume.
            component_state: JSON state of the run components (accountants, ...) needed to
                resume, by component name; recorded in the round's manifest entry.
            extra: merged into the manifest's ``extra`` dict in the same commit (e.g. ε so far).

        Raises:
            RoundOrderError: ``round`` is not ``completed_rounds + 1`` or round 0 is missing.
            InvalidTensorError: a vector is mis-shaped, not float32 or non-finite (names the
                client and round).
            RunDirError: a client id, sample count, metric or state entry is invalid.
        """
        expected = self.completed_rounds + 1
        if isinstance(round, bool) or not isinstance(round, int) or round != expected:
            raise RoundOrderError(
                f"round={round!r} is out of order for {self._root}: {self.completed_rounds} "
                f"round(s) are committed, so the next round must be {expected}"
            )
        if not self._manifest["rounds"]:
            raise RoundOrderError(
                f"write_initial(vector) must be called before write_round({round}, ...) "
                "so that round 0 (the initial global) is recorded"
            )
        _check_vector(global_vector, d=self._d, what=f"global_vector of round {round}")
        updates = self._validate_updates(round, client_updates)
        metrics_json = self._validate_metrics(round, metrics)
        state = self._validate_state(round, state)
        components = to_jsonable(dict(component_state or {}), where=f"component_state of round {round}",
                                 nan="raise")
        extra_json = to_jsonable(dict(extra or {}), where="extra", nan="raise")

        self._discard_uncommitted()
        manifest = copy.deepcopy(self._manifest)
        files = manifest["files"]
        rnd = str(round)
        grel = global_relpath(round)
        files[grel] = self._write_tensors(grel, {"vector": global_vector}, {"round": rnd, "kind": "global"})
        record_updates: dict[str, dict[str, Any]] = {}
        for cid, (fname, delta, n) in updates.items():
            urel = update_relpath(round, fname)
            meta = {"round": rnd, "kind": "update", "client_id": cid, "num_samples": str(n)}
            files[urel] = self._write_tensors(urel, {"delta": delta}, meta)
            record_updates[cid] = {"file": urel, "num_samples": n}
        srel = None
        if state is not None:
            srel = state_relpath(round)
            files[srel] = self._write_tensors(srel, state, {"round": rnd, "kind": "state"})
        line = json.dumps({"round": round, **metrics_json}, allow_nan=False).encode() + b"\n"
        metrics_bytes = self._metrics_bytes + line
        files[METRICS_NAME] = atomic_write_bytes(self._root / METRICS_NAME, metrics_bytes)
        record = {
            "round": round,
            "global": grel,
            "updates": record_updates,
            "state": srel,
            "components": components,
            "metrics": metrics_json,
        }
        previous = manifest["rounds"][-1]
        if "prev" in manifest["rounds"][0]:  # hash chain (runs written before it have none)
            named = [grel, *(e["file"] for e in record_updates.values()), *([srel] if srel else [])]
            record["prev"] = record_hash(previous)
            record["sha256"] = {rel: files[rel] for rel in named}
        manifest["rounds"].append(record)
        manifest["extra"].update(extra_json)
        manifest["completed_rounds"] = round
        self._commit(manifest)
        self._metrics_bytes = metrics_bytes

    def update_extra(self, **kv: Any) -> None:
        """Merge ``kv`` into the manifest's ``extra`` dict and commit atomically.

        Example: ``writer.update_extra(dp={"epsilon": 2.9, "delta": 1e-5})``.
        """
        value = to_jsonable(kv, where="extra", nan="raise")
        manifest = copy.deepcopy(self._manifest)
        manifest["extra"].update(value)
        self._commit(manifest)

    # ------------------------------------------------------------------ internals
    def _commit(self, manifest: dict[str, Any]) -> None:
        """Atomically write ``manifest`` (the commit point, signed when a key was given); adopt it only on success."""
        if self._key is not None:
            sign_manifest(manifest, self._key)
        atomic_write_bytes(self._root / MANIFEST_NAME, dumps_manifest(manifest))
        self._manifest = manifest

    def _write_tensors(
        self, rel: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
    ) -> str:
        path = self._root / rel
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(path.parent.parent)
        return atomic_write_bytes(path, safetensors_bytes(tensors, metadata))

    def _discard_uncommitted(self) -> None:
        """Remove files of rounds above the committed ones (left by a failed write_round)."""
        last = len(self._manifest["rounds"]) - 1
        for top in (GLOBALS_DIR, STATE_DIR, UPDATES_DIR):
            base = self._root / top
            if not base.is_dir():
                continue
            for p in base.iterdir():
                r = parse_round_from_relpath(f"{top}/{p.name}")
                if r is not None and r > last:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                elif p.name.startswith(TEMP_PREFIX):
                    p.unlink()

    def _validate_updates(
        self, round: int, client_updates: Mapping[str | int, tuple[torch.Tensor, int]] | None
    ) -> dict[str, tuple[str, torch.Tensor, int]]:
        if client_updates is None:
            return {}
        if not isinstance(client_updates, Mapping):
            raise RunDirError(
                f"client_updates of round {round} must be a dict client_id -> (delta, num_samples), "
                f"got {type(client_updates).__name__}"
            )
        out: dict[str, tuple[str, torch.Tensor, int]] = {}
        fnames: dict[str, str] = {}
        for key, value in client_updates.items():
            cid = normalize_client_id(key)
            fname = client_filename(key)
            if cid in out or fname in fnames:
                other = cid if cid in out else fnames[fname]
                raise RunDirError(
                    f"client_id {key!r} in round {round} collides with client {other!r} "
                    f"(ids are stored as str; file {fname})"
                )
            if not isinstance(value, tuple) or len(value) != 2:
                raise RunDirError(
                    f"client_updates[{key!r}] of round {round} must be a tuple (delta, num_samples), "
                    f"got {type(value).__name__}"
                )
            delta, n = value
            _check_vector(delta, d=self._d, what=f"update of client {cid!r} in round {round}")
            try:
                if isinstance(n, bool):
                    raise TypeError
                n = operator.index(n)
            except TypeError:
                raise RunDirError(
                    f"num_samples of client {cid!r} in round {round} must be an int, got {n!r}"
                ) from None
            if n < 0:
                raise RunDirError(f"num_samples of client {cid!r} in round {round} must be >= 0, got {n}")
            out[cid] = (fname, delta, n)
            fnames[fname] = cid
        return out

    @staticmethod
    def _validate_metrics(round: int, metrics: Mapping[str, Any] | None) -> dict[str, Any]:
        if metrics is None:
            return {}
        if not isinstance(metrics, Mapping):
            raise RunDirError(f"metrics of round {round} must be a dict, got {type(metrics).__name__}")
        out = to_jsonable(_str_metric_keys(metrics, where=f"metrics of round {round}"),
                          where=f"metrics of round {round}", nan="null")
        if "round" in out:
            if out["round"] != round:
                raise RunDirError(
                    f"metrics of round {round} contain 'round'={out['round']!r}; the key 'round' "
                    "is reserved for the round number, rename it"
                )
            del out["round"]
        return out

    @staticmethod
    def _validate_state(
        round: int, state: Mapping[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor] | None:
        if state is None:
            return None
        if not isinstance(state, Mapping):
            raise RunDirError(
                f"state of round {round} must be a dict str -> Tensor, got {type(state).__name__}"
            )
        for k, v in state.items():
            if not isinstance(k, str) or not k:
                raise RunDirError(
                    f"state of round {round} has an invalid key {k!r}; keys must be non-empty str"
                )
            if not isinstance(v, torch.Tensor):
                raise RunDirError(
                    f"state[{k!r}] of round {round} must be a torch.Tensor, got {type(v).__name__}"
                )
        return dict(state)


_TOKEN = object()


def _str_metric_keys(value: Any, *, where: str) -> Any:
    """``value`` with int dict keys (at any depth) turned into str, as JSON stores them; other values as is."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            key = k
            if not isinstance(k, (str, bool)):
                try:
                    key = str(operator.index(k))  # int, numpy / torch integers
                except TypeError:
                    key = k  # to_jsonable names the bad key
            if key in out:
                raise RunDirError(f"{where} has keys {k!r} and {key!r}; int keys are stored as str, so they collide")
            out[key] = _str_metric_keys(v, where=f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_str_metric_keys(v, where=f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _completed(recorded: Mapping[str, Any], complete: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None
               ) -> Mapping[str, Any]:
    """``recorded`` with only its MISSING keys taken from ``complete(recorded)`` (recorded values always win)."""
    if complete is None:
        return recorded
    try:
        full = to_jsonable(complete(copy.deepcopy(dict(recorded))), where="config", nan="raise")
    except Exception:  # noqa: BLE001 - cannot complete (e.g. a setting removed since): compare strictly
        return recorded

    def merge(rec: Mapping[str, Any], ful: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(rec)
        for k, v in ful.items():
            if k not in rec:
                out[k] = v
            elif isinstance(rec[k], Mapping) and isinstance(v, Mapping):
                out[k] = merge(rec[k], v)
        return out

    return merge(recorded, full)


def _config_diff(recorded: Mapping[str, Any], given: Mapping[str, Any], prefix: str = "") -> list[str]:
    """One line per differing leaf key of two JSON-converted configs, in full, e.g.
    ``federation.rounds: recorded 2, given 3`` (tables are compared key by key)."""
    def show(v: Any) -> str:
        return json.dumps(v, sort_keys=True)

    diffs = []
    for k in sorted(set(recorded) | set(given)):
        name = f"{prefix}{k}"
        if k not in given:
            diffs.append(f"{name}: recorded {show(recorded[k])}, missing from the given config")
        elif k not in recorded:
            diffs.append(f"{name}: not in the recorded config, given {show(given[k])}")
        elif isinstance(recorded[k], Mapping) and isinstance(given[k], Mapping):
            diffs.extend(_config_diff(recorded[k], given[k], f"{name}."))
        elif recorded[k] != given[k] or type(recorded[k]) is not type(given[k]):
            diffs.append(f"{name}: recorded {show(recorded[k])}, given {show(given[k])}")
    return diffs


def _remove_run_dir(root: Path) -> None:
    """Delete the run files of ``root`` if, and only if, it is a trustfl run directory."""
    manifest_path = root / MANIFEST_NAME
    try:
        fmt = json.loads(manifest_path.read_bytes()).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    entries = sorted(p.name for p in root.iterdir())
    foreign = [e for e in entries if e not in _KNOWN_ENTRIES and not e.startswith(TEMP_PREFIX)]
    if fmt != FORMAT or foreign:
        why = (
            f"it holds files that are not part of a run: {foreign[:10]}"
            if foreign
            else f"it has no valid trustfl manifest.json (format {FORMAT!r})"
        )
        raise RunDirExistsError(
            f"refusing to overwrite {root}: {why}. "
            + advice("overwrite=True only replaces a trustfl run directory; choose another path",
                     "--overwrite only replaces a trustfl run directory; choose another --out")
            + " or delete it yourself"
        )
    for name in entries:
        p = root / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    fsync_dir(root)
