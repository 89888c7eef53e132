"""The manifest of a run directory: its schema, file naming and JSON conversion.

Pure functions only (no I/O except :func:`load_manifest`); the writer and the reader
share them so both sides agree on names and validation.

Manifest fields (format ``trustfl-run/1``):

- ``format``: :data:`FORMAT`.
- ``created``: UTC ISO-8601 time of :meth:`RunWriter.create`.
- ``config``, ``seeds``, ``fingerprints`` (name -> sha256), ``layout``, ``extra``: as given.
- ``versions``: python, torch, transformers, peft, datasets, safetensors, trustfl, numpy,
  platform (``null`` when a package is not installed).
- ``completed_rounds``: number of committed training rounds.
- ``rounds``: ``rounds[r]`` is the record of round ``r`` (``rounds[0]`` is the initial
  global, present once written): ``{"round", "global", "updates": {client_id: {"file",
  "num_samples"}}, "state", "metrics", "prev", "sha256"}``; ``prev`` is the hash of the previous
  record (round 0: of the run's genesis) and ``sha256`` the hashes of the record's files: a hash
  chain (:mod:`trustfl.rundir.signing`; absent in runs written before it existed).
- ``files``: relative path -> sha256 of every file written (not ``manifest.json``).
- ``signature`` (signed runs only): Ed25519 signature of a digest of every other field, renewed
  at every commit (:func:`trustfl.rundir.signing.sign_manifest`).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import numbers
import platform
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustfl.rundir.errors import CorruptRunError, RunDirError

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "METRICS_NAME",
    "client_filename",
    "collect_versions",
    "dumps_manifest",
    "global_relpath",
    "layout_size",
    "load_manifest",
    "new_manifest",
    "normalize_client_id",
    "parse_round_from_relpath",
    "state_relpath",
    "to_jsonable",
    "update_relpath",
]

FORMAT = "trustfl-run/1"
MANIFEST_NAME = "manifest.json"
METRICS_NAME = "metrics.jsonl"
GLOBALS_DIR = "globals"
UPDATES_DIR = "updates"
STATE_DIR = "state"

_REQUIRED_KEYS = ("format", "config", "layout", "completed_rounds", "rounds", "files")
_VERSION_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "datasets",
    "safetensors",
    "trustfl",
    "numpy",
)
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_ROUND_RE = re.compile(r"round_(\d+)")


# ----------------------------------------------------------------------------- naming
def _round_tag(rnd: int) -> str:
    return f"round_{rnd:04d}"


def global_relpath(rnd: int) -> str:
    """``globals/round_NNNN.safetensors``."""
    return f"{GLOBALS_DIR}/{_round_tag(rnd)}.safetensors"


def state_relpath(rnd: int) -> str:
    """``state/round_NNNN.safetensors``."""
    return f"{STATE_DIR}/{_round_tag(rnd)}.safetensors"


def update_relpath(rnd: int, filename: str) -> str:
    """``updates/round_NNNN/<filename>``."""
    return f"{UPDATES_DIR}/{_round_tag(rnd)}/{filename}"


def parse_round_from_relpath(relpath: str) -> int | None:
    """Round number encoded in a ``globals/``, ``updates/`` or ``state/`` path, else ``None``."""
    parts = relpath.split("/")
    if len(parts) < 2 or parts[0] not in (GLOBALS_DIR, UPDATES_DIR, STATE_DIR):
        return None
    m = _ROUND_RE.fullmatch(parts[1].removesuffix(".safetensors"))
    return int(m.group(1)) if m else None


def normalize_client_id(client_id: object) -> str:
    """The string form of a client id: ``str(i)`` for a non-negative int, the string itself otherwise.

    Raises:
        RunDirError: a bool, negative int, or a string that is not filename-safe
            (``[A-Za-z0-9._-]``, 1-128 chars, not starting with ``.``).
    """
    if isinstance(client_id, bool) or not isinstance(client_id, (int, np.integer, str)):
        raise RunDirError(
            f"client_id must be a non-negative int or a str, got {client_id!r} "
            f"({type(client_id).__name__})"
        )
    if isinstance(client_id, (int, np.integer)):
        if client_id < 0:
            raise RunDirError(f"client_id must be a non-negative int or a str, got {client_id!r}")
        return str(int(client_id))
    if not _CLIENT_ID_RE.fullmatch(client_id):
        raise RunDirError(
            f"client_id {client_id!r} is not filename-safe: use 1-128 characters from "
            "[A-Za-z0-9._-], not starting with '.'"
        )
    return client_id


def client_filename(client_id: object) -> str:
    """``client_0003.safetensors`` for int 3 (zero-padded), ``client_<id>.safetensors`` for a str."""
    if isinstance(client_id, (int, np.integer)) and not isinstance(client_id, bool):
        return f"client_{int(normalize_client_id(client_id)):04d}.safetensors"
    return f"client_{normalize_client_id(client_id)}.safetensors"


# ----------------------------------------------------------------------------- layout
def layout_size(layout: Mapping[str, Any]) -> int:
    """Total size ``d`` of the flat vector described by ``layout["shapes"]``.

    The layout is otherwise opaque. ``d = sum(prod(shape) for shape in layout["shapes"])``.

    Raises:
        RunDirError: ``layout`` is not a dict with a list of shapes of non-negative ints,
            or ``d == 0``.

    Example:
        >>> layout_size({"names": ["a", "b"], "shapes": [[2, 3], [4]], "dtype": "float32"})
        10
    """
    if not isinstance(layout, Mapping) or "shapes" not in layout:
        raise RunDirError(
            f"layout must be a dict with a 'shapes' list (e.g. {{'names': [...], 'shapes': "
            f"[[8, 16], [16]], 'dtype': 'float32'}}), got {layout!r:.200}"
        )
    shapes = layout["shapes"]
    if not isinstance(shapes, (list, tuple)):
        raise RunDirError(f"layout['shapes'] must be a list of shapes, got {shapes!r:.200}")
    d = 0
    for i, shape in enumerate(shapes):
        if not isinstance(shape, (list, tuple)) or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in shape
        ):
            raise RunDirError(
                f"layout['shapes'][{i}] must be a list of non-negative ints, got {shape!r}"
            )
        d += math.prod(int(s) for s in shape)
    if d == 0:
        raise RunDirError(f"layout describes an empty vector (d = 0): shapes={shapes!r:.200}")
    return d


# ----------------------------------------------------------------------------- JSON
def to_jsonable(value: Any, *, where: str, nan: str = "null") -> Any:
    """Convert ``value`` to plain JSON types, for the manifest and metrics.

    numpy / torch scalars (and 0-d arrays / tensors) become Python numbers, tuples become
    lists. Non-finite floats become ``None`` when ``nan="null"`` (metrics: a NaN loss is a
    fact worth recording, JSON cannot hold it) and raise when ``nan="raise"`` (config).

    Raises:
        RunDirError: a value is not JSON-serializable, a dict key is not a str, or a
            float is non-finite with ``nan="raise"``. The message names ``where``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim != 0:
            raise RunDirError(
                f"{where} is a {type(value).__name__} of shape {tuple(value.shape)}; only "
                "scalars (0-d) are accepted: record a summary or call .tolist() first"
            )
        value = value.item()
        return to_jsonable(value, where=where, nan=nan)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            if nan == "null":
                return None
            raise RunDirError(f"{where} = {f!r} is not finite; JSON cannot record it")
        return f
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise RunDirError(f"{where} has a non-str key {k!r}; JSON object keys must be str")
            out[k] = to_jsonable(v, where=f"{where}[{k!r}]", nan=nan)
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, where=f"{where}[{i}]", nan=nan) for i, v in enumerate(value)]
    raise RunDirError(
        f"{where} = {value!r:.200} of type {type(value).__name__} is not JSON-serializable; "
        "use str/int/float/bool/None, lists and dicts with str keys"
    )


