"""Read-only access to a run directory, with integrity checks.

Every tensor read through :class:`RunDir` is checked against the sha256 recorded in the
manifest first, so an audit never silently computes on a modified or truncated file.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load

from trustfl.rundir.atomic import TEMP_PREFIX, sha256_bytes
from trustfl.rundir.errors import CorruptRunError, RecordsMismatchError, RunDirError, advice
from trustfl.rundir.signing import (
    SignatureError,
    UnsignedRunError,
    as_public_key,
    chain_problems,
    key_id,
    signature_problems,
    signer,
)
from trustfl.rundir.manifest import (
    GLOBALS_DIR,
    METRICS_NAME,
    STATE_DIR,
    UPDATES_DIR,
    layout_size,
    load_manifest,
    normalize_client_id,
    parse_round_from_relpath,
)

__all__ = ["RunDir", "VerifyReport"]


@dataclass(frozen=True)
class VerifyReport:
    """Result of a successful :meth:`RunDir.verify` (a failed one raises ``CorruptRunError``).

    Attributes:
        path: the run directory.
        completed_rounds: committed training rounds.
        checked: every file of the manifest that was hashed and parsed.
        untracked: warnings: files under ``globals/``, ``updates/``, ``state/`` that the
            manifest does not list and that do not belong to an uncommitted round.
        incomplete: leftovers of an interrupted round or write (rounds above
            ``completed_rounds``, ``.tmp-*`` files, metrics lines of uncommitted rounds);
            ignored by readers, deleted by ``RunWriter.resume``.
        signed_by: key id of the manifest's signature (``None``: unsigned run).
        signature_trusted: the signature was checked against a public key the caller gave
            (``False`` for a signed run verified without one: then only its consistency was checked).
    """

    path: str
    completed_rounds: int
    checked: tuple[str, ...]
    untracked: tuple[str, ...]
    incomplete: tuple[str, ...]
    signed_by: str | None = None
    signature_trusted: bool = False

    def __str__(self) -> str:
        if self.signed_by is None:
            sig = "unsigned"
        elif self.signature_trusted:
            sig = f"signature by {self.signed_by} verified with the given key"
        else:
            sig = f"signed by {self.signed_by} (consistent; check it against a trusted public key)"
        return (
            f"run {self.path}: OK, {self.completed_rounds} completed round(s), "
            f"{len(self.checked)} file(s) verified, {len(self.untracked)} untracked, "
            f"{len(self.incomplete)} incomplete-round leftover(s), {sig}"
        )


def parse_safetensors(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and ``__metadata__`` of serialized safetensors bytes.

    Raises:
        ValueError: the bytes are truncated or not a safetensors file.
    """
    try:
        tensors = _st_load(data)
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"truncated or unparsable safetensors ({len(data)} bytes): {e}") from e
    return tensors, dict(header.get("__metadata__") or {})


