"""Sentence embeddings (MiniLM by default) for semantic near-duplicates and embedding-cosine copies.

Dedup computes them on the client (they are never sent); origin checks compare them directly.

Mean pooling of the last hidden states over the attention mask, then L2 normalisation:
exactly how sentence-transformers' all-MiniLM-L6-v2 produces its 384-d sentence vectors.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from trustfl.text.errors import TextError

__all__ = ["embed_texts", "load_embedder"]


@functools.lru_cache(maxsize=2)
def load_embedder(model: str = "minilm") -> Any:
    """Load (once per process) the encoder and tokenizer via :func:`trustfl.models.load_fm`."""
    from trustfl.models import load_fm

    fm = load_fm(model, task="embedding")
    fm.model.eval()
    return fm


def embed_texts(texts: Sequence[str], model: str = "minilm", *, batch_size: int = 64, max_length: int = 64,
                progress: bool = True) -> np.ndarray:
    """Embed ``texts`` with an FM encoder: mean pooling + L2 normalisation (Reimers & Gurevych 2019).

    Texts are sorted by length before batching (less padding); the output keeps input order.

    Args:
        texts: raw texts (the model sees them un-normalised, as it was trained).
        model: ``"minilm"`` (offline built-in) or any encoder :func:`trustfl.models.load_fm` accepts.
        max_length: tokens per text (longer texts are truncated).

    Returns:
        ``[n, hidden]`` float32, rows of unit L2 norm (``[n, 384]`` for MiniLM).

    Raises:
        TextError: ``texts`` is a single string or holds non-strings; bad ``batch_size``/``max_length``.
    """
    if isinstance(texts, str):
        raise TextError("texts must be a sequence of str, got a single str; wrap it in a list")
    if batch_size < 1 or max_length < 2:
        raise TextError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise TextError(f"texts must all be str, found {type(bad).__name__}: {bad!r:.60}")
    import torch
    from tqdm.auto import tqdm

    fm = load_embedder(model)
    hidden = int(fm.model.config.hidden_size)
    out = np.empty((len(texts), hidden), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    bar = tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress, leave=False)
    with torch.inference_mode():
        for lo in range(0, len(texts), batch_size):
            idx = order[lo:lo + batch_size]
            enc = fm.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt")
            states = fm.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.float().numpy()
            bar.update(len(idx))
    bar.close()
    return out
