"""Sample-level DP for local LoRA training: DP-SGD through Opacus on the adapter (+ head) only.

Abadi et al. 2016, "Deep Learning with Differential Privacy" (CCS), Algorithm 1: per-sample
gradients are clipped to L2 norm C, summed, and N(0, σ²C²) noise is added, on batches drawn
by Poisson sampling at rate q; the privacy loss is accounted per step (their Theorem 1; here
Opacus's RDP accountant, see :mod:`.accounting`). Only trainable parameters (LoRA matrices and
the classification head) get per-sample gradients: the frozen FM, and with the frozen-prefix
cache the frozen blocks entirely, cost nothing extra.

Two ways in:

* :class:`DPAdapterTraining` — a :class:`~trustfl.types.ClientPrivacyHook` for
  trustfl's loop; one Opacus ``PrivacyEngine`` (one accountant) per client.
* :func:`make_private` — your own PEFT model + optimizer + DataLoader, in three lines.

Both put the model in train mode, and check after the first private step that every adapter
tensor actually changed (PEFT + Opacus can silently train a copy or nothing: Opacus issue
#820) and raise :class:`DPCheckError` otherwise. Empty Poisson batches are real DP-SGD steps with an empty
sum: the noise-only update is applied and accounted here, never skipped.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Literal

import torch
from torch import nn

from trustfl.defenses.dp.accounting import epsilon_kwargs, noise_multiplier_for
from trustfl.defenses.dp.settings import SampleLevelSettings
from trustfl.errors import TrustFLError, UpdateError
from trustfl.types import ClientPrivacyHook
from trustfl.optional import require

__all__ = ["DPAdapterTraining", "DPCheckError", "PrivateTraining", "make_private", "per_sequence_loss"]

GradSampleMode = Literal["hooks", "ghost"]
Task = Literal["classification", "causal_lm"]
log = logging.getLogger(__name__)

# Two warnings Opacus / torch raise on every client; explained once in the log, silenced in trustfl's calls.
_SECURE_RNG_WARNING = "Secure RNG turned off"
_BACKWARD_HOOK_WARNING = "Full backward hook is firing"
_EXPLANATION = (
    "Opacus DP-SGD: (1) 'Secure RNG turned off': the DP noise comes from torch's ordinary PRNG, fine for "
    "experiments; a release that must resist an attacker who can predict the PRNG needs Opacus's secure_mode "
    "(torchcsprng), which trustfl does not enable. (2) 'Full backward hook is firing ... no inputs require "
    "gradients': expected with a frozen FM, whose activations entering the adapters need no gradient; the "
    "per-sample gradients of the trainable parameters are still exact. Both warnings are silenced inside "
    "trustfl's DP calls (make_private, iterating its loader) and explained only here, once.")
_explained = False


def _explain_once() -> None:
    global _explained
    if not _explained:
        _explained = True
        log.warning(_EXPLANATION)


def _new_engine(accountant: str) -> Any:
    """An Opacus ``PrivacyEngine`` without its per-instance 'Secure RNG turned off' warning (logged once)."""
    PrivacyEngine = require("opacus", extra="dp", feature="differential privacy").PrivacyEngine

    _explain_once()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SECURE_RNG_WARNING, category=UserWarning)
        return PrivacyEngine(accountant=accountant)


@contextmanager
def _quiet_backward_hooks() -> Iterator[None]:
    """Ignore torch's 'Full backward hook is firing' warning while active.

    Adds one filter and removes exactly that one afterwards (not ``catch_warnings``, which would restore
    the whole filter list and undo filters the caller added meanwhile, since the caller's loop body runs
    while the private loader's generator is suspended inside this block).
    """
    _explain_once()
    warnings.filterwarnings("ignore", message=_BACKWARD_HOOK_WARNING, category=UserWarning)
    entry = warnings.filters[0]
    try:
        yield
    finally:
        try:
            warnings.filters.remove(entry)
        except ValueError:  # the caller replaced the filter list meanwhile; ours is gone with it
            pass
        else:
            getattr(warnings, "_filters_mutated", lambda: None)()


class DPCheckError(TrustFLError, RuntimeError):
    """A private training step did not do what DP-SGD must do (e.g. the adapter did not change)."""


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _check_optimizer_owns(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer must hold exactly the model's trainable tensors (else the model never changes)."""
    mine = {id(p) for _, p in _trainable(model)}
    theirs = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if not mine:
        raise DPCheckError("make_private: the model has no trainable parameters (apply LoRA first)")
    if mine != theirs:
        raise DPCheckError(f"make_private: the optimizer holds {len(theirs)} tensors, the model has {len(mine)} "
                           f"trainable ones and {len(mine & theirs)} are shared; build the optimizer from "
                           "[p for p in model.parameters() if p.requires_grad] after applying LoRA")


class _CausalLMCriterion(nn.Module):
    """Token cross-entropy with ``reduction`` settable to ``"none"`` (what Opacus's ghost wrapper needs)."""

    def __init__(self) -> None:
        super().__init__()
        self.reduction = "mean"
        self.ignore_index = -100

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction=self.reduction)


