"""Atomic, durable file writes and hashing (pure helpers, no run-directory knowledge).

A write goes to a temporary file in the destination's own directory, is flushed and
fsync'ed, then ``os.replace``'d over the destination and the directory is fsync'ed. A
reader therefore sees either the old or the new complete file, never a partial one; a
process killed mid-write leaves at most a ``.tmp-*`` file behind (see :data:`TEMP_PREFIX`).
"""

from __future__ import annotations

import hashlib
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
    """Serialize ``tensors`` (detached, CPU, contiguous copies) with str->str ``metadata``."""
    prepared = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return _st_save(prepared, metadata=dict(metadata))
