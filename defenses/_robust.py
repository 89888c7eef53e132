"""Shared math and argument checks of the robust aggregators (pure functions, no state).

* :func:`pairwise_sq_distances`: all ``n x n`` squared Euclidean distances with one GEMM,
  ``||a||^2 + ||b||^2 - 2 a.b`` clamped at 0, recomputed exactly in float64 for the rows whose
  float32 values overflow (an attacker sending ``1e30`` must not turn distances into NaN).
* :func:`row_norms`: Euclidean row norms with the same overflow fallback.
* :func:`working`: the tensor the math runs on (float16/bfloat16 upcast to float32; float32 and
  float64 as they are); every stage returns its result in the input dtype (:func:`finite_result`).
* :func:`weighted_rows`: ``coef @ x`` (one GEMV), redone in float64 where float32 overflows or a
  coefficient underflows (rows near the float32 maximum).
* :func:`midpoint`: ``(a + b) / 2`` without the overflow of ``a + b``.
* :func:`column_sorted_reduce`: a coordinate-wise reduction over partitioned column values
  (numpy ``argpartition`` on cache-sized, transposed column blocks; no ``[n, d]`` index tensor).
* argument checks whose errors name the parameter, echo the value and state the rule.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from trustfl.defenses.base import validate_updates
from trustfl.errors import ToleranceError, UpdateError

__all__ = ["check_finite_result", "check_finite_updates", "check_int", "check_positive", "column_sorted_reduce",
           "finite_result", "generator_or_seeded", "gram_matrix", "median_value", "midpoint", "pairwise_sq_distances",
           "mix_rows", "require_tolerance", "row_norms", "scale_rows", "weighted_rows", "working"]

_BLOCK = 1 << 15  # columns per block of column_sorted_reduce (x n rows, fits in L2 for n <= 100)


def check_int(owner: str, name: str, value: object, *, minimum: int = 0) -> int:
    """``value`` as an int ``>= minimum``; a bool, float or smaller value raises ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return value