def per_sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Causal-LM loss per sequence ``[B]``: mean over its predicted (non -100) tokens, shifted by one."""
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    tok = nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                      ignore_index=-100, reduction="none").view(shift_labels.shape)
    valid = (shift_labels != -100).sum(dim=1).clamp(min=1)
    return tok.sum(dim=1) / valid


@dataclass
class PrivateTraining:
    """A private training set-up returned by :func:`make_private` (one return type for every mode).

    Attributes:
        model: the Opacus-wrapped model (forward through it; parameters are shared with yours).
        optimizer: the ``DPOptimizer``.
        loader: Poisson-sampled batches; empty draws are applied as noise-only steps inside it,
            and the first non-empty step is checked to have changed every trainable tensor.
        noise_multiplier, max_grad_norm, sample_rate, delta: the mechanism.
        task: ``classification`` or ``causal_lm`` (how :meth:`loss` reads logits).
        engine: the Opacus ``PrivacyEngine`` whose accountant recorded these steps. Keep one per
            client and pass it back (``make_private(..., engine=private.engine)``) in the client's
            next round, so :meth:`epsilon` is the client's total over all its rounds; a fresh engine
            (``engine=None``) starts a new accountant at ε = 0.
    """

    model: nn.Module
    optimizer: Any
    loader: "_PrivateBatches"
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    delta: float
    task: Task
    grad_sample_mode: GradSampleMode
    engine: Any = field(repr=False)
    criterion: Any = field(repr=False)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> Any:
        """The training loss, per-sample aware: call ``.backward()`` on it, then ``optimizer.step()``.

        Classification: logits ``[B, C]``, labels ``[B]``. Causal LM: logits ``[B, T, V]``,
        labels ``[B, T]`` (-100 = ignore), shifted inside; the privacy unit is the sequence.
        """
        if self.task == "classification":
            return self.criterion(logits, labels)
        if self.grad_sample_mode == "ghost":
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            return self.criterion(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                  shape=tuple(shift_logits.shape))
        return per_sequence_loss(logits, labels).mean()

    def epsilon(self) -> float:
        """ε at ``delta`` spent so far by this set-up's accountant."""
        acc = self.engine.accountant
        return float(acc.get_epsilon(delta=self.delta, **epsilon_kwargs(acc.mechanism()))) if acc.history else 0.0

    @property
    def steps(self) -> int:
        return sum(int(n) for _, _, n in self.engine.accountant.history)

    def close(self) -> None:
        """Remove Opacus's hooks and per-sample attributes from the model (call before re-wrapping it)."""
        self.loader.check()
        close = getattr(self.model, "_close", None)
        if close is not None:
            close()


