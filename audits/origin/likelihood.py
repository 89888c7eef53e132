"""Per-text token statistics under a causal LM, and loading the fine-tuned model of a run.

``mean_token_loglik`` scores ``(1/T) Σ_t log p(x_t | start, x_<t)`` over the text's T tokens,
``TokenStats.curvature`` is Fast-DetectGPT's analytic score (Bao et al. 2024); both condition
on one start token (the tokenizer's BOS, else EOS, else CLS), exactly how
:func:`~trustfl.audits.origin.sampling.sample_texts` starts a sample, so generated and human
texts are scored the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from trustfl.audits.origin.errors import OriginError

__all__ = ["TokenStats", "load_run_model", "mean_token_loglik", "start_token_id", "token_statistics"]


def start_token_id(tokenizer: Any) -> int:
    """The token every sample starts from and every text is scored after: BOS, else EOS, else CLS."""
    for name in ("bos_token_id", "eos_token_id", "cls_token_id"):
        tid = getattr(tokenizer, name, None)
        if tid is not None:
            return int(tid)
    raise OriginError("the tokenizer has no BOS, EOS or CLS token to start texts from")


@dataclass(frozen=True)
class TokenStats:
    """Per-text sums over the scored tokens of a causal LM's predictions (float64 ``[n]`` each).

    ``loglik`` = Σ_t log p(x_t | x_<t); ``expected`` = Σ_t E_{v~p(.|x_<t)}[log p(v | x_<t)] (minus the
    entropy); ``variance`` = Σ_t Var_{v~p(.|x_<t)}[log p(v | x_<t)]; ``tokens`` = number of scored tokens.
    """

    loglik: np.ndarray
    expected: np.ndarray
    variance: np.ndarray
    tokens: np.ndarray

    @property
    def mean_loglik(self) -> np.ndarray:
        """Mean log-likelihood per scored token (nats)."""
        return self.loglik / self.tokens

    @property
    def curvature(self) -> np.ndarray:
        """Fast-DetectGPT's analytic conditional probability curvature (Bao et al. 2024, ICLR, Eq. 4-5 with the
        scoring model as sampling model): ``(Σ log p(x_t) − Σ E[log p]) / sqrt(Σ Var[log p])``. For a text the
        model sampled itself (temperature 1, no truncation) it has mean 0 and variance ~1; text written by
        someone else sits lower (a model's own samples are "typical" for it, other text is not)."""
        return (self.loglik - self.expected) / np.sqrt(np.maximum(self.variance, 1e-12))


@torch.inference_mode()
def token_statistics(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 64,
                     skip_first: int = 0, batch_size: int = 16, progress: bool = False,
                     desc: str = "log-likelihood") -> TokenStats:
    """:class:`TokenStats` of each text under ``model``, the text scored after one start token.

    Args:
        model: a causal LM (``logits`` of shape ``[b, L, vocab]``), put in eval mode here.
        tokenizer: its tokenizer (no special tokens are added besides the start token).
        max_length: tokens per text (longer texts are truncated; the start token not counted).
        skip_first: leave the first ``skip_first`` tokens of each text unscored (they still condition
            the rest), e.g. 1 when the first token was not chosen by the model (``sample_texts(first_tokens=)``).

    Raises:
        OriginError: a text is empty or has no token left to score; bad sizes.
    """
    if isinstance(texts, str):
        raise OriginError("texts must be a sequence of str, got a single str; wrap it in a list")
    if max_length < 1 or batch_size < 1 or skip_first < 0:
        raise OriginError(f"max_length and batch_size must be >= 1 and skip_first >= 0, got {max_length}, "
                          f"{batch_size}, {skip_first}")
    start = start_token_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_length] for t in texts]
    short = [i for i, x in enumerate(ids) if len(x) <= skip_first]
    if short:
        raise OriginError(f"texts {short[:5]} tokenise to {skip_first} token(s) or fewer, leaving nothing to "
                          "score; drop empty or one-token texts")
    was_training = model.training
    model.eval()
    sums = np.zeros((4, len(ids)), dtype=np.float64)
    order = np.argsort([len(x) for x in ids], kind="stable")
    bar = tqdm(total=len(ids), desc=desc, unit="text", disable=not progress, leave=False)
    try:
        for lo in range(0, len(ids), batch_size):
            idx = order[lo:lo + batch_size]
            width = 1 + max(len(ids[i]) for i in idx)
            inp = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                seq = [start] + ids[i]
                inp[r, :len(seq)] = torch.tensor(seq)
                mask[r, :len(seq)] = 1
            logits = model(input_ids=inp, attention_mask=mask).logits[:, :-1]
            m = mask[:, 1:].double()
            m[:, :skip_first] = 0.0
            for r, i in enumerate(idx):  # one text at a time in float64: [L, vocab] stays small
                logp_all = torch.log_softmax(logits[r].double(), dim=-1)
                prob = logp_all.exp()
                expected = (prob * logp_all).sum(-1)
                variance = (prob * (logp_all - expected[:, None]).square()).sum(-1)
                logp = logp_all.gather(-1, inp[r, 1:, None]).squeeze(-1)
                for row, v in enumerate((logp, expected, variance, torch.ones_like(logp))):
                    sums[row, i] = float((v * m[r]).sum())
            bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    return TokenStats(loglik=sums[0], expected=sums[1], variance=sums[2], tokens=sums[3])