def check_positive(owner: str, name: str, value: object, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float ``> 0`` (``>= 0`` with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    ok = v >= 0 if allow_zero else v > 0
    if not ok or v != v or v == float("inf"):
        raise ValueError(f"{owner}: {name} must be finite and {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def require_tolerance(owner: str, n: int, f: int, ok: bool, rule: str, *, configured_f: int | None = None) -> None:
    """Raise :class:`ToleranceError` naming ``n``, ``f`` and the rule unless ``ok``.

    With ``configured_f``, also reject a round with more attackers than the aggregator was built for.
    """
    if n < 1 or f < 0:
        raise ToleranceError(f"{owner}: need n >= 1 clients and f >= 0 attackers, got n={n}, f={f}")
    if configured_f is not None and f > configured_f:
        raise ToleranceError(f"{owner}: configured for at most f={configured_f} Byzantine clients, got n={n}, "
                             f"f={f}; build it with f >= {f}")
    if not ok:
        raise ToleranceError(f"{owner}: Byzantine tolerance violated: needs {rule}, got n={n}, f={f}")


def check_finite_updates(owner: str, updates: torch.Tensor) -> tuple[int, int]:
    """Validate ``[n, d]``; rows with NaN/Inf raise (``Pipeline`` rejects them per client instead)."""
    finite = validate_updates(updates)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise UpdateError(f"{owner}: rows {bad[:8]} contain NaN/Inf; run the aggregator inside a "
                          "trustfl.defenses.Pipeline, which rejects such clients and records why")
    return int(updates.shape[0]), int(updates.shape[1])


def check_finite_result(owner: str, vector: torch.Tensor) -> torch.Tensor:
    """``vector`` if it is finite; else a clear :class:`UpdateError` (never a silent NaN/Inf aggregate:
    e.g. a mean of rows near the float32 maximum overflows)."""
    if not bool(torch.isfinite(vector).all()):
        raise UpdateError(f"{owner}: the aggregate overflowed to NaN/Inf (updates near the float maximum); clip "
                          "update norms first (NormClip) or reject such clients upstream")
    return vector


def working(x: torch.Tensor) -> torch.Tensor:
    """The tensor a stage computes on: float16/bfloat16 upcast to float32 (numpy has no bfloat16, ``cdist``
    no half, and half-precision GEMMs lose the small weights); float32/float64 unchanged (no copy)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)


def finite_result(owner: str, vector: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``vector`` cast to the input ``dtype`` and checked finite (:func:`check_finite_result`): every
    aggregator returns the dtype it was given; a result the dtype cannot represent is an error."""
    return check_finite_result(owner, vector.to(dtype))


def midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a + b) / 2`` elementwise without overflow: ``a/2 + b/2`` (bit-identical to ``(a + b) / 2`` unless
    that overflows or the halves are subnormal)."""
    return 0.5 * a + 0.5 * b


def weighted_rows(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_i coef[i] x[i]`` ``[d]`` in ``x``'s dtype: one GEMV; redone in float64 when the float32 result is
    not finite or a non-zero coefficient underflows in float32 (huge rows with tiny weights), so a
    representable weighted mean of finite rows is returned finite (then cast back to ``x.dtype``)."""
    c = coef.to(x.dtype)
    out = c @ x
    if x.dtype == torch.float64:
        return out
    lost = (coef != 0) & (c.abs() < torch.finfo(x.dtype).tiny)  # zero or subnormal in float32
    if bool(torch.isfinite(out).all()) and not bool(lost.any()):
        return out
    used = (coef != 0).nonzero().flatten()  # float64 copy of the rows that count only (rare: hostile input)
    return (coef.to(torch.float64)[used] @ x[used].to(torch.float64)).to(x.dtype)


def mix_rows(mix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mix @ x`` (``[m, n] @ [n, d]``, rows of ``mix`` are convex weights) in ``x``'s dtype; float16/bfloat16 are
    mixed in float32, and a float32 result that overflows (rows near the maximum) is redone in float64."""
    w = working(x)
    out = mix.to(w.dtype) @ w
    if w.dtype != torch.float64 and not bool(torch.isfinite(out).all()):
        out = (mix.to(torch.float64) @ w.to(torch.float64)).to(w.dtype)
    return out.to(x.dtype)


def scale_rows(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x[i] * scale[i]`` ``[n, d]`` in ``x``'s dtype (a new tensor); rows whose scale is subnormal in that dtype
    (clipping rows near the float32 maximum) are scaled in float64 so the clipped norm stays exact."""
    w = working(x)
    out = w * scale.to(w.dtype)[:, None]
    tiny = (scale > 0) & (scale < torch.finfo(w.dtype).tiny)
    if bool(tiny.any()):
        out[tiny] = (w[tiny].to(torch.float64) * scale[tiny].to(torch.float64)[:, None]).to(w.dtype)
    return out.to(x.dtype)


def generator_or_seeded(generator: torch.Generator | None, seed: int) -> torch.Generator:
    """The caller's generator, or a fresh one seeded with ``seed`` (never the global RNG)."""
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(seed)


def median_value(x: torch.Tensor) -> float:
    """The median of a 1-D tensor, the mean of the two middle values when its length is even
    (``torch.median`` returns the lower one)."""
    v = x.reshape(-1).sort().values
    n = v.numel()
    return float(v[n // 2]) if n % 2 else float(0.5 * (v[n // 2 - 1] + v[n // 2]))


def row_norms(x: torch.Tensor) -> torch.Tensor:
    """Float64 Euclidean norms of the rows of ``x`` ``[n, d]``; exact even where float32 squares overflow."""
    x = working(x)
    norms = torch.linalg.vector_norm(x, dim=1).to(torch.float64)
    bad = ~torch.isfinite(norms)
    if bool(bad.any()):
        norms[bad] = torch.linalg.vector_norm(x[bad].to(torch.float64), dim=1)
    return norms


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    """Float64 ``x @ x.T`` ``[n, n]`` by one GEMM; rows whose float32 products overflow are redone in float64."""
    x = working(x)
    gram = (x @ x.T).to(torch.float64)
    bad = ~torch.isfinite(gram).all(dim=1)
    if bool(bad.any()):
        x64 = x.to(torch.float64)
        part = x64[bad] @ x64.T
        gram[bad] = part
        gram[:, bad] = part.T
    return 0.5 * (gram + gram.T)  # exactly symmetric, so d(i, j) == d(j, i) and Krum ties are exact


def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """Float64 ``[n, n]`` squared Euclidean distances via one GEMM: ``||a||^2 + ||b||^2 - 2 a.b``, clamped >= 0.

    The diagonal is exactly 0. Rows whose float32 products overflow (e.g. an attacker sending
    ``1e30``) are recomputed in float64; what still overflows float64 becomes ``+inf``.
    """
    x = working(x)
    gram = gram_matrix(x)
    sq = gram.diagonal().clone()
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    bad_rows = ~torch.isfinite(dist).all(dim=1)
    if bool(bad_rows.any()):  # rare: only with huge (adversarial) rows; exact float64 for those rows
        x64 = x.to(torch.float64)
        idx = bad_rows.nonzero().flatten()
        part = torch.cdist(x64[idx], x64).pow(2)
        dist[idx] = part
        dist[:, idx] = part.T
    dist = torch.nan_to_num(dist, nan=float("inf"), posinf=float("inf")).clamp_(min=0.0)
    dist.fill_diagonal_(0.0)
    return dist


def column_sorted_reduce(x: torch.Tensor, reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         *, kth: Sequence[int], count_rows: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         block: int = _BLOCK) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply ``reduce(values[c, n], order[c, n]) -> [c]`` to every column of ``x`` ``[n, d]``, where each
    column's values are *partitioned* at the positions ``kth`` (numpy ``argpartition``: the value at
    each ``kth`` position is the one a full sort would put there, smaller ones before, larger after)
    and ``order`` holds their original row indices.

    Columns are processed in blocks, transposed so each column's ``n`` values are contiguous; a
    partial partition is ~2x faster than ``torch.sort`` of the blocks and needs no ``[n, d]`` index
    tensor. ``count_rows(order) -> rows`` optionally returns original row indices to count (e.g.
    ``order[:, :f]``, the rows trimmed at the bottom); the counts ``[n]`` are returned.
    """
    n, d = x.shape
    out = torch.empty(d, dtype=x.dtype)
    counts = torch.zeros(n, dtype=torch.int64) if count_rows is not None else None
    src = x.detach().numpy()
    for start in range(0, d, block):
        cols = np.ascontiguousarray(src[:, start:start + block].T)
        order_np = np.argpartition(cols, list(kth), axis=1)
        values = torch.from_numpy(np.take_along_axis(cols, order_np, axis=1))
        order = torch.from_numpy(order_np)
        out[start:start + cols.shape[0]] = reduce(values, order)
        if counts is not None:
            counts += torch.bincount(count_rows(order).reshape(-1), minlength=n)
    return out, counts