class _PrivateBatches:
    """Iterate Opacus's Poisson batches: noise-only steps on empty draws, adapter check after step one."""

    def __init__(self, loader: Any, owner_model: nn.Module, optimizer: Any, engine: Any, *, noise_multiplier: float,
                 sample_rate: float) -> None:
        self.loader = loader
        self.optimizer = optimizer
        self.engine = engine
        self.noise_multiplier = noise_multiplier
        self.sample_rate = sample_rate
        self.named = _trainable(owner_model)
        self.snapshot = [p.detach().clone() for _, p in self.named]
        self.steps_seen = 0
        self.noise_only_steps = 0
        self.checked = False
        self.max_steps: int | None = None  # cap on all private steps (noise-only ones included), see DPAdapterTraining

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def dataset(self) -> Any:
        return self.loader.dataset

    def check(self) -> None:
        """Raise :class:`DPCheckError` unless every trainable tensor changed and is finite (once)."""
        if self.checked or self.steps_seen + self.noise_only_steps == 0:
            return
        self.checked = True
        same = [n for (n, p), s in zip(self.named, self.snapshot) if torch.equal(p.detach(), s)]
        bad = [n for n, p in self.named if not torch.isfinite(p.detach()).all()]
        self.snapshot = []
        if same or bad:
            raise DPCheckError(
                f"DP sanity check: after the first private step {len(same)} of {len(self.named)} trainable tensors "
                f"are unchanged (e.g. {same[:3]}) and {len(bad)} are non-finite (e.g. {bad[:3]}). DP-SGD adds noise "
                "to every trainable tensor, so the optimizer is not updating the model you train (Opacus issue "
                "#820: PEFT + Opacus); wrap the PEFT model itself and build the optimizer from its parameters")

    def _noise_only_step(self) -> None:
        """DP-SGD on an empty Poisson batch: the clipped sum is 0, so the update is pure noise."""
        opt = self.optimizer
        std = self.noise_multiplier * opt.max_grad_norm
        for p in opt.params:
            noise = torch.randn(p.shape, generator=opt.generator, dtype=p.dtype, device=p.device) * std
            p.grad = noise / opt.expected_batch_size if opt.loss_reduction == "mean" else noise
        opt.original_optimizer.step()
        opt.original_optimizer.zero_grad(set_to_none=True)
        self.engine.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.noise_only_steps += 1

    def __iter__(self) -> Iterator[Any]:
        # the caller's forward/backward/step run while this generator is suspended at `yield`, so torch's
        # per-backward "Full backward hook is firing" warning is silenced exactly while iterating
        with _quiet_backward_hooks():
            for batch in self.loader:
                if self.max_steps is not None and self.steps_seen + self.noise_only_steps >= self.max_steps:
                    return  # the accountant's σ was solved for this many steps: never take one more
                empty = (not batch) or (isinstance(batch, dict) and batch["input_ids"].shape[0] == 0)
                if empty:
                    self._noise_only_step()
                    self.check()
                    continue
                yield batch
                self.steps_seen += 1
                self.check()


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any, *,
                 noise_multiplier: float | None = None, target_epsilon: float | None = None,
                 steps: int | None = None, epochs: int | None = None, delta: float = 1e-5,
                 max_grad_norm: float = 1.0, grad_sample_mode: GradSampleMode = "hooks",
                 task: Task = "classification", accountant: Literal["rdp", "prv"] = "rdp",
                 noise_generator: torch.Generator | None = None, engine: Any = None) -> PrivateTraining:
    """Make a PEFT model + optimizer + DataLoader differentially private (DP-SGD, Abadi et al. 2016).

    Either ``noise_multiplier`` (fixed σ) or ``target_epsilon`` with ``steps`` or ``epochs``
    (σ solved with Opacus's RDP search, as ``make_private_with_epsilon`` does). Batches are
    Poisson-sampled at q = 1/len(loader).

    The model is put in train mode (``model.train()``): Opacus records activations only in
    modules that are training, and ``from_pretrained`` returns a model in eval mode, which
    would otherwise fail at the first ``backward()`` ("No activations detected").

    Federated use (one call per client per round):

    * ``engine``: the client's ``PrivacyEngine`` from its previous round (``private.engine``);
      ``None`` creates a new one. Keep one per client, e.g. ``engines[cid] = private.engine``
      and pass ``engine=engines.get(cid)``: its accountant then accumulates the client's steps
      over all rounds and :meth:`PrivateTraining.epsilon` is the client's total ε. With a new
      engine every round, ε restarts at 0 each round and under-states the spend.
    * ``target_epsilon``: ``steps`` / ``epochs`` is the total the accountant will run over the
      whole federation (e.g. ``epochs = rounds * local_epochs``), so that the sum of all rounds
      stays within ``target_epsilon``. The σ search takes seconds; its result is memoized on
      its arguments (:func:`~trustfl.defenses.dp.accounting.noise_multiplier_for`), so repeated
      calls with the same arguments are as fast as with ``noise_multiplier``.

    Opacus's "Secure RNG turned off" and torch's "Full backward hook is firing" warnings are
    explained once in the log (logger ``trustfl.defenses.dp.sample_level``) and silenced inside
    this call and while iterating ``private.loader``; filters elsewhere are untouched.

    Example:
        >>> private = make_private(peft_model, opt, loader, target_epsilon=8, epochs=3)  # doctest: +SKIP
        >>> for batch in private.loader:                                                # doctest: +SKIP
        ...     logits = private.model(input_ids=batch["input_ids"],
        ...                            attention_mask=batch["attention_mask"]).logits
        ...     opt_loss = private.loss(logits, batch["labels"]); private.optimizer.zero_grad()
        ...     opt_loss.backward(); private.optimizer.step()
        >>> private.epsilon(); private.close()                                           # doctest: +SKIP
        >>> again = make_private(peft_model, opt, loader, target_epsilon=8, epochs=3,   # doctest: +SKIP
        ...                      engine=private.engine)  # next round: same accountant, ε accumulates

    Raises:
        ValueError: both or neither of noise_multiplier / target_epsilon, or a bad value.
        DPCheckError: the optimizer does not hold the model's trainable parameters.
    """
    require("opacus", extra="dp", feature="differential privacy")

    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError(f"make_private: set exactly one of noise_multiplier or target_epsilon, got "
                         f"noise_multiplier={noise_multiplier}, target_epsilon={target_epsilon}")
    if grad_sample_mode not in ("hooks", "ghost"):
        raise ValueError(f"grad_sample_mode: must be 'hooks' or 'ghost', got {grad_sample_mode!r}")
    if task not in ("classification", "causal_lm"):
        raise ValueError(f"task: must be 'classification' or 'causal_lm', got {task!r}")
    if not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm: must be > 0, got {max_grad_norm}")
    _check_optimizer_owns(model, optimizer)
    model.train()  # Opacus captures activations only in training modules; from_pretrained gives eval mode
    num_batches = len(loader)
    if num_batches < 1:
        raise ValueError("loader: has no batches")
    sample_rate = 1.0 / num_batches
    if target_epsilon is not None:
        if (steps is None) == (epochs is None):
            raise ValueError(f"make_private: with target_epsilon set exactly one of steps or epochs, got "
                             f"steps={steps}, epochs={epochs}")
        total = int(steps if steps is not None else epochs * num_batches)  # type: ignore[operator]
        noise_multiplier = noise_multiplier_for(target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate,
                                                steps=total, accountant=accountant)
    assert noise_multiplier is not None
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier: must be > 0 (0 means no privacy), got {noise_multiplier}")
    engine = engine if engine is not None else _new_engine(accountant)
    if getattr(engine, "dataset", None) is not None and engine.dataset is not loader.dataset:
        # Opacus compares the new dataset to the engine's last one with `!=`, which raises on a list of
        # tensor dicts; a new loader over the client's records each round is the normal federated case
        log.info("make_private: reusing a PrivacyEngine with a new dataset object (assumed: the same client)")
        engine.dataset = loader.dataset
    criterion: nn.Module = nn.CrossEntropyLoss() if task == "classification" else _CausalLMCriterion()
    with _quiet_backward_hooks():
        out = engine.make_private(module=model, optimizer=optimizer, data_loader=loader, criterion=criterion,
                                  noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                                  poisson_sampling=True, grad_sample_mode=grad_sample_mode,
                                  noise_generator=noise_generator)
    if grad_sample_mode == "ghost":
        private_model, private_opt, criterion, private_loader = out
    else:
        private_model, private_opt, private_loader = out
    batches = _PrivateBatches(private_loader, model, private_opt, engine, noise_multiplier=noise_multiplier,
                              sample_rate=sample_rate)
    return PrivateTraining(model=private_model, optimizer=private_opt, loader=batches,
                           noise_multiplier=float(noise_multiplier), max_grad_norm=float(max_grad_norm),
                           sample_rate=sample_rate, delta=delta, task=task, grad_sample_mode=grad_sample_mode,
                           engine=engine, criterion=criterion)