def collect_versions() -> dict[str, str | None]:
    """Versions of python, the relevant packages and the platform (``None`` if not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSION_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["platform"] = platform.platform()
    return versions


def new_manifest(
    *,
    config: Mapping[str, Any],
    layout: Mapping[str, Any],
    seeds: Mapping[str, Any],
    fingerprints: Mapping[str, str] | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A fresh manifest (no rounds, no files) after validating every argument."""
    for name, val in (("config", config), ("seeds", seeds), ("layout", layout)):
        if not isinstance(val, Mapping):
            raise RunDirError(f"{name} must be a dict, got {type(val).__name__}: {val!r:.200}")
    layout_size(layout)
    fingerprints = {} if fingerprints is None else fingerprints
    if not isinstance(fingerprints, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in fingerprints.items()
    ):
        raise RunDirError(
            f"fingerprints must be a dict of name -> sha256 hex str, got {fingerprints!r:.200}"
        )
    extra = {} if extra is None else extra
    if not isinstance(extra, Mapping):
        raise RunDirError(f"extra must be a dict, got {type(extra).__name__}: {extra!r:.200}")
    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": to_jsonable(config, where="config", nan="raise"),
        "seeds": to_jsonable(seeds, where="seeds", nan="raise"),
        "versions": collect_versions(),
        "fingerprints": dict(fingerprints),
        "layout": to_jsonable(layout, where="layout", nan="raise"),
        "completed_rounds": 0,
        "rounds": [],
        "files": {},
        "extra": to_jsonable(extra, where="extra", nan="raise"),
    }


