"""The one-run canary audit: score the run's planted canaries, guess which were in, bound ε from below
(Steinke, Nasr & Jagielski 2023) and measure each canary's exposure (Carlini et al. 2019).

The score of a canary is fixed before looking at the results: ``loss_reference - loss_target`` with the
shadow adapter as the reference when one was trained (it saw no canary, so it calibrates away what any
model would say about a random secret, e.g. "digit strings look like spam"), else ``-loss_target``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from trustfl.audits.privacy.empirical import canary_epsilon
from trustfl.audits.privacy.exposure import exposure
from trustfl.audits.privacy.membership import ScoreCache
from trustfl.audits.privacy.settings import PrivacyAuditSettings

__all__ = ["accounted_epsilon", "canary_audit", "candidate_texts"]


def accounted_epsilon(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The accountant's ε for ONE record of one client, from the manifest's privacy record: the sample level
    (max over clients), else the client level (a client-level guarantee covers each of its records)."""
    recorded = (manifest.get("extra") or {}).get("privacy") or {}
    found = []
    sample = recorded.get("sample") or {}
    if sample.get("epsilon_max") is not None:
        found.append({"level": "sample", "epsilon": float(sample["epsilon_max"]), "delta": sample.get("delta")})
    client = recorded.get("client") or {}
    if client.get("epsilon") is not None:
        found.append({"level": "client", "epsilon": float(client["epsilon"]), "delta": client.get("delta")})
    return min(found, key=lambda f: f["epsilon"]) if found else None


def candidate_texts(canaries: list[dict[str, Any]], settings_record: dict[str, Any], n: int, seed: int) -> list[str]:
    """Up to ``n`` distinct random texts of the canaries' format (their prefix and ``secret_digits`` random digits),
    none of them a canary: ``min(n, 10**secret_digits - m)`` of them (the format's space minus the m canaries).

    Drawn directly, not as a :class:`~trustfl.attacks.membership.CanarySettings` (whose ``10**digits >= 100 m``
    rule is about planting, not about sampling candidates).
    """
    import numpy as np

    from trustfl.attacks.membership.canaries import canary_text

    digits = int(settings_record.get("secret_digits", 12))
    prefix = str(settings_record.get("prefix", ""))
    taken = {c["text"] for c in canaries}
    space = 10 ** digits
    want = max(0, min(n, space - len(taken)))
    rng = np.random.default_rng(seed)
    if space <= 10**7:  # small space: without replacement, so the cap is reached exactly
        drawn = rng.choice(space, size=min(space, want + len(taken)), replace=False)
        return [t for t in (canary_text(prefix, str(int(x)).zfill(digits)) for x in drawn) if t not in taken][:want]
    out: list[str] = []
    seen = set(taken)
    while len(out) < want:  # a huge space: collisions are rare, rejected all the same
        for row in rng.integers(0, 10, size=(want - len(out), digits)):
            text = canary_text(prefix, "".join(map(str, row)))
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out


def canary_audit(run: Any, rm: Any, canaries: list[dict[str, Any]], settings: PrivacyAuditSettings, *,
                 cache: ScoreCache, reference_vector: torch.Tensor | None = None) -> dict[str, Any]:
    """Empirical ε lower bound and exposure of the run's canaries (JSON-ready dict; no canary text in it)."""
    from trustfl.attacks.membership import per_record_loss

    kw = dict(tokenizer=rm.tokenizer, task=rm.task, max_length=rm.max_length, batch_size=settings.batch_size,
              progress=settings.progress)
    cls = rm.task == "classification"
    records = [{"text": c["text"], **({"label": int(c["label"])} if cls else {})} for c in canaries]
    included = np.array([bool(c["included"]) for c in canaries])
    info = (run.manifest.get("extra") or {}).get("canaries") or {}
    ref = reference_vector
    key = ScoreCache.key(target=hashlib.sha256(rm.vector.numpy().tobytes()).hexdigest(), canaries=info.get("sha256"),
                         ref=hashlib.sha256(ref.numpy().tobytes()).hexdigest() if ref is not None else None,
                         candidates=settings.candidates, draw="candidate_texts/1", seed=settings.seed,
                         max_length=rm.max_length)
    hit = cache.get("canaries", key) if settings.cache else None
    if hit is None:
        target = per_record_loss(rm.use(rm.vector), records, **kw)
        reference = per_record_loss(rm.use(ref), records, **kw) if ref is not None else None
        cand_texts = candidate_texts(canaries, info.get("settings") or {}, settings.candidates, settings.seed + 7919)
        labels = sorted({int(c["label"]) for c in canaries}) if cls else [None]
        cand: dict[str, list[float]] = {}
        model = rm.use(rm.vector)
        for label in labels:
            recs = [{"text": t, **({"label": label} if cls else {})} for t in cand_texts]
            cand[str(label)] = per_record_loss(model, recs, **kw).tolist()
        hit = {"target": target.tolist(), "reference": reference.tolist() if reference is not None else None,
               "candidates": cand}
        cache.put("canaries", key, hit)
    rm.use(rm.vector)
    target = np.asarray(hit["target"])
    scores = (np.asarray(hit["reference"]) - target) if hit["reference"] is not None else -target
    acc = accounted_epsilon(run.manifest)
    delta = float(acc["delta"]) if acc and acc.get("delta") is not None else 1e-5
    bound = canary_epsilon(scores, included, delta=delta, confidence=settings.confidence, seed=settings.seed)
    n_cand = len(next(iter(hit["candidates"].values())))
    digits = int((info.get("settings") or {}).get("secret_digits", 12))
    exp = np.array([exposure([target[i]], hit["candidates"][str(int(c["label"])) if cls else "None"])[0]
                    for i, c in enumerate(canaries)])
    out: dict[str, Any] = {
        **bound.to_dict(),
        "score": ("loss_reference - loss_target (shadow adapter as the reference)" if hit["reference"] is not None
                  else "-loss_target"),
        "delta_source": "the accountant's delta" if acc else "no DP recorded: delta = 1e-5 assumed",
        "accounted": acc,
        "exposure": {"candidates": n_cand, "candidates_requested": settings.candidates,
                     "candidates_capped": (f"{n_cand} < {settings.candidates}: a {digits}-digit secret has only "
                                           f"10^{digits} values, {len(canaries)} of them canaries")
                     if n_cand < settings.candidates else None,
                     "max_bits": float(np.log2(n_cand + 1)),
                     "mean_included": float(exp[included].mean()) if included.any() else None,
                     "mean_excluded": float(exp[~included].mean()) if (~included).any() else None,
                     "max_included": float(exp[included].max()) if included.any() else None,
                     "method": "Carlini et al. 2019, rank among random candidate secrets of the same format"},
    }
    if acc:
        eps = acc["epsilon"]
        out["empirical_within_accounted"] = bool(bound.epsilon <= eps * (1 + 1e-9))
        out["tightness"] = bound.epsilon / eps if eps > 0 else None
    return out
