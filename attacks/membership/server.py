"""Server-side membership attacks: what the stored client updates and global adapters reveal.

The server of a federation (or anyone holding the run directory) sees each client's update
``delta = theta_local - theta_global`` (in :class:`~trustfl.models.ParamLayout` order) and the
global adapter after every round. Local training moves against the loss gradients of the
client's records, so a record's own gradient at the round's starting point aligns with the
negative update when the record was trained on.

* **Record level** (:class:`GradientAlignmentAttack`): cos(grad_theta loss(x; theta_global), -delta),
  averaged over the rounds the client took part in. Gradient-based membership inference from
  updates: Nasr, Shokri & Houmansadr 2019 ("Comprehensive Privacy Analysis of Deep Learning",
  S&P, the active/passive federated attacker using gradients); Melis et al. 2019 ("Exploiting
  Unintended Feature Leakage in Collaborative Learning"); the cosine form is the gradient-alignment
  score of Li et al. 2022 ("Effective Passive Membership Inference Attacks in Federated Learning
  against Overparameterized Models", ICLR 2023).
* **Client level** (:func:`client_membership_scores`): was this client (a set of records) in the
  federation? From the global adapters only: the alignment of the client's mean gradient with each
  round's global step ``-(theta_r - theta_{r-1})``, or the drop of the client's loss from the first to
  the last global adapter (user-level inference, Song & Shmatikov 2019, "Auditing Data Provenance
  in Text-Generation Models", KDD; Kandpal et al. 2023, "User Inference Attacks on LLMs").
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from trustfl.attacks.membership._arrays import as_matrix
from trustfl.attacks.membership._records import TASKS, as_dataset, check_task, tokenized_rows
from trustfl.attacks.membership.base import MembershipAttack
from trustfl.attacks.membership.errors import MembershipError
from trustfl.attacks.membership.loss import per_record_loss

__all__ = ["GradientAlignmentAttack", "client_membership_scores", "common_directions", "gradient_alignment_scores",
           "record_gradients"]


def _layout(model: nn.Module) -> Any:
    from trustfl.models.layout import ParamLayout

    try:
        return ParamLayout.from_model(model)
    except ValueError as exc:
        raise MembershipError(f"model: {exc}; server-side attacks need the adapted model (adapters trainable)") from exc


def record_gradients(model: nn.Module, records: Any, *, tokenizer: Any, task: str, max_length: int = 128,
                     progress: bool = False) -> torch.Tensor:
    """Per-record loss gradients w.r.t. the trainable (adapter + head) parameters, ``[n, d]`` float32.

    Columns follow :class:`~trustfl.models.ParamLayout` of ``model`` (the order of every update
    vector). The loss is training's (mean token cross-entropy / label cross-entropy), computed
    in eval mode (no dropout), one record at a time.
    """
    check_task(task, TASKS, who="record_gradients")
    layout = _layout(model)
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    rows, collate = tokenized_rows(records, tokenizer=tokenizer, task=task, max_length=max_length)
    device = params[0].device
    out = torch.empty((len(rows), layout.size), dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        for i in tqdm(range(len(rows)), desc="record gradients", disable=not progress, leave=False):
            batch = collate([rows[i]])
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            loss = _loss(logits, batch, task)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            out[i] = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                                for g, p in zip(grads, params)]).cpu()
    finally:
        model.train(was_training)
    if not torch.isfinite(out).all():
        raise MembershipError("record_gradients: NaN/Inf gradients; are the model's weights finite?")
    return out


def _loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
    labels = batch["labels"].to(logits.device)
    if task == "classification":
        if int(labels.max()) >= logits.shape[-1]:
            raise MembershipError(f"records: label {int(labels.max())} is outside the model's {logits.shape[-1]} classes")
        return torch.nn.functional.cross_entropy(logits, labels)
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             labels[:, 1:].reshape(-1), ignore_index=-100)


def gradient_alignment_scores(gradients: Any, update: Any) -> torch.Tensor:
    """cos(g_i, -update) per row of ``gradients`` [n, d] (float64; 0 for a zero gradient).

    Raises:
        MembershipError: shapes disagree, NaN/Inf, or an all-zero update (nothing to align with).
    """
    g = as_matrix(gradients, "gradients")
    u = as_matrix(update, "update")
    if u.shape[0] != 1 or u.shape[1] != g.shape[1]:
        raise MembershipError(f"update: expected shape ({g.shape[1]},) to match the gradients, got "
                              f"{tuple(torch.as_tensor(update).shape)}")
    u = -u[0]
    un = u.norm()
    if un == 0:
        raise MembershipError("update: all zeros (the client did not train); no direction to align with")
    gn = g.norm(dim=1)
    return torch.where(gn > 0, (g @ u) / (gn.clamp_min(1e-300) * un), torch.zeros_like(gn))


def _vectors(values: Any, what: str) -> list[torch.Tensor]:
    if isinstance(values, torch.Tensor) and values.ndim == 1:
        values = [values]
    out = [as_matrix(v, f"{what}[{i}]", dtype=torch.float32)[0] for i, v in enumerate(values)]
    if not out:
        raise MembershipError(f"{what}: empty")
    return out


def common_directions(gradients: torch.Tensor, k: int) -> torch.Tensor:
    """The top-``k`` right singular vectors ``[k, d]`` of population gradients ``[m, d]`` (float64)."""
    _, _, vh = torch.linalg.svd(gradients.to(torch.float64), full_matrices=False)
    return vh[:k]


def _project_out(x: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    x = x.to(torch.float64)
    return x if basis is None else x - (x @ basis.T) @ basis


class GradientAlignmentAttack(MembershipAttack):
    """Membership of records in one client's data from its stored update(s) (server-side).

    ``fit(updates=..., global_vectors=..., population=...)``: the client's update(s) and the global
    adapter each round started from (same order; ``global_vectors=None`` with one update: the
    model's current adapter). ``score(model, records)`` loads each starting global into ``model``
    (restored afterwards), computes :func:`record_gradients` and averages
    :func:`gradient_alignment_scores` over the rounds.

    ``remove_components=k`` calibrates with ``population`` records (non-members): the top-k
    directions of their gradients (what every record of the task pushes towards, e.g. a class
    bias) are projected out of the record gradients and the update first, so what remains is
    record-specific (difficulty calibration in the spirit of Watson et al. 2022).
    """

    name: ClassVar[str] = "gradient_alignment"
    tasks: ClassVar[tuple[str, ...]] = TASKS
    needs_reference: ClassVar[bool] = True
    calibration: ClassVar = "client_updates"

    def __init__(self, remove_components: int = 0) -> None:
        if isinstance(remove_components, bool) or not isinstance(remove_components, int) or remove_components < 0:
            raise MembershipError(f"remove_components={remove_components!r}: must be an integer >= 0")
        self.remove_components = remove_components
        self._updates: list[torch.Tensor] = []
        self._globals: list[torch.Tensor] | None = None
        self._population: Any = None

    def fit(self, *, updates: Any, global_vectors: Any = None,  # type: ignore[override]
            population: Any = None) -> "GradientAlignmentAttack":
        ups = _vectors(updates, "updates")
        gls = None if global_vectors is None else _vectors(global_vectors, "global_vectors")
        if gls is None and len(ups) > 1:
            raise MembershipError("GradientAlignmentAttack.fit: several updates need their global_vectors (the "
                                  "global adapter each round started from)")
        if gls is not None and len(gls) != len(ups):
            raise MembershipError(f"GradientAlignmentAttack.fit: {len(ups)} updates but {len(gls)} global_vectors")
        sizes = {v.numel() for v in ups + (gls or [])}
        if len(sizes) != 1:
            raise MembershipError(f"GradientAlignmentAttack.fit: vectors of different sizes {sorted(sizes)}")
        if self.remove_components and population is None:
            raise MembershipError(f"GradientAlignmentAttack(remove_components={self.remove_components}).fit: "
                                  "population records (non-members) are required to find the common directions")
        if population is not None and len(population) < self.remove_components:
            raise MembershipError(f"GradientAlignmentAttack.fit: {len(population)} population records cannot give "
                                  f"{self.remove_components} directions")
        self._updates, self._globals, self._population = ups, gls, population
        return self._fitted()  # type: ignore[return-value]

    def _score(self, model: nn.Module, records: Any, *, tokenizer: Any, task: str, max_length: int,
               batch_size: int, progress: bool) -> torch.Tensor:
        layout = _layout(model)
        if self._updates[0].numel() != layout.size:
            raise MembershipError(f"GradientAlignmentAttack: updates have {self._updates[0].numel()} entries but the "
                                  f"model's adapter layout has {layout.size}; give the run's model")
        original = layout.flatten(model)
        total = torch.zeros(len(records), dtype=torch.float64)
        kw = dict(tokenizer=tokenizer, task=task, max_length=max_length, progress=progress)
        try:
            for r, update in enumerate(self._updates):
                if self._globals is not None:
                    layout.load_into(model, self._globals[r])
                basis = None
                if self.remove_components:
                    basis = common_directions(record_gradients(model, self._population, **kw), self.remove_components)
                grads = _project_out(record_gradients(model, records, **kw), basis)
                total += gradient_alignment_scores(grads, _project_out(update[None], basis)[0])
        finally:
            layout.load_into(model, original)
        return total / len(self._updates)


def client_membership_scores(model: nn.Module, clients: Sequence[Any], global_vectors: Any, *, tokenizer: Any,
                             task: str, method: Literal["alignment", "loss_drop"] = "alignment",
                             reduce: Literal["mean", "max"] = "mean", max_length: int = 128, batch_size: int = 32,
                             progress: bool = False) -> torch.Tensor:
    """Client-level membership scores (higher = the client more likely took part), float64 ``[len(clients)]``.

    Args:
        model: the adapted model of the run (its adapter is restored afterwards).
        clients: one set of records per candidate client.
        global_vectors: ``[R + 1, d]`` the initial global adapter and the global after each round.
        method: ``"alignment"``: cos(mean record gradient of the client at theta_{r-1},
            -(theta_r - theta_{r-1})) per round, reduced over rounds by ``reduce``;
            ``"loss_drop"``: the client's mean loss under theta_0 minus under theta_R.

    Raises:
        MembershipError: no clients, fewer than 2 global vectors, sizes that do not match the
            model, bad ``method``/``reduce``, and the record errors of :func:`per_record_loss`.
    """
    if method not in ("alignment", "loss_drop"):
        raise MembershipError(f"method={method!r}; valid: ['alignment', 'loss_drop']")
    if reduce not in ("mean", "max"):
        raise MembershipError(f"reduce={reduce!r}; valid: ['mean', 'max']")
    if not clients:
        raise MembershipError("clients: empty; give one set of records per candidate client")
    check_task(task, TASKS, who="client_membership_scores")
    globals_ = as_matrix(global_vectors, "global_vectors", dtype=torch.float32)
    if globals_.shape[0] < 2:
        raise MembershipError("global_vectors: need the initial global and at least one round's global")
    layout = _layout(model)
    if globals_.shape[1] != layout.size:
        raise MembershipError(f"global_vectors: {globals_.shape[1]} entries per vector but the model's adapter layout "
                              f"has {layout.size}")
    clients = [as_dataset(c, task=task) for c in clients]
    original = layout.flatten(model)
    scores = torch.empty(len(clients), dtype=torch.float64)
    kw = dict(tokenizer=tokenizer, task=task, max_length=max_length)
    try:
        if method == "loss_drop":
            first, last = [], []
            for vec, store in ((globals_[0], first), (globals_[-1], last)):
                layout.load_into(model, vec)
                store.extend(float(per_record_loss(model, c, batch_size=batch_size, **kw).mean()) for c in clients)
            return torch.tensor(first, dtype=torch.float64) - torch.tensor(last, dtype=torch.float64)
        per_round = torch.zeros((globals_.shape[0] - 1, len(clients)), dtype=torch.float64)
        for r in tqdm(range(1, globals_.shape[0]), desc="rounds", disable=not progress, leave=False):
            step = globals_[r] - globals_[r - 1]
            layout.load_into(model, globals_[r - 1])
            if step.norm() == 0:
                continue  # an empty round moved nothing: no evidence either way
            for c, records in enumerate(clients):
                mean_grad = record_gradients(model, records, **kw).mean(0, keepdim=True)
                per_round[r - 1, c] = gradient_alignment_scores(mean_grad, step)[0]
        scores = per_round.mean(0) if reduce == "mean" else per_round.max(0).values
    finally:
        layout.load_into(model, original)
    return scores
