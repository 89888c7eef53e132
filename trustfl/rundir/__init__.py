"""The run directory: a self-contained, verifiable record of one federated run.

A user's own training loop (or another FL framework) records its rounds through
:class:`RunWriter`; every audit reads them later through :class:`RunDir`, without the
process that wrote them. Layout::

    manifest.json                                 # commit point, atomically rewritten
    metrics.jsonl                                 # one JSON object per completed round
    globals/round_0000.safetensors                # initial global ("vector", float32 (d,))
    globals/round_0001.safetensors                # global after round 1, ...
    updates/round_0001/client_0003.safetensors    # client deltas ("delta"), optional
    state/round_0001.safetensors                  # server state tensors, optional

Each round record carries the hash of the previous one (a hash chain); with
``RunWriter.create(..., signing_key=...)`` every commit is signed with the operator's Ed25519
key, checked by ``RunDir(path).verify(public_key=...)`` or :func:`verify_signature`.

Example:
    >>> import tempfile, torch
    >>> from trustfl.rundir import RunDir, RunWriter
    >>> path = tempfile.mkdtemp() + "/run"
    >>> w = RunWriter.create(path, config={"rounds": 1}, seeds={"global": 0},
    ...                      layout={"names": ["w"], "shapes": [[3]], "dtype": "float32"})
    >>> w.write_initial(torch.zeros(3))
    >>> w.write_round(1, global_vector=torch.ones(3), client_updates={0: (torch.ones(3), 5)})
    >>> RunDir(path).client_update(1, 0)
    (tensor([1., 1., 1.]), 5)
"""

from trustfl.rundir.atomic import atomic_write_bytes, sha256_file
from trustfl.rundir.errors import (
    ConfigMismatchError,
    CorruptRunError,
    InvalidTensorError,
    RecordsMismatchError,
    RoundOrderError,
    RunDirError,
    RunDirExistsError,
)
from trustfl.rundir.manifest import FORMAT, layout_size
from trustfl.rundir.reader import RunDir, VerifyReport
from trustfl.rundir.signing import (
    SignatureError,
    SigningKeyError,
    UnsignedRunError,
    chain_problems,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    verify_signature,
)
from trustfl.rundir.writer import RunWriter

__all__ = [
    "ConfigMismatchError",
    "CorruptRunError",
    "FORMAT",
    "InvalidTensorError",
    "RecordsMismatchError",
    "RoundOrderError",
    "RunDir",
    "RunDirError",
    "RunDirExistsError",
    "RunWriter",
    "SignatureError",
    "SigningKeyError",
    "UnsignedRunError",
    "VerifyReport",
    "atomic_write_bytes",
    "chain_problems",
    "generate_key",
    "key_id",
    "layout_size",
    "load_private_key",
    "load_public_key",
    "sha256_file",
    "verify_signature",
]
