"""Records and a hand computation the membership-inference tests share (fixtures tiny_lm / tiny_clf: conftest)."""

from __future__ import annotations

import numpy as np
import torch

TEXTS = ["the cat sat on the mat", "a quick brown fox jumps", "hello world again and again",
         "membership inference is a privacy attack", "ok then"]


def hand_lm_tokens(model, tokenizer, text, max_length=128):
    """Log-probs of each predicted token from a one-record forward, softmax by hand in numpy."""
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    z = logits[:-1]
    m = z.max(axis=1, keepdims=True)
    logsumexp = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    tgt = np.array(ids[1:])
    logp_all = z - logsumexp[:, None]
    return logp_all[np.arange(len(tgt)), tgt], logp_all