@dataclass
class _ClientState:
    engine: Any
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    current: PrivateTraining | None = None


class DPAdapterTraining(ClientPrivacyHook):
    """Client-side privacy hook for trustfl's loop: DP-SGD on each client's LoRA training.

    Args:
        target_epsilon / noise_multiplier: exactly one. With ``target_epsilon`` each client's σ
            is solved once, from its own q = 1/⌈n_k / batch⌉ and ``rounds × local steps``
            (an upper bound: it assumes the client trains every round).
        delta, max_grad_norm, grad_sample_mode, accountant: see :class:`SampleLevelSettings`.
        rounds: planned federation rounds (for ``target_epsilon``).
        task: ``classification`` or ``causal_lm``.

    Each client has its own ``PrivacyEngine`` and accountant; ``epsilons()`` gives ε per
    client, and the loop reports their max. Opacus's hooks are removed in ``finish`` so the
    shared model is re-wrapped cleanly for the next client. Its accountants are JSON state
    (``state_json``/``load_state_json``), not tensors.
    """

    custom_loss: ClassVar[bool] = True  # the trainer computes the loss through loss() (per-sample aware)
    stateful: ClassVar[bool] = False  # no tensors; the accountant state travels through state_json
    claims_robustness: ClassVar[bool] = False
    tracks_clients: ClassVar[bool] = True  # one accountant per client id

    def __init__(self, *, target_epsilon: float | None = None, noise_multiplier: float | None = None,
                 delta: float = 1e-5, max_grad_norm: float = 1.0, grad_sample_mode: GradSampleMode = "hooks",
                 accountant: Literal["rdp", "prv"] = "rdp", rounds: int = 1, task: Task = "classification") -> None:
        self.settings = SampleLevelSettings(target_epsilon=target_epsilon, noise_multiplier=noise_multiplier,
                                            delta=delta, max_grad_norm=max_grad_norm,
                                            grad_sample_mode=grad_sample_mode, accountant=accountant)
        if rounds < 1:
            raise ValueError(f"rounds: must be >= 1, got {rounds}")
        if task not in ("classification", "causal_lm"):
            raise ValueError(f"task: must be 'classification' or 'causal_lm', got {task!r}")
        self.rounds, self.task = rounds, task
        # every __init__ argument under its own name (get_config / repr); settings is the validated view
        self.target_epsilon, self.noise_multiplier, self.delta = target_epsilon, noise_multiplier, delta
        self.max_grad_norm, self.grad_sample_mode, self.accountant = max_grad_norm, grad_sample_mode, accountant
        self.clients: dict[int, _ClientState] = {}

    @classmethod
    def from_settings(cls, settings: SampleLevelSettings, *, rounds: int, task: Task) -> "DPAdapterTraining":
        return cls(target_epsilon=settings.target_epsilon, noise_multiplier=settings.noise_multiplier,
                   delta=settings.delta, max_grad_norm=settings.max_grad_norm,
                   grad_sample_mode=settings.grad_sample_mode, accountant=settings.accountant, rounds=rounds,
                   task=task)

    def _state(self, client_id: int) -> _ClientState:
        if client_id not in self.clients:
            self.clients[client_id] = _ClientState(engine=_new_engine(self.settings.accountant))
        return self.clients[client_id]

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any, *,
                context: Any) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
        from trustfl.seeding import generator

        s, state = self.settings, self._state(context.client_id)
        if state.current is not None:
            raise DPCheckError(f"client {context.client_id}: prepare called twice without finish (Opacus hooks "
                               "would accumulate on the shared model)")
        q = 1.0 / len(loader)
        if state.sample_rate is not None and abs(state.sample_rate - q) > 1e-12:
            raise DPCheckError(f"client {context.client_id}: sampling rate changed from {state.sample_rate} to {q} "
                               "between rounds; its noise was calibrated for the first")
        state.sample_rate = q
        if state.noise_multiplier is None:
            if s.noise_multiplier is None and not context.planned_steps:
                raise ValueError("DPAdapterTraining(target_epsilon=...): the trainer did not say how many steps "
                                 "a round takes (PrivacyContext.planned_steps); use noise_multiplier instead")
            state.noise_multiplier = self._sigma_for(q, int(context.planned_steps or 0))
        state.current = make_private(
            model, optimizer, loader, noise_multiplier=state.noise_multiplier, delta=s.delta,
            max_grad_norm=s.max_grad_norm, grad_sample_mode=s.grad_sample_mode, task=self.task,
            accountant=s.accountant, engine=state.engine,
            noise_generator=generator(context.seed, "dp_noise", context.round, context.client_id))
        if context.planned_steps:  # noise-only steps on empty Poisson draws count: σ was solved for this many
            state.current.loader.max_steps = int(context.planned_steps)
        return state.current.model, state.current.optimizer, state.current.loader

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], *, client_id: int) -> Any:
        """The per-sample-aware loss for the client being trained (see :meth:`PrivateTraining.loss`)."""
        current = self._state(client_id).current
        if current is None:
            raise DPCheckError(f"client {client_id}: loss() outside prepare()/finish()")
        return current.loss(logits, batch["labels"])

    def finish(self, *, context: Any) -> dict[str, float]:
        state = self._state(context.client_id)
        current = state.current
        if current is None:
            raise DPCheckError(f"client {context.client_id}: finish() without prepare()")
        state.current = None
        current.close()
        return {"dp_epsilon": current.epsilon(), "dp_delta": current.delta,
                "dp_noise_multiplier": current.noise_multiplier, "dp_sample_rate": current.sample_rate,
                "dp_steps_total": float(current.steps), "dp_noise_only_steps": float(current.loader.noise_only_steps)}

    # ------------------------------------------------------------------ reporting / resume
    def epsilons(self) -> dict[int, float]:
        """ε at δ per client that has trained so far."""
        kw = epsilon_kwargs(self.settings.accountant)
        return {cid: (float(st.engine.accountant.get_epsilon(delta=self.settings.delta, **kw))
                      if st.engine.accountant.history else 0.0) for cid, st in sorted(self.clients.items())}

    def state_json(self) -> dict[str, Any]:
        """Accountant histories and σ per client (JSON), for the run directory and resume."""
        return {str(cid): {"noise_multiplier": st.noise_multiplier, "sample_rate": st.sample_rate,
                           "history": [[float(z), float(q), int(n)] for z, q, n in st.engine.accountant.history]}
                for cid, st in sorted(self.clients.items())}

    def load_state_json(self, data: dict[str, Any], *, replace: bool = False) -> None:
        """Load accountant states (a run directory on resume, or a Flower node's reply).

        Spent budget never shrinks: unless ``replace``, a client's loaded history must extend the one
        already held (same entries, the last one's step count may only grow, new steps at the client's
        σ and sampling rate), so a state a client reports about itself cannot under-report its ε.
        ``replace`` (a node taking the server's authoritative state) drops what was held. Every entry
        is checked before any is applied.
        """
        if not isinstance(data, dict):
            raise UpdateError(f"DP accountant state: expected a mapping of client id -> state, got {type(data).__name__}")
        parsed = dict(_parse_state(cid, entry) for cid, entry in data.items())
        for cid, (z, q, history) in parsed.items():
            st = self.clients.get(cid)
            if st is not None and not replace:
                _check_extends(cid, st, z, q, history)
        for cid, (z, q, history) in parsed.items():
            if replace:
                self.clients.pop(cid, None)
            st = self._state(cid)
            st.noise_multiplier, st.sample_rate = z, q
            st.engine.accountant.history = list(history)


    def load_round_reports(self, reports: dict[Any, Any], *, local_steps: Callable[[int], int]) -> None:
        """Accountant states that nodes reported after training one round (the Flower engine's server).

        A node trains and accounts for itself; the server records what it reports, so every report must
        show exactly the round the run's config prescribes, beyond :meth:`load_state_json`'s checks (valid
        entries, the held history only extended):

        * a non-empty history (the node's update is in the round, so it took private steps);
        * σ equal to the configured ``noise_multiplier`` or, with ``target_epsilon``, to the σ that budget
          gives at the reported sampling rate over ``rounds`` x the round's steps (as ``prepare`` solves it);
        * the sampling rate 1 / (batches per epoch), and exactly ``local_steps(batches per epoch)`` new steps.

        The sampling rate itself stays self-reported (it follows from the node's private record count).
        All reports are checked before any is loaded.

        Raises:
            UpdateError: naming the client and what its report gets wrong.
        """
        parsed = dict(_parse_state(cid, entry) for cid, entry in reports.items())
        for cid, (z, q, history) in parsed.items():
            where = f"client {cid}'s DP accountant report"
            if not history or z is None or q is None:
                raise UpdateError(f"{where}: no private steps, but its update is in the round (ε would be "
                                  "under-reported)")
            batches = round(1.0 / q)
            if batches < 1 or abs(batches * q - 1.0) > 1e-9:
                raise UpdateError(f"{where}: sampling rate {q} is not 1 / (batches per epoch)")
            steps = int(local_steps(batches))
            expected = self._sigma_for(q, steps)
            if not math.isclose(z, expected, rel_tol=1e-9):
                raise UpdateError(f"{where}: σ = {z:g}, but the run's [privacy.sample] gives σ = {expected:g} at "
                                  f"sampling rate {q:g}")
            held = self.clients.get(cid)
            before = sum(n for *_, n in held.engine.accountant.history) if held is not None else 0
            after = sum(n for *_, n in history)
            if after - before != steps:
                raise UpdateError(f"{where}: {after - before} new private steps this round, but the config trains "
                                  f"{steps} at sampling rate {q:g} (client.epochs x batches, client.max_steps)")
        self.load_state_json({str(cid): entry for cid, entry in reports.items()})

    def _sigma_for(self, sample_rate: float, steps_per_round: int) -> float:
        """σ that ``prepare`` uses for a client at this sampling rate and steps per round."""
        s = self.settings
        if s.noise_multiplier is not None:
            return float(s.noise_multiplier)
        assert s.target_epsilon is not None
        return float(noise_multiplier_for(target_epsilon=s.target_epsilon, delta=s.delta, sample_rate=sample_rate,
                                          steps=self.rounds * int(steps_per_round), accountant=s.accountant))