class RunDir:
    """A run directory opened read-only; the manifest is read once, at construction.

    Args:
        path: the run directory written by :class:`~trustfl.rundir.RunWriter`.

    Raises:
        CorruptRunError: ``manifest.json`` is missing or unparsable.

    Example:
        >>> run = RunDir("runs/exp1")                        # doctest: +SKIP
        >>> run.verify().untracked                           # doctest: +SKIP
        >>> w1 = run.global_vector(run.completed_rounds)     # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._root = Path(path)
        if not self._root.is_dir():
            raise CorruptRunError(self._root, [(".", f"run directory {self._root} does not exist")])
        self._manifest = load_manifest(self._root)
        self._d = layout_size(self._manifest["layout"])
        # relpath -> (inode, size, mtime_ns, ctime_ns) of the file when its sha256 was checked
        self._verified: dict[str, tuple[int, int, int, int]] = {}

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> Path:
        """The run directory."""
        return self._root

    @property
    def manifest(self) -> dict[str, Any]:
        """A deep copy of the parsed ``manifest.json``."""
        return copy.deepcopy(self._manifest)

    @property
    def config(self) -> dict[str, Any]:
        """The run config as recorded."""
        return copy.deepcopy(self._manifest["config"])

    @property
    def layout(self) -> dict[str, Any]:
        """The caller-given layout of the flat vector."""
        return copy.deepcopy(self._manifest["layout"])

    @property
    def d(self) -> int:
        """Size of every global / update vector."""
        return self._d

    @property
    def completed_rounds(self) -> int:
        """Number of committed training rounds (round 0, the initial global, not counted)."""
        return int(self._manifest["completed_rounds"])

    # ------------------------------------------------------------------ tensors
    def global_vector(self, round: int) -> torch.Tensor:
        """The global adapter vector after ``round`` (0 = initial), shape ``(d,)``, float32."""
        rec = self._record(round)
        tensors, _ = self._load(rec["global"], ("global", round))
        return tensors["vector"]

    def client_ids(self, round: int) -> list[str]:
        """Ids (str) of the clients whose update was recorded in ``round``, in write order."""
        return list(self._record(round).get("updates") or {})

    def client_update(self, round: int, client_id: str | int) -> tuple[torch.Tensor, int]:
        """``(delta, num_samples)`` of ``client_id`` in ``round``; delta has shape ``(d,)``."""
        rec = self._record(round)
        cid = normalize_client_id(client_id)
        updates = rec.get("updates") or {}
        if cid not in updates:
            raise RunDirError(
                f"no update of client_id {client_id!r} recorded in round {round} of {self._root}; "
                f"recorded clients: {list(updates)}"
            )
        entry = updates[cid]
        tensors, _ = self._load(entry["file"], ("update", round, cid, entry["num_samples"]))
        return tensors["delta"], int(entry["num_samples"])

    def state(self, round: int) -> dict[str, torch.Tensor]:
        """Server state tensors recorded in ``round``.

        Raises:
            RunDirError: no state was recorded in that round (lists the rounds that have one).
        """
        rec = self._record(round)
        if not rec.get("state"):
            have = [r["round"] for r in self._manifest["rounds"] if r.get("state")]
            raise RunDirError(
                f"no server state recorded in round {round} of {self._root}; rounds with state: {have}"
            )
        tensors, _ = self._load(rec["state"], ("state", round))
        return tensors

    def component_state(self, round: int) -> dict[str, Any]:
        """JSON state of the run components committed with ``round`` (empty when none was recorded)."""
        return dict(self._record(round).get("components") or {})

    def metrics(self) -> list[dict[str, Any]]:
        """One dict per committed round (with key ``"round"``); NaN/Inf were recorded as ``None``."""
        problem, committed, _ = self._check_metrics()
        if problem:
            raise CorruptRunError(self._root, [(METRICS_NAME, problem)])
        return committed

    def check_client_records(self, splits: dict[int, tuple[Any, Any]]) -> bool:
        """Each client's rebuilt ``(train, holdout)`` datasets against the manifest's ``client_<id>_train`` /
        ``client_<id>_holdout`` fingerprints (an audit that rebuilds a run's records checks them here).

        Returns False when the run records no client fingerprints (nothing can be checked), True when all match.

        Raises:
            RecordsMismatchError: a client's part has no recorded fingerprint or a different one.
        """
        from trustfl.data import fingerprint_dataset

        recorded = self.manifest.get("fingerprints") or {}
        if not any(k.startswith("client_") for k in recorded):
            return False
        for cid, parts in sorted(splits.items()):
            for part, ds in zip(("train", "holdout"), parts):
                want = recorded.get(f"client_{cid}_{part}")
                if want is None:
                    raise RecordsMismatchError(f"{self._root}: no fingerprint client_{cid}_{part} in the manifest, so "
                                               f"client {cid}'s {part} records cannot be checked")
                if fingerprint_dataset(ds) != want:
                    raise RecordsMismatchError(
                        f"{self._root}: client {cid}'s {part} records rebuilt from the recorded config and seed do not "
                        f"match the manifest's fingerprint client_{cid}_{part} (the dataset "
                        f"{(self.config.get('data') or {}).get('name')!r} or the data code changed since the run)")
        return True

    # ------------------------------------------------------------------ verify
    def verify(self, public_key: Any = None) -> VerifyReport:
        """Hash and parse every file the manifest lists, check the round hash chain and the
        signature; find untracked and leftover files.

        Args:
            public_key: the operator's trusted Ed25519 public key (object or PEM path). The run
                must then be signed by it, with no manifest field changed since. Without it a
                signed run's signature is checked against the key it records (corruption, not
                forgery: anyone can re-sign with their own key).

        Raises:
            CorruptRunError: listing every missing, modified (sha256 mismatch), truncated or
                unparsable file and every break of the hash chain, each with its reason.
            SignatureError: (a ``CorruptRunError``) the signature fails; names each field
                changed after signing.
            UnsignedRunError: ``public_key`` was given but the run is unsigned.
        """
        files: dict[str, str] = self._manifest["files"]
        sig_problems: list[tuple[str, str]] = []
        signed_by = signer(self._manifest)
        if public_key is not None:
            key = as_public_key(public_key)
            if signed_by is None:
                raise UnsignedRunError(
                    f"run {self._root} is unsigned: it carries no signature to check against {key_id(key)}; "
                    "verify it without a key (file hashes only), and sign new runs with "
                    + advice("signing_key=", "--sign-key FILE"))
            sig_problems = signature_problems(self._manifest, key)
        elif signed_by is not None:
            sig_problems = signature_problems(self._manifest)
        problems: list[tuple[str, str]] = [*sig_problems, *chain_problems(self._manifest)]
        checked: list[str] = []
        incomplete: list[str] = []
        roles = self._roles()
        for rel in sorted(set(roles) - set(files)):
            problems.append((rel, "referenced by a round record but not listed in manifest 'files'"))
        for rel, expected in sorted(files.items()):
            if rel == METRICS_NAME:
                problem, _, extra = self._check_metrics()
                if problem:
                    problems.append((rel, problem))
                else:
                    checked.append(rel)
                    if extra:
                        incomplete.append(f"{rel} ({extra} line(s) of uncommitted rounds)")
                continue
            path = self._root / rel
            if not path.is_file():
                problems.append((rel, "missing"))
                continue
            data = path.read_bytes()
            reasons = []
            got = sha256_bytes(data)
            if got != expected:
                reasons.append(f"sha256 mismatch: expected {expected}, got {got}")
            if rel.endswith(".safetensors"):
                try:
                    self._check_content(rel, data, roles.get(rel))
                except ValueError as e:
                    reasons.append(str(e))
            if reasons:
                problems.append((rel, "; ".join(reasons)))
            else:
                checked.append(rel)
        if sig_problems:
            raise SignatureError(self._root, problems)
        if problems:
            raise CorruptRunError(self._root, problems)
        untracked: list[str] = []
        last = len(self._manifest["rounds"]) - 1
        for rel in self._scan():
            if rel in files:
                continue
            name = rel.rsplit("/", 1)[-1]
            r = parse_round_from_relpath(rel)
            if name.startswith(TEMP_PREFIX) or (r is not None and r > last):
                incomplete.append(rel)
            else:
                untracked.append(rel)
        return VerifyReport(
            path=str(self._root),
            completed_rounds=self.completed_rounds,
            checked=tuple(checked),
            untracked=tuple(untracked),
            incomplete=tuple(incomplete),
            signed_by=signed_by,
            signature_trusted=public_key is not None,
        )

    # ------------------------------------------------------------------ internals
    def _record(self, round: int) -> dict[str, Any]:
        rounds = self._manifest["rounds"]
        if isinstance(round, bool) or not isinstance(round, int) or not 0 <= round < len(rounds):
            valid = f"0..{len(rounds) - 1}" if rounds else "none (no round written yet)"
            raise RunDirError(f"round={round!r} is not recorded in {self._root}; valid rounds: {valid}")
        return rounds[round]

    def _roles(self) -> dict[str, tuple[Any, ...]]:
        roles: dict[str, tuple[Any, ...]] = {}
        for rec in self._manifest["rounds"]:
            r = rec["round"]
            if rec.get("global"):
                roles[rec["global"]] = ("global", r)
            for cid, entry in (rec.get("updates") or {}).items():
                roles[entry["file"]] = ("update", r, cid, entry["num_samples"])
            if rec.get("state"):
                roles[rec["state"]] = ("state", r)
        return roles

    def _check_content(
        self, rel: str, data: bytes, role: tuple[Any, ...] | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Parse ``data`` and check it against its role in the manifest (raises ValueError)."""
        tensors, meta = parse_safetensors(data)
        if role is None:
            return tensors, meta
        kind, r = role[0], role[1]
        if meta.get("round") != str(r) or meta.get("kind") != kind:
            raise ValueError(
                f"metadata round={meta.get('round')!r} kind={meta.get('kind')!r}, "
                f"expected round={str(r)!r} kind={kind!r}"
            )
        if kind in ("global", "update"):
            key = "vector" if kind == "global" else "delta"
            t = tensors.get(key)
            if t is None or set(tensors) != {key}:
                raise ValueError(f"expected exactly one tensor {key!r}, found {sorted(tensors)}")
            if t.dtype != torch.float32 or t.shape != (self._d,):
                raise ValueError(
                    f"{key!r} has dtype {t.dtype} shape {tuple(t.shape)}, expected float32 ({self._d},)"
                )
        if kind == "update":
            cid, n = role[2], role[3]
            if meta.get("client_id") != cid or meta.get("num_samples") != str(n):
                raise ValueError(
                    f"metadata client_id={meta.get('client_id')!r} num_samples="
                    f"{meta.get('num_samples')!r}, manifest says {cid!r} / {n!r}"
                )
        return tensors, meta

    def _load(self, rel: str, role: tuple[Any, ...]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Read ``rel``, check its sha256 and content.

        The hash is skipped when this reader already verified the file and its (inode, size,
        mtime, ctime) are unchanged since; :meth:`verify` always re-hashes everything.
        """
        expected = self._manifest["files"].get(rel)
        if expected is None:
            raise CorruptRunError(self._root, [(rel, "not listed in manifest 'files'")])
        path = self._root / rel
        try:
            st = path.stat()
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptRunError(self._root, [(rel, "missing")]) from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._verified.get(rel) != stamp:
            got = sha256_bytes(data)
            if got != expected:
                raise CorruptRunError(
                    self._root, [(rel, f"sha256 mismatch: expected {expected}, got {got}")]
                )
            self._verified[rel] = stamp
        try:
            return self._check_content(rel, data, role)
        except ValueError as e:
            raise CorruptRunError(self._root, [(rel, str(e))]) from e

    def _check_metrics(self) -> tuple[str | None, list[dict[str, Any]], int]:
        """``(problem, committed records, number of uncommitted extra lines)`` of metrics.jsonl.

        A run killed between writing metrics.jsonl and committing the manifest leaves
        extra trailing lines; the committed prefix must still hash to the recorded sha256.
        """
        expected = self._manifest["files"].get(METRICS_NAME)
        if expected is None:
            return f"{METRICS_NAME} not listed in manifest 'files'", [], 0
        try:
            data = (self._root / METRICS_NAME).read_bytes()
        except FileNotFoundError:
            return "missing", [], 0
        n = self.completed_rounds
        lines = data.splitlines(keepends=True)
        extra = 0
        got = sha256_bytes(data)
        if got != expected:
            prefix_ok = len(lines) > n and sha256_bytes(b"".join(lines[:n])) == expected
            if not prefix_ok:
                return f"sha256 mismatch: expected {expected}, got {got}", [], 0
            extra = len(lines) - n
        committed: list[dict[str, Any]] = []
        for i, line in enumerate(lines[:n]):
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                return f"unparsable line {i + 1}: {e}", [], 0
            if not isinstance(rec, dict) or rec.get("round") != i + 1:
                return f"line {i + 1} is not the metrics of round {i + 1}: {line[:200]!r}", [], 0
            committed.append(rec)
        if len(committed) != n:
            return f"has {len(committed)} line(s), expected {n} (one per completed round)", [], 0
        return None, committed, extra

    def _scan(self) -> Iterator[str]:
        """Relative paths of every file under globals/, updates/, state/ and top-level temp files.

        Other folders are never scanned: ``audit/`` (``trustfl audit``'s report.html/json, written
        into the run directory after the run) must not make a verified run report untracked files.
        """
        for top in (GLOBALS_DIR, UPDATES_DIR, STATE_DIR):
            base = self._root / top
            if base.is_dir():
                for p in sorted(base.rglob("*")):
                    if p.is_file() or p.is_symlink():
                        yield p.relative_to(self._root).as_posix()
        for p in sorted(self._root.glob(TEMP_PREFIX + "*")):
            yield p.name