def dumps_manifest(manifest: Mapping[str, Any]) -> bytes:
    """Serialize a manifest (indented, strict JSON, trailing newline)."""
    return (json.dumps(manifest, indent=2, allow_nan=False) + "\n").encode("utf-8")


def load_manifest(root: str | Path) -> dict[str, Any]:
    """Read and structurally validate ``<root>/manifest.json``.

    Raises:
        CorruptRunError: the manifest is missing, not JSON, not ``trustfl-run/1`` or
            lacks required fields.
    """
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CorruptRunError(
            root, [(MANIFEST_NAME, f"missing: {path} does not exist (not a trustfl run directory?)")]
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptRunError(root, [(MANIFEST_NAME, f"unparsable: {e}")]) from e
    if not isinstance(manifest, dict):
        raise CorruptRunError(root, [(MANIFEST_NAME, "unparsable: top level is not a JSON object")])
    if manifest.get("format") != FORMAT:
        raise CorruptRunError(
            root, [(MANIFEST_NAME, f"format is {manifest.get('format')!r}, expected {FORMAT!r}")]
        )
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise CorruptRunError(root, [(MANIFEST_NAME, f"missing required field(s) {missing}")])
    rounds, completed = manifest["rounds"], manifest["completed_rounds"]
    if not isinstance(completed, int) or not isinstance(rounds, list) or not (
        len(rounds) == completed + 1 or (completed == 0 and not rounds)
    ):
        raise CorruptRunError(
            root,
            [(MANIFEST_NAME, f"completed_rounds={completed!r} disagrees with {len(rounds)} round records")],
        )
    for r, rec in enumerate(rounds):
        if not isinstance(rec, dict) or rec.get("round") != r:
            raise CorruptRunError(root, [(MANIFEST_NAME, f"rounds[{r}] is not the record of round {r}")])
    files = manifest["files"]
    if not isinstance(files, dict):
        raise CorruptRunError(root, [(MANIFEST_NAME, "'files' is not an object")])
    for rel in files:
        if rel.startswith("/") or ".." in rel.split("/") or "\\" in rel:
            raise CorruptRunError(root, [(MANIFEST_NAME, f"files entry {rel!r} escapes the run directory")])
    try:
        layout_size(manifest["layout"])
    except RunDirError as e:
        raise CorruptRunError(root, [(MANIFEST_NAME, f"invalid layout: {e}")]) from e
    return manifest
