"""Signed run directories and the hash chain over rounds.

Two independent protections of ``manifest.json`` (the file that records every other file's
sha256, the config that ``--resume`` and model loading use, and the round history):

* **Hash chain** (every run): round record ``r`` carries ``prev``, the hash of round ``r - 1``'s
  record (round 0: the hash of the run's genesis: format, config, seeds, layout, fingerprints),
  and ``sha256``, the hashes of the files it names. A removed, reordered or rewritten round
  breaks the chain at that round. Without a signature the chain only catches careless edits
  (whoever can write the manifest can recompute it); with one it pins the whole history.
* **Signature** (optional): an Ed25519 signature by the operator's key over a digest of every
  top-level manifest field, stored in the manifest's ``signature`` field and renewed at every
  commit. :func:`verify_signature` checks it against a *trusted* public key and names each
  field modified after signing. The private key never enters the run directory.

Keys are PEM files: :func:`generate_key` writes the private key (PKCS#8, mode 0600) and
``<file>.pub`` (SubjectPublicKeyInfo) beside it (``trustfl keygen --out FILE``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trustfl.rundir.errors import CorruptRunError, RunDirError, advice

__all__ = [
    "ALGORITHM",
    "SignatureError",
    "SigningKeyError",
    "UnsignedRunError",
    "chain_problems",
    "generate_key",
    "genesis_hash",
    "key_id",
    "load_private_key",
    "load_public_key",
    "record_hash",
    "sign_manifest",
    "signature_problems",
    "verify_signature",
]

ALGORITHM = "ed25519"
SIGNATURE_FIELD = "signature"
_SIG_DOMAIN = b"trustfl-run-signature/1\n"
_REC_DOMAIN = b"trustfl-run-round/1\n"
_GENESIS_DOMAIN = b"trustfl-run-genesis/1\n"
GENESIS_FIELDS = ("format", "config", "seeds", "layout", "fingerprints")


class SigningKeyError(RunDirError):
    """A key file is missing, unreadable, not an Ed25519 key, too open, or inside the run directory."""


class UnsignedRunError(RunDirError):
    """A signature check was asked for, but the run directory carries no signature."""


class SignatureError(CorruptRunError):
    """The manifest's signature is invalid, by another key, or fields changed after signing (or the chain broke)."""

    def __init__(self, path: str | os.PathLike[str], problems: list[tuple[str, str]]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}: {reason}" for p, reason in self.problems)
        RunDirError.__init__(
            self, f"run directory {self.path} fails its signature check ({len(self.problems)} problem(s)):\n{lines}\n"
                  "manifest.json was changed after the operator signed it; do not trust this run's config, "
                  "history or files.")


# ----------------------------------------------------------------------------- hashing
def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace) of a JSON value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=False).encode("utf-8")


def _sha(domain: bytes, value: Any) -> str:
    return hashlib.sha256(domain + canonical_json(value)).hexdigest()


def record_hash(record: Mapping[str, Any]) -> str:
    """The chain hash of one round record (it includes the record's ``prev`` and ``sha256``)."""
    return _sha(_REC_DOMAIN, dict(record))


def genesis_hash(manifest: Mapping[str, Any]) -> str:
    """The ``prev`` of round 0: hash of what the run started from (format, config, seeds, layout, fingerprints)."""
    return _sha(_GENESIS_DOMAIN, {k: manifest.get(k) for k in GENESIS_FIELDS})


