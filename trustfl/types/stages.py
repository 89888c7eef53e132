"""Stage contracts: what every pipeline stage, attack and privacy hook declares about itself.

A stage never gets probed with ``getattr``: its capabilities are class attributes with explicit
defaults here, in one place, and the loop and the pipeline read them directly. Parameters follow
scikit-learn's convention (``BaseEstimator.get_params``): every ``__init__`` argument is stored as
an attribute of the same name, so :meth:`Stage.get_config` and ``repr`` are derived from the
``__init__`` signature and cannot drop a parameter. The run manifest records ``get_config()``.

A method in a subclass whose name is a near miss of a contract method (``check_tolerence``) is a
``TypeError`` when the class is defined: a misspelling must not silently switch a check off.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, ClassVar, Sequence

import torch

from trustfl.types.values import Aggregate, AggregateInfo, AttackContext, PrivacyContext

__all__ = ["AggregatorStage", "ClientPrivacyHook", "DataAttackStage", "PostStageBase", "PreStage", "Stage",
           "UpdateAttackStage", "config_value"]

_CONTRACT = {"check_tolerance", "tolerance_after", "state_dict", "load_state_dict", "get_config",
             "requires_individual_updates", "stateful", "claims_robustness", "tracks_clients", "omniscient",
             "success_set", "prepare", "finish", "loss", "custom_loss", "state_json", "load_state_json",
             "load_round_reports", "sum_weights", "from_sum"}


def config_value(value: Any) -> Any:
    """A JSON-able rendering of a parameter value (for the manifest)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"Tensor(shape={list(value.shape)}, dtype={value.dtype})"
    if isinstance(value, dict):
        return {str(k): config_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [config_value(v) for v in value]
    if isinstance(value, Stage):
        return {"class": type(value).__name__, **value.get_config()}
    if callable(value):
        return f"<callable {getattr(value, '__qualname__', type(value).__name__)}>"
    return repr(value)


class Stage:
    """Root of every stage. Capabilities (class attributes, explicit defaults):

    * ``requires_individual_updates`` (True): needs each client's update, not just their sum;
      False lets the stage run under secure aggregation.
    * ``stateful`` (False): keeps tensors across rounds (``state_dict``/``load_state_dict``).
    * ``claims_robustness`` (False): states a Byzantine tolerance; then the class must implement
      :meth:`check_tolerance`, which raises ``ToleranceError`` for impossible ``n``/``f``.
    * ``tracks_clients`` (False): keys state by client id, so every call needs ``client_ids=``.
    """

    requires_individual_updates: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    claims_robustness: ClassVar[bool] = False
    tracks_clients: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in vars(cls):
            if name.startswith("_") or name in _CONTRACT:
                continue
            close = difflib.get_close_matches(name, sorted(_CONTRACT), n=1, cutoff=0.88)
            if close:
                raise TypeError(f"{cls.__name__}.{name}: looks like a misspelling of the stage contract's "
                                f"{close[0]!r}; rename it (a misspelt hook would silently never run)")
        if cls.claims_robustness and "check_tolerance" not in _defined_below(cls, Stage):
            if not inspect.isabstract(cls) and not cls.__name__.endswith("Base"):
                raise TypeError(f"{cls.__name__} sets claims_robustness = True but does not implement "
                                "check_tolerance(n, f)")

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_config(self) -> dict[str, Any]:
        """The ``__init__`` arguments of this stage, read back from attributes of the same name."""
        out = {}
        for name in self._param_names():
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__}.__init__ takes {name!r} but does not store it as "
                                     f"self.{name}; the stage contract needs every argument stored under its name")
            out[name] = config_value(getattr(self, name))
        return out

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        parts = []
        for name, value in self.get_config().items():
            default = sig.parameters[name].default
            if default is inspect.Parameter.empty or config_value(default) != value:
                parts.append(f"{name}={getattr(self, name)!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    # ------------------------------------------------------------------ robustness
    def check_tolerance(self, n: int, f: int) -> None:
        """Raise ``ToleranceError`` when ``n`` clients with ``f`` attackers break the stage's guarantee.

        The default is for stages with ``claims_robustness = False`` (they promise nothing, so
        there is nothing to check); robust stages must override it.
        """
        if self.claims_robustness:
            raise NotImplementedError(f"{type(self).__name__} claims robustness but has no check_tolerance")

    def tolerance_after(self, n: int, f: int) -> tuple[int, int]:
        """``(n, f)`` as the next stage sees them (bucketing turns clients into buckets)."""
        return n, f

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors kept across rounds (empty unless ``stateful``)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state across rounds, got keys {sorted(state)}")

    def _require_ids(self, client_ids: Sequence[int] | None, n: int) -> list[int]:
        """For ``tracks_clients`` stages: the ids of the ``n`` rows, or a clear error."""
        if client_ids is None:
            raise ValueError(f"{type(self).__name__} keys its state by client: call it with client_ids= (one id "
                             "per row); row positions change from round to round")
        ids = [int(c) for c in client_ids]
        if len(ids) != n:
            raise ValueError(f"{type(self).__name__}: client_ids has {len(ids)} entries for {n} rows")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{type(self).__name__}: duplicate client ids in {ids}")
        return ids


def _defined_below(cls: type, root: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is root:
            break
        names.update(vars(klass))
    return names


class AggregatorStage(Stage):
    """``(updates[n, d], weights[n] | None) -> Aggregate``; must not mutate its input.

    An aggregator with ``requires_individual_updates = False`` runs under secure aggregation: it
    must implement :meth:`sum_weights` (the per-client weights the secure sum uses) and
    :meth:`from_sum` (its result from that sum); defining the class without them is a ``TypeError``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.requires_individual_updates:
            missing = {"sum_weights", "from_sum"} - _defined_below(cls, AggregatorStage)
            if missing:
                raise TypeError(f"{cls.__name__} sets requires_individual_updates = False but does not implement "
                                f"{sorted(missing)}; both are needed to aggregate a secure sum")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None, client_ids: Sequence[int] | None = None) -> Aggregate:
        raise NotImplementedError

    def sum_weights(self, weights: torch.Tensor | None, n: int) -> torch.Tensor:
        """The float64 weights ``[n]`` a secure sum must use for this aggregator (sum-only aggregators)."""
        raise NotImplementedError(f"{type(self).__name__} needs individual updates (requires_individual_updates "
                                  "= True); it cannot run on a secure sum")

    def from_sum(self, total: torch.Tensor, weight_sum: float, *, num_clients: int) -> Aggregate:
        """This aggregator's result from ``sum_i w_i x_i`` and ``sum_i w_i`` (sum-only aggregators)."""
        raise NotImplementedError(f"{type(self).__name__} needs individual updates (requires_individual_updates "
                                  "= True); it cannot run on a secure sum")


class PreStage(Stage):
    """``(updates, weights) -> (updates', weights', info)`` before the aggregator (clipping, NNM, bucketing)."""

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None, client_ids: Sequence[int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, AggregateInfo]:
        raise NotImplementedError


class PostStageBase(Stage):
    """``Aggregate -> Aggregate`` after the aggregator (e.g. Gaussian noise); runs on the (secure) sum."""

    requires_individual_updates: ClassVar[bool] = False

    def __call__(self, aggregate: Aggregate, *, num_clients: int, generator: torch.Generator | None = None,
                 client_ids: Sequence[int] | None = None) -> Aggregate:
        raise NotImplementedError


class DataAttackStage(Stage):
    """Rewrite one client's training records (a ``datasets.Dataset`` with ``text``/``label``).

    ``attackers`` lists every attacking client of the run (colluding attacks such as DBA split
    their work by it); a client not in it must not be attacked.
    """

    def __call__(self, dataset: Any, *, client_id: int, seed: int, attackers: Sequence[int]) -> Any:
        raise NotImplementedError

    def success_set(self, test: Any) -> tuple[Any, int] | None:
        """``(triggered test records, target label)`` to measure attack success on, or None (no trigger)."""
        return None


class UpdateAttackStage(Stage):
    """Rewrite the attackers' honest updates ``[k, d]`` into malicious ones ``[k, d]``.

    ``omniscient`` attacks also see the round's benign updates (``context.benign_updates``).
    """

    omniscient: ClassVar[bool] = False

    def __call__(self, updates: torch.Tensor, *, context: AttackContext) -> torch.Tensor:
        raise NotImplementedError


class ClientPrivacyHook(Stage):
    """Make one client's local training private and account for it (e.g. Opacus DP-SGD).

    ``prepare`` returns the model/optimizer/loader to train with; ``finish`` undoes any wrapping
    and returns metrics (ε so far). With ``custom_loss = True`` the trainer computes the loss
    through :meth:`loss` (e.g. Opacus's ghost-clipping loss) instead of the model's own.
    ``state_json``/``load_state_json`` carry the accountants across a resume.
    """

    custom_loss: ClassVar[bool] = False

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: Any, *,
                context: PrivacyContext) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
        raise NotImplementedError

    def finish(self, *, context: PrivacyContext) -> dict[str, float]:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], *, client_id: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} sets custom_loss = False")

    def state_json(self) -> dict[str, Any]:
        return {}

    def load_state_json(self, data: dict[str, Any], *, replace: bool = False) -> None:
        if data:
            raise ValueError(f"{type(self).__name__} keeps no accountant state, got {sorted(data)[:4]}")

    def load_round_reports(self, reports: dict[Any, Any], *, local_steps: Any) -> None:
        """States that nodes reported after training a round (engines whose clients run elsewhere). A hook
        must check them against its config before recording them: a node's report is untrusted."""
        raise NotImplementedError(f"{type(self).__name__} cannot check accountant states reported by remote nodes")
