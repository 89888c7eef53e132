"""Sample synthetic texts from a causal LM by temperature sampling (Ackley, Hinton & Sejnowski 1985;
Holtzman et al. 2020 for top-p), seeded per batch, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from trustfl.audits.origin.errors import OriginError
from trustfl.audits.origin.likelihood import start_token_id

__all__ = ["sample_texts"]


@torch.inference_mode()
def sample_texts(model: torch.nn.Module, tokenizer: Any, *, num_samples: int, max_new_tokens: int = 40,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                 batch_size: int = 16, max_attempts: int = 4, first_tokens: Sequence[int] | None = None,
                 progress: bool = True) -> list[str]:
    """``num_samples`` non-empty texts, each generated from the start token (BOS, else EOS, else CLS).

    Batch ``b`` uses torch seed ``seed * 100003 + b`` in a forked RNG (the global RNG is untouched),
    so the same arguments give the same texts. Samples that decode to an empty string are
    redrawn, up to ``max_attempts * num_samples`` draws in total.

    Args:
        first_tokens: if given, each sample's first token is drawn uniformly (seeded) from this
            list (an empirical first-token distribution, e.g. of public held-out texts) and the
            model continues from ``[start, first]``. Use it when the model was fine-tuned on texts
            without a start token: then ``p(first token | start)`` was never trained and sampling
            straight from the start token mostly yields the base model's text.

    Raises:
        OriginError: bad arguments, or too many empty samples.
    """
    if num_samples < 1 or max_new_tokens < 1 or batch_size < 1:
        raise OriginError(f"num_samples, max_new_tokens and batch_size must be >= 1, got {num_samples}, "
                          f"{max_new_tokens}, {batch_size}")
    if not temperature > 0:
        raise OriginError(f"temperature must be > 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise OriginError(f"top_p must be in (0, 1], got {top_p}")
    start = start_token_id(tokenizer)
    if first_tokens is not None and len(first_tokens) == 0:
        raise OriginError("first_tokens is empty; pass None to start from the start token alone")
    pick = np.random.default_rng(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    out: list[str] = []
    drawn, batch = 0, 0
    bar = tqdm(total=num_samples, desc="sampling", unit="text", disable=not progress)
    try:
        while len(out) < num_samples:
            if drawn >= max_attempts * num_samples:
                raise OriginError(f"only {len(out)} of {num_samples} samples were non-empty after {drawn} draws; "
                                  "raise max_new_tokens or temperature")
            b = min(batch_size, num_samples - len(out))
            inp = torch.full((b, 1), start, dtype=torch.long)
            if first_tokens is not None:
                first = torch.as_tensor(np.asarray(first_tokens)[pick.integers(0, len(first_tokens), b)])
                inp = torch.cat([inp, first.long()[:, None]], dim=1)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 100003 + batch)
                gen = model.generate(input_ids=inp, attention_mask=torch.ones_like(inp), do_sample=True,
                                     temperature=float(temperature), top_k=top_k if top_k else 0,
                                     top_p=top_p if top_p else 1.0, max_new_tokens=max_new_tokens,
                                     pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(gen[:, 1:], skip_special_tokens=True)
            # kept exactly as decoded: normalising whitespace would change the tokens G chose, and
            # attribution scores (curvature) depend on them
            new = [t for t in texts if t.strip()][:num_samples - len(out)]
            out += new
            bar.update(len(new))
            drawn += b
            batch += 1
    finally:
        bar.close()
        model.train(was_training)
    return out