def chain_problems(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(where, reason)`` for every break of the round hash chain (empty: intact, or a pre-chain run).

    A run written before the chain existed (round 0 without ``prev``) has no chain to check.
    """
    rounds = manifest.get("rounds") or []
    if not rounds or "prev" not in rounds[0]:
        return []
    problems: list[tuple[str, str]] = []
    files = manifest.get("files") or {}
    expected = genesis_hash(manifest)
    for r, rec in enumerate(rounds):
        where = f"manifest.json rounds[{r}]"
        if not isinstance(rec, dict) or "prev" not in rec or not isinstance(rec.get("sha256"), dict):
            problems.append((where, "hash chain broken: the record carries no 'prev' / 'sha256' (the "
                                    "round was removed, replaced or rewritten)"))
            expected = record_hash(rec) if isinstance(rec, dict) else ""
            continue
        if rec["prev"] != expected:
            what = ("the run's genesis (format, config, seeds, layout, fingerprints) changed after round 0 "
                    "was written" if r == 0 else
                    f"its 'prev' is not the hash of round {r - 1}'s record (a round was removed, reordered or "
                    "rewritten)")
            problems.append((where, f"hash chain broken: {what}"))
        named = {p for p in (rec.get("global"), rec.get("state")) if p}
        named |= {e.get("file") for e in (rec.get("updates") or {}).values() if isinstance(e, dict)}
        if set(rec["sha256"]) != named:
            problems.append((where, f"hash chain: the record's sha256 list {sorted(rec['sha256'])} does not "
                                    f"match the files it names {sorted(named)}"))
        for rel, digest in sorted(rec["sha256"].items()):
            if rel in files and files[rel] != digest:
                problems.append((rel, f"sha256 in manifest 'files' ({files[rel]}) differs from the one round {r}'s "
                                      f"chained record carries ({digest}): the file was replaced after round {r}"))
        expected = record_hash(rec)
    return problems


# ----------------------------------------------------------------------------- keys
def _crypto() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def key_id(public_key: Any) -> str:
    """``ed25519:<first 16 hex of sha256(raw public key)>``: how messages name a key."""
    return f"{ALGORITHM}:{hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]}"


def _raw_public(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_path(private_path: str | os.PathLike[str]) -> Path:
    """``FILE.pub`` beside the private key ``FILE``."""
    p = Path(private_path)
    return p.with_name(p.name + ".pub")


def generate_key(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new Ed25519 private key to ``out`` (mode 0600) and its public key to ``out.pub``.

    Raises:
        SigningKeyError: ``out`` or ``out.pub`` already exists, or the folder does not.
    """
    from cryptography.hazmat.primitives import serialization

    priv_path, pub_path = Path(out), public_key_path(out)
    for p in (priv_path, pub_path):
        if p.exists():
            raise SigningKeyError(f"key file {p} already exists; remove it or choose another path "
                                  "(an existing key is never overwritten)")
    if not priv_path.parent.is_dir():
        raise SigningKeyError(f"key file {priv_path}: folder {priv_path.parent} does not exist")
    key = _crypto().Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(priv_path, 0o600)  # whatever the umask
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path


def _read_key_file(path: Path, what: str) -> bytes:
    if path.is_dir():
        raise SigningKeyError(f"{what} {path} is a directory, not a key file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{what} {path} does not exist (create one with `trustfl keygen --out FILE`)") from None
    except OSError as e:
        raise SigningKeyError(f"{what} {path} cannot be read: {e.strerror or e}") from None


def load_private_key(path: str | os.PathLike[str], *, run_dir: str | os.PathLike[str] | None = None) -> Any:
    """The Ed25519 private key in PEM file ``path``.

    Args:
        run_dir: the run directory it will sign; a key inside it is refused (it would be published
            with the run and let anyone re-sign a tampered history).

    Raises:
        SigningKeyError: missing, a directory, readable by group/others, not an Ed25519 private key,
            encrypted, or inside ``run_dir``.
    """
    from cryptography.hazmat.primitives import serialization

    p = Path(path)
    if run_dir is not None and p.resolve().is_relative_to(Path(run_dir).resolve()):
        raise SigningKeyError(f"signing key {p} is inside the run directory {run_dir}; keep the private key "
                              "outside it (the run directory is what you publish)")
    data = _read_key_file(p, "signing key")
    if os.name == "posix" and stat.S_IMODE(p.stat().st_mode) & 0o077:
        raise SigningKeyError(f"signing key {p} is readable by other users (mode "
                              f"{stat.S_IMODE(p.stat().st_mode):04o}); run `chmod 600 {p}`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningKeyError(f"signing key {p} is encrypted; trustfl needs an unencrypted PEM key "
                              "(mode 0600) from `trustfl keygen`") from None
    except ValueError:
        hint = " (that is the public key; pass the private key without .pub)" if b"PUBLIC KEY" in data else ""
        raise SigningKeyError(f"signing key {p} is not a PEM private key{hint}") from None
    if not isinstance(key, _crypto().Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {p} is a {type(key).__name__.lstrip('_')}, not an Ed25519 key "
                              "(create one with `trustfl keygen --out FILE`)")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 public key in PEM file ``path`` (a private key file is accepted too: its public half).

    Raises:
        SigningKeyError: missing, a directory, or not an Ed25519 key.
    """
    from cryptography.hazmat.primitives import serialization

    p = Path(path)
    data = _read_key_file(p, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (TypeError, ValueError):
            raise SigningKeyError(f"public key {p} is not a PEM public key (the .pub file `trustfl keygen` "
                                  "wrote)") from None
    if not isinstance(key, _crypto().Ed25519PublicKey):
        raise SigningKeyError(f"public key {p} is a {type(key).__name__.lstrip('_')}, not an Ed25519 key")
    return key


def as_private_key(key: Any, *, run_dir: str | os.PathLike[str] | None = None) -> Any:
    """An Ed25519 private key object from a key object or a PEM file path (see :func:`load_private_key`)."""
    if isinstance(key, (str, os.PathLike)):
        return load_private_key(key, run_dir=run_dir)
    if not isinstance(key, _crypto().Ed25519PrivateKey):
        raise SigningKeyError(f"signing_key must be an Ed25519 private key or the path of its PEM file, got "
                              f"{type(key).__name__}")
    return key


def as_public_key(key: Any) -> Any:
    """An Ed25519 public key object from a public key, a private key or a PEM file path."""
    if isinstance(key, (str, os.PathLike)):
        return load_public_key(key)
    ed = _crypto()
    if isinstance(key, ed.Ed25519PrivateKey):
        return key.public_key()
    if not isinstance(key, ed.Ed25519PublicKey):
        raise SigningKeyError(f"public_key must be an Ed25519 public key or the path of its PEM file, got "
                              f"{type(key).__name__}")
    return key


# ----------------------------------------------------------------------------- signatures
def _digests(manifest: Mapping[str, Any]) -> dict[str, str]:
    return {k: hashlib.sha256(canonical_json(v)).hexdigest() for k, v in manifest.items() if k != SIGNATURE_FIELD}


def _signed_part(sig: Mapping[str, Any]) -> bytes:
    return _SIG_DOMAIN + canonical_json({k: sig.get(k) for k in ("algorithm", "key_id", "public_key", "digests")})


def sign_manifest(manifest: dict[str, Any], private_key: Any) -> dict[str, Any]:
    """Set ``manifest["signature"]`` to a fresh signature of every other field; returns ``manifest``."""
    public = private_key.public_key()
    sig: dict[str, Any] = {"algorithm": ALGORITHM, "key_id": key_id(public), "public_key": _raw_public(public).hex(),
                           "digests": _digests(manifest)}
    sig["value"] = private_key.sign(_signed_part(sig)).hex()
    manifest[SIGNATURE_FIELD] = sig
    return manifest


def is_signed(manifest: Mapping[str, Any]) -> bool:
    return SIGNATURE_FIELD in manifest


def signer(manifest: Mapping[str, Any]) -> str | None:
    """The key id that signed ``manifest`` (as the manifest claims it), ``None`` when unsigned."""
    sig = manifest.get(SIGNATURE_FIELD)
    return str(sig.get("key_id")) if isinstance(sig, dict) else (None if sig is None else "?")


def signature_problems(manifest: Mapping[str, Any], public_key: Any | None = None) -> list[tuple[str, str]]:
    """``(where, reason)`` for every signature problem of a signed manifest (empty: valid).

    With ``public_key`` (trusted) the signature must be by that key; without it, it is checked
    against the public key the manifest itself records (catches corruption, not a re-signed forgery).
    """
    ed = _crypto()
    from cryptography.exceptions import InvalidSignature

    where = "manifest.json signature"
    sig = manifest.get(SIGNATURE_FIELD)
    if not isinstance(sig, dict) or sig.get("algorithm") != ALGORITHM:
        return [(where, f"malformed: expected an {ALGORITHM} signature object")]
    try:
        recorded = ed.Ed25519PublicKey.from_public_bytes(bytes.fromhex(str(sig.get("public_key"))))
        value = bytes.fromhex(str(sig.get("value")))
    except ValueError:
        return [(where, "malformed: public_key / value are not hex of an Ed25519 key / signature")]
    key = recorded if public_key is None else as_public_key(public_key)
    if _raw_public(key) != _raw_public(recorded):
        return [(where, f"signed by {key_id(recorded)}, not by the given key {key_id(key)}")]
    try:
        key.verify(value, _signed_part(sig))
    except InvalidSignature:
        return [(where, f"invalid: the signature does not match its signed digests (key {key_id(key)}); the "
                        "signature block was edited")]
    digests = sig.get("digests")
    if not isinstance(digests, dict):
        return [(where, "malformed: no digests")]
    now = _digests(manifest)
    problems = []
    for name in sorted(set(digests) | set(now)):
        if name not in now:
            problems.append((f"manifest.json {name}", "field was removed after signing"))
        elif name not in digests:
            problems.append((f"manifest.json {name}", "field was added after signing"))
        elif digests[name] != now[name]:
            problems.append((f"manifest.json {name}", f"field was modified after signing (signed by {key_id(key)})"))
    return problems


def verify_signature(path: str | os.PathLike[str], public_key: Any) -> str:
    """Check the signature of the run directory ``path`` against a trusted public key; return its key id.

    ``public_key``: an Ed25519 public key, or the path of its PEM file (``trustfl keygen``'s ``.pub``).
    This checks only ``manifest.json`` (signature and hash chain); :meth:`RunDir.verify` with
    ``public_key=`` also checks every file against it.

    Raises:
        UnsignedRunError: the run carries no signature.
        SignatureError: invalid, by another key, a field modified after signing, or the chain broken.
        SigningKeyError: ``public_key`` cannot be loaded.
    """
    from trustfl.rundir.manifest import load_manifest

    key = as_public_key(public_key)
    manifest = load_manifest(path)
    if not is_signed(manifest):
        raise UnsignedRunError(
            f"run {path} is unsigned: it carries no signature to check against {key_id(key)} (sign runs with "
            f"{advice('signing_key=', '--sign-key FILE')})")
    problems = signature_problems(manifest, key) + chain_problems(manifest)
    if problems:
        raise SignatureError(path, problems)
    return key_id(key)