def mean_token_loglik(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 64,
                      skip_first: int = 0, batch_size: int = 16, progress: bool = False,
                      desc: str = "log-likelihood") -> np.ndarray:
    """Mean log-likelihood per token (nats) of each text under ``model`` (float64 ``[n]``); see
    :func:`token_statistics` for the arguments."""
    return token_statistics(model, tokenizer, texts, max_length=max_length, skip_first=skip_first,
                            batch_size=batch_size, progress=progress, desc=desc).mean_loglik


def load_run_model(run_dir: str | Path, *, round: int | None = None) -> tuple[torch.nn.Module, Any, Any]:
    """Rebuild the FM + LoRA model of a trustfl run directory with its final (or ``round``'s) global adapter.

    The FM and adapter structure come from the recorded config (same seeds as
    :class:`~trustfl.federation.Federation`), the adapter values from
    ``globals/round_XXXX.safetensors`` (sha256-checked by :class:`~trustfl.rundir.RunDir`).
    The base FM is the same model with adapters disabled (``with model.disable_adapter():``).

    Returns:
        ``(peft_model, tokenizer, run_config)``.

    Raises:
        OriginError: the run has no completed round or its layout does not match the rebuilt model.
    """
    from trustfl.config import RunConfig
    from trustfl.seeding import derive_seed
    from trustfl.models import ParamLayout, apply_lora, load_fm
    from trustfl.rundir import RunDir

    run = RunDir(run_dir)
    r = run.completed_rounds if round is None else int(round)
    if r < 1 and round is None:
        raise OriginError(f"run directory {str(run_dir)!r} has no completed round; finish or resume the run first")
    cfg = RunConfig.from_dict(run.config)
    names = run.manifest.get("extra", {}).get("label_names")
    fm = load_fm(cfg.model.name, task=cfg.model.task, num_labels=len(names) if names else None,
                 seed=derive_seed(cfg.seed, "head") % 2**32, pooling=cfg.model.pooling)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "lora"))
        model = apply_lora(fm.model, cfg.lora, task=cfg.model.task)
    stored = ParamLayout.from_dict(run.layout)
    built = ParamLayout.from_model(model)
    if stored.names != built.names or stored.shapes != built.shapes:
        raise OriginError(f"run {str(run_dir)!r}: the recorded adapter layout ({stored.size} values) does not match "
                          f"the model rebuilt from its config ({built.size}); was the model folder changed?")
    stored.load_into(model, run.global_vector(r))
    model.eval()
    return model, fm.tokenizer, cfg
