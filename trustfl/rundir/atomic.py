"""Atomic, durable file writes and hashing (pure helpers, no run-directory knowledge).

A write goes to a temporary file in the destination's own directory, is flushed and
fsync'ed, then ``os.replace``'d over the destination and the directory is fsync'ed. A
reader therefore sees either the old or the new complete file, never a partial one; a
process killed mid-write leaves at most a ``.tmp-*`` file behind (see :data:`TEMP_PREFIX`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save as _st_save

__all__ = [
    "TEMP_PREFIX",
    "atomic_write_bytes",
    "fsync_dir",
    "safetensors_bytes",
    "sha256_bytes",
    "sha256_file",
]

#: Prefix of the temporary files created by :func:`atomic_write_bytes`.
TEMP_PREFIX = ".tmp-"

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so that renames/creations inside it survive a crash (no-op on Windows)."""
    if os.name == "nt":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> str:
    """Atomically replace ``path`` with ``data`` and return the sha256 of ``data``.

    The parent directory must exist. On any error the temporary file is removed and the
    previous content of ``path`` (if any) is untouched.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> len(atomic_write_bytes(p, b"hello"))
        64
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return sha256_bytes(data)


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Serialize ``tensors`` (detached, CPU, contiguous copies) with str->str ``metadata``.

    The bytes depend only on the tensors and metadata: safetensors writes ``__metadata__`` in the
    iteration order of a Rust hash map (a new order in every process), so the header is rewritten
    with its keys sorted. Same-seed runs therefore produce files with the same sha256.
    """
    prepared = {k: tensors[k].detach().to("cpu").contiguous().clone() for k in sorted(tensors)}
    data = _st_save(prepared, metadata={k: metadata[k] for k in sorted(metadata)})
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    ordered = {"__metadata__": header.pop("__metadata__")} if "__metadata__" in header else {}
    ordered.update(sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]))  # the data's own order
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes with trailing spaces
    return len(text).to_bytes(8, "little") + text + data[8 + n :]
