"""The key of keyed text codes: a secret shared by the parties that compute codes (the clients
of dedup, the auditor of origin checks) and never given to whoever compares them (the server).

Every keyed code (HMAC of the text, keyed MinHash, rotated SimHash, origin's keyed N-gram ids)
is a function of this key. ``trustfl.defenses.dedup`` calls it ``DedupKey`` (the same class). Without it the server cannot compute the code of a guessed text, so it cannot
test "did any client hold this message?" (a dictionary attack), and codes made under
different keys are unrelated (tests/test_dedup_privacy.py). Sub-keys for each purpose are
derived with HMAC-SHA256(secret, "trustfl-dedup/" + purpose), as HKDF-Expand does
(RFC 5869), so one purpose's sub-key says nothing about another's (the ``trustfl-dedup/``
label is part of the code format: changing it would change every code).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path

from trustfl.text.errors import TextError

__all__ = ["TextKey", "key_for_run"]
log = logging.getLogger(__name__)

_MIN_BYTES = 16
_PBKDF2_SALT = b"trustfl-dedup-key-v1"
_PBKDF2_ROUNDS = 100_000


class TextKey:
    """A secret of >= 16 bytes shared among clients (not the server).

    Args:
        secret: the raw secret bytes (use :meth:`generate` for 32 random bytes).

    Raises:
        TextError: ``secret`` is not bytes or is shorter than 16 bytes.

    Example:
        >>> key = TextKey.from_passphrase("correct horse battery staple")
        >>> len(key.derive("exact"))
        32
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, (bytes, bytearray)):
            raise TextError(f"TextKey secret must be bytes, got {type(secret).__name__}")
        if len(secret) < _MIN_BYTES:
            raise TextError(f"TextKey secret must be >= {_MIN_BYTES} bytes, got {len(secret)}; "
                             "use TextKey.generate()")
        self._secret = bytes(secret)

    @classmethod
    def generate(cls) -> "TextKey":
        """32 bytes from the OS CSPRNG (:mod:`secrets`)."""
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_passphrase(cls, passphrase: str) -> "TextKey":
        """Derive a key from a passphrase with PBKDF2-HMAC-SHA256 (100k rounds, fixed salt).

        All clients typing the same passphrase get the same key. A guessable passphrase gives
        a guessable key, and then the server can run dictionary attacks: prefer :meth:`generate`
        and distribute the key file out of band.
        """
        if not isinstance(passphrase, str) or not passphrase:
            raise TextError(f"passphrase must be a non-empty str, got {passphrase!r}")
        return cls(hashlib.pbkdf2_hmac("sha256", passphrase.encode("utf-8"), _PBKDF2_SALT, _PBKDF2_ROUNDS))

    def derive(self, purpose: str) -> bytes:
        """32-byte sub-key for ``purpose`` (HMAC-SHA256(secret, "trustfl-dedup/" + purpose))."""
        return hmac.digest(self._secret, b"trustfl-dedup/" + purpose.encode("utf-8"), "sha256")

    def seed(self, purpose: str) -> int:
        """A 128-bit integer seed for ``purpose`` (for :class:`numpy.random.Generator`)."""
        return int.from_bytes(self.derive(purpose)[:16], "little")

    @property
    def key_id(self) -> str:
        """A public 16-hex-digit identifier: lets parties check they hold the same key without revealing it."""
        return self.derive("key-id").hex()[:16]

    def save(self, path: str | Path) -> Path:
        """Write the secret (hex) to ``path`` atomically with file mode 0600; return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-key-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(self._secret.hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TextKey":
        """Read a key written by :meth:`save`.

        Raises:
            TextError: the file is missing or does not hold a hex secret of >= 16 bytes.
        """
        path = Path(path)
        if path.is_dir():
            raise TextError(f"key file {str(path)!r} is a directory, not a key file; give the path of a file")
        if not path.is_file():
            raise TextError(f"key file {str(path)!r} does not exist; create one with TextKey.generate().save(path) "
                             "or `trustfl dedup --key-file PATH` (generated if missing)")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("dedup key file %s has mode %o: readable by other users; chmod 600 it", path, mode)
        text = path.read_text(encoding="ascii", errors="replace").strip()
        try:
            secret = bytes.fromhex(text)
        except ValueError as exc:
            raise TextError(f"key file {str(path)!r} does not hold a hex secret ({exc})") from exc
        return cls(secret)

    @classmethod
    def load_or_create(cls, path: str | Path) -> tuple["TextKey", bool]:
        """The key in ``path``, or a fresh :meth:`generate`\ d one saved there (mode 0600).

        Returns:
            ``(key, created)``; ``created`` is True when a new key file was written.
        """
        path = Path(path)
        if path.exists():
            return cls.load(path), False
        key = cls.generate()
        key.save(path)
        return key, True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextKey) and hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:  # never print the secret
        return f"TextKey(id={self.key_id})"


def key_for_run(key_file: str | Path | None, seed: int, *, purpose: str = "dedup") -> TextKey:
    """The clients' key: ``key_file`` (created with a random key if missing), else one derived from
    the run seed and ``purpose`` (reproducible runs; the seed is no secret, so this is for simulation)."""
    if key_file:
        key, created = TextKey.load_or_create(key_file)
        if created:
            log.info("%s: generated a new key in %s (mode 0600); give it to every client", purpose, key_file)
        return key
    return TextKey(hashlib.sha256(f"trustfl-{purpose}-run-seed/{int(seed)}".encode()).digest())