def _positive(value: Any, what: str, *, at_most: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UpdateError(f"{what}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0 or (at_most is not None and v > at_most):
        raise UpdateError(f"{what}: must be finite, > 0{f' and <= {at_most:g}' if at_most else ''}, got {value!r}")
    return v


def _parse_state(cid: Any, entry: Any) -> tuple[int, tuple[float | None, float | None, list[tuple[float, float, int]]]]:
    """``(client_id, (σ, q, history))`` of one JSON accountant state, or UpdateError naming the problem."""
    try:
        client = int(cid)
    except (TypeError, ValueError):
        raise UpdateError(f"DP accountant state: client id {cid!r} is not an integer") from None
    where = f"DP accountant state of client {client}"
    if not isinstance(entry, dict) or not {"noise_multiplier", "sample_rate", "history"} <= set(entry):
        raise UpdateError(f"{where}: expected noise_multiplier, sample_rate and history, got {entry!r:.120}")
    z = None if entry["noise_multiplier"] is None else _positive(entry["noise_multiplier"], f"{where}: noise_multiplier")
    q = None if entry["sample_rate"] is None else _positive(entry["sample_rate"], f"{where}: sample_rate", at_most=1.0)
    raw = entry["history"]
    if not isinstance(raw, list):
        raise UpdateError(f"{where}: history must be a list of [noise_multiplier, sample_rate, steps]")
    history = []
    for k, item in enumerate(raw):
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise UpdateError(f"{where}: history[{k}] must be [noise_multiplier, sample_rate, steps], got {item!r:.80}")
        hz = _positive(item[0], f"{where}: history[{k}] noise_multiplier")
        hq = _positive(item[1], f"{where}: history[{k}] sample_rate", at_most=1.0)
        n = item[2]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UpdateError(f"{where}: history[{k}] steps must be an integer >= 1, got {n!r}")
        if (z is not None and hz != z) or (q is not None and hq != q):
            raise UpdateError(f"{where}: history[{k}] was taken at σ={hz}, q={hq}, not the client's σ={z}, q={q}")
        history.append((hz, hq, n))
    if history and (z is None or q is None):
        raise UpdateError(f"{where}: a history without the client's noise_multiplier and sample_rate")
    return client, (z, q, history)


def _check_extends(cid: int, st: _ClientState, z: float | None, q: float | None,
                   history: list[tuple[float, float, int]]) -> None:
    """The new state keeps every step already accounted for (budget spent never shrinks)."""
    where = f"DP accountant state of client {cid}"
    old = list(st.engine.accountant.history)
    for name, held, new in (("noise_multiplier", st.noise_multiplier, z), ("sample_rate", st.sample_rate, q)):
        if held is not None and new != held:
            raise UpdateError(f"{where}: {name} changed from {held} to {new}; the accountant's steps were taken at {held}")
    if not old:
        return
    same_prefix = (len(history) >= len(old) and all(tuple(history[k]) == tuple(old[k]) for k in range(len(old) - 1))
                   and tuple(history[len(old) - 1][:2]) == tuple(old[-1][:2]) and history[len(old) - 1][2] >= old[-1][2])
    if not same_prefix:
        steps_old, steps_new = sum(n for *_, n in old), sum(n for *_, n in history)
        raise UpdateError(f"{where}: drops steps already accounted for ({steps_old} held, the new history has "
                          f"{steps_new} and does not extend the held one); refusing to lower the spent budget")

