"""``[origin]``: typed settings of the origin checks, read from a run config file.

A file such as ``examples/synthetic_origin.toml`` holds an ordinary trustfl run config (the
tables :class:`~trustfl.config.RunConfig` knows) plus one ``[origin]`` table;
:func:`load_origin_config` splits them, validates both and rejects unknown keys, with the
field's dotted path in the message (``origin.lcs_chars: must be >= 8, got 3``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from trustfl.errors import ConfigError

__all__ = ["FILE_MODE_FLAGS", "OriginSettings", "file_mode_default", "load_origin_config"]

#: ``trustfl origin`` file-mode flags whose defaults come from :class:`OriginSettings` (the one source of
#: defaults of both modes; ``--help`` shows them): field name -> flag.
FILE_MODE_FLAGS: dict[str, str] = {
    "methods": "--methods", "lcs_chars": "--lcs-chars", "jaccard_threshold": "--jaccard-threshold",
    "cosine_threshold": "--cosine-threshold", "num_perm": "--num-perm", "ngram": "--ngram",
    "embed_model": "--embed-model", "dcr_spaces": "--dcr-space", "attribution_scores": "--attribution-scores",
}


def file_mode_default(name: str) -> Any:
    """The default of ``OriginSettings.<name>`` as its command-line flag takes it (lists as comma lists)."""
    value = getattr(OriginSettings(), name)
    return ",".join(value) if isinstance(value, list) else value


def _check(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"origin.{path}: {msg}")


@dataclass
class OriginSettings:
    """What ``trustfl origin --config`` samples and checks (docs/origin.md).

    Attributes:
        methods: copy-detection criteria, subset of ``exact, lcs, minhash, embedding``.
        lcs_chars: LCS length in characters that counts as a copy (>= 8).
        jaccard_threshold: MinHash estimated Jaccard that counts as a copy, in (0, 1].
        cosine_threshold: embedding cosine that counts as a copy, in (-1, 1].
        num_perm, ngram: MinHash signature length and character shingle size.
        embed_model: encoder of the embedding criterion and the DCR test.
        dcr_spaces: DCR distances: ``embedding`` (cosine) and/or ``minhash`` (1 - Jaccard).
        num_samples, max_new_tokens, temperature, top_k, top_p, sample_batch_size: sampling
            of synthetic records from the run's final global model.
        first_token: ``"start"`` samples from the start token alone; ``"test"`` draws each sample's
            first token from the first tokens of the run's test texts (never trained on), because
            trustfl's causal-LM training adds no start token, so ``p(first | start)`` is untrained.
        num_human: at most this many real held-out texts (the run's test rows, a seeded choice) for attribution.
        attribution_scores: subset of ``curvature`` (Fast-DetectGPT under G) and ``likelihood_ratio``
            (G vs the base FM); each gets its own calibrated threshold and AUC.
        calibration_fraction: share of the known texts used to fit the attribution threshold.
        score_max_length: tokens per text scored for attribution.
        key_file: key of the keyed codes (created if missing); unset: derived from the run seed.
        seed: sampling / splitting seed; unset: the run seed.
        threads: torch intra-op threads for the whole command (training included); unset: torch's
            default (one per core). 1 is much faster when other processes share the cores, as
            OpenMP threads then wait for each other at every small op.
    """

    methods: list[str] = field(default_factory=lambda: ["exact", "lcs", "minhash", "embedding"])
    lcs_chars: int = 50
    jaccard_threshold: float = 0.7
    cosine_threshold: float = 0.95
    num_perm: int = 128
    ngram: int = 5
    embed_model: str = "minilm"
    dcr_spaces: list[str] = field(default_factory=lambda: ["embedding", "minhash"])
    num_samples: int = 150
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    sample_batch_size: int = 16
    first_token: Literal["start", "test"] = "start"
    num_human: int = 150
    attribution_scores: list[str] = field(default_factory=lambda: ["curvature", "likelihood_ratio"])
    calibration_fraction: float = 0.5
    score_max_length: int = 48
    key_file: str | None = None
    seed: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        valid = ["exact", "lcs", "minhash", "embedding"]
        _check(bool(self.methods) and all(m in valid for m in self.methods) and
               len(set(self.methods)) == len(self.methods), "methods",
               f"must be a non-empty subset of {valid} without repeats, got {self.methods}")
        _check(all(s in ("embedding", "minhash") for s in self.dcr_spaces) and
               len(set(self.dcr_spaces)) == len(self.dcr_spaces), "dcr_spaces",
               f"must be a subset of ['embedding', 'minhash'] without repeats, got {self.dcr_spaces}")
        _check(self.lcs_chars >= 8, "lcs_chars", f"must be >= 8, got {self.lcs_chars}")
        _check(0 < self.jaccard_threshold <= 1, "jaccard_threshold", f"must be in (0, 1], got {self.jaccard_threshold}")
        _check(-1 < self.cosine_threshold <= 1, "cosine_threshold", f"must be in (-1, 1], got {self.cosine_threshold}")
        _check(self.num_perm >= 8, "num_perm", f"must be >= 8, got {self.num_perm}")
        _check(self.ngram >= 1, "ngram", f"must be >= 1, got {self.ngram}")
        _check(self.num_samples >= 4, "num_samples", f"must be >= 4, got {self.num_samples}")
        _check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        _check(self.top_k is None or self.top_k >= 1, "top_k", f"must be >= 1 or unset, got {self.top_k}")
        _check(self.top_p is None or 0 < self.top_p <= 1, "top_p", f"must be in (0, 1] or unset, got {self.top_p}")
        _check(self.sample_batch_size >= 1, "sample_batch_size", f"must be >= 1, got {self.sample_batch_size}")
        _check(self.num_human >= 4, "num_human", f"must be >= 4, got {self.num_human}")
        scores = ["curvature", "likelihood_ratio"]
        _check(all(x in scores for x in self.attribution_scores) and
               len(set(self.attribution_scores)) == len(self.attribution_scores), "attribution_scores",
               f"must be a subset of {scores} without repeats, got {self.attribution_scores}")
        _check(0 < self.calibration_fraction < 1, "calibration_fraction",
               f"must be in (0, 1), got {self.calibration_fraction}")
        _check(self.threads is None or self.threads >= 1, "threads", f"must be >= 1 or unset, got {self.threads}")
        _check(self.score_max_length >= 2, "score_max_length", f"must be >= 2, got {self.score_max_length}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_origin_config(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[Any, OriginSettings]:
    """``(RunConfig, OriginSettings)`` from a TOML/YAML file with run tables and an ``[origin]`` table.

    ``overrides`` maps dotted keys (``"federation.rounds"``, ``"origin.num_samples"``) to values.

    Raises:
        ConfigError: missing/unparsable file, unknown keys, bad values (dotted path in the message).
    """
    from trustfl.config import RunConfig, from_dict, read_config_file

    data = read_config_file(path, overrides)
    origin = data.pop("origin", {})
    if not isinstance(origin, dict):
        raise ConfigError(f"origin: must be a table/section, got {type(origin).__name__}")
    run = RunConfig.from_dict(data)
    if run.model.task != "causal_lm":
        raise ConfigError(f"model.task: origin checks sample synthetic text, so the run must be a causal LM "
                          f"(task = 'causal_lm'), got {run.model.task!r}")
    settings = from_dict(OriginSettings, origin, "origin")
    if settings.dcr_spaces and run.data.holdout_fraction == 0:
        raise ConfigError("data.holdout_fraction: the DCR test compares with each client's holdout, so it must be "
                          "> 0 (e.g. 0.5); or set origin.dcr_spaces = [] to skip the DCR test")
    return run, settings
