"""ParamLayout: the fixed map between a model's trainable parameters and one flat vector.

Every client update in trustfl is a flat float32 tensor ``delta`` over the trainable
(adapter + head) parameters, in the order this layout fixes. Server-side code works on
stacked ``[n, d]`` tensors and never sees parameter names; the layout turns a vector
back into a ``state_dict`` (exactly: float32 parameters round-trip bit for bit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from trustfl.errors import UpdateError

__all__ = ["ParamLayout"]


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of the federated parameters, in vector order.

    Example:
        >>> lin = torch.nn.Linear(3, 2)
        >>> layout = ParamLayout.from_model(lin)
        >>> layout.size
        8
        >>> torch.equal(layout.unflatten(layout.flatten(lin))["weight"], lin.weight)
        True
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError(f"ParamLayout: {len(self.names)} names but {len(self.shapes)} shapes")
        if len(set(self.names)) != len(self.names):
            raise ValueError("ParamLayout: parameter names must be unique")
        offsets = [0]
        for shape in self.shapes:
            offsets.append(offsets[-1] + math.prod(shape))
        object.__setattr__(self, "_offsets", tuple(offsets))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model: nn.Module) -> "ParamLayout":
        """Layout of ``model``'s parameters with ``requires_grad=True``, in registration order."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("ParamLayout.from_model: the model has no trainable parameters")
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ParamLayout":
        """Inverse of :meth:`to_dict` (as stored in a run manifest)."""
        try:
            return cls(tuple(data["names"]), tuple(tuple(int(x) for x in s) for s in data["shapes"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"ParamLayout.from_dict: expected keys 'names' and 'shapes', got {data!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes], "dtype": "float32",
                "size": self.size}

    # ------------------------------------------------------------------ queries
    @property
    def size(self) -> int:
        """Total number of federated scalars ``d``."""
        return self._offsets[-1]  # type: ignore[attr-defined]

    def slice(self, name: str) -> slice:
        """The slice of the flat vector holding parameter ``name``."""
        try:
            i = self.names.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not in this layout; it has {len(self.names)} parameters, "
                           f"e.g. {list(self.names[:3])}") from None
        return slice(self._offsets[i], self._offsets[i + 1])  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ conversion
    def flatten(self, params: nn.Module | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate the layout's parameters (from a model or a state dict) into a float32 vector."""
        source = dict(params.named_parameters()) if isinstance(params, nn.Module) else params
        missing = [n for n in self.names if n not in source]
        if missing:
            raise KeyError(f"flatten: {len(missing)} layout parameters are missing, e.g. {missing[:3]}")
        parts = []
        for name, shape in zip(self.names, self.shapes):
            t = source[name]
            if tuple(t.shape) != shape:
                raise ValueError(f"flatten: {name} has shape {tuple(t.shape)}, layout expects {shape}")
            parts.append(t.detach().reshape(-1).to(torch.float32))
        return torch.cat(parts)

    def check_vector(self, vector: torch.Tensor, *, what: str = "vector") -> torch.Tensor:
        """Raise :class:`UpdateError` unless ``vector`` is a finite 1-D tensor of size ``d``."""
        if not isinstance(vector, torch.Tensor):
            raise UpdateError(f"{what}: expected a torch.Tensor, got {type(vector).__name__}")
        if vector.ndim != 1 or vector.numel() != self.size:
            raise UpdateError(f"{what}: expected shape ({self.size},), got {tuple(vector.shape)}")
        if not torch.isfinite(vector).all():
            bad = int((~torch.isfinite(vector)).sum())
            raise UpdateError(f"{what}: {bad} non-finite entries (NaN/Inf)")
        return vector

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector into ``{name: tensor}`` with the layout's shapes (views of ``vector``)."""
        self.check_vector(vector)
        offs = self._offsets  # type: ignore[attr-defined]
        return {n: vector[offs[i]:offs[i + 1]].view(s) for i, (n, s) in enumerate(zip(self.names, self.shapes))}

    @torch.no_grad()
    def load_into(self, model: nn.Module, vector: torch.Tensor) -> None:
        """Copy ``vector`` into ``model``'s parameters in place (dtype converted per parameter)."""
        params = dict(model.named_parameters())
        for name, value in self.unflatten(vector).items():
            if name not in params:
                raise KeyError(f"load_into: the model has no parameter {name!r}")
            params[name].copy_(value)
