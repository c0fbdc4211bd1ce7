"""The cosine numerics, each formula in exactly one place.

Design (see the "Numerics" docs page):

* **Fast path.** Per row the dot ``x1.x2`` and the two unscaled norms, in the
  compute dtype. Where both sums of squares lie in ``[LOW, HIGH]`` (the norms
  in ``[sqrt(LOW), sqrt(HIGH)]``) no square overflowed and no significant
  square underflowed, so the plain formula is accurate to a few ulp. This is
  one pass over the data.
* **Rescaled path.** Each vector is divided by its largest magnitude first, so
  its sum of squares lies in ``[1, d]``: exact from the smallest subnormal to
  the largest finite value, and NaN for vectors holding NaN or inf. The
  cosine is then the dot of the two unit vectors (normalize first), a form
  that XLA fuses into few passes; three sums over the scaled vectors are 7x
  slower under ``jax.jit`` (see ``benchmarks/``).
* Where values are readable (see ``_strategy``), the fast path runs on
  everything and only the rows outside the safe range (zero vectors, extreme
  magnitudes, NaN, inf) are gathered and recomputed by the rescaled path.
* Under a JAX trace the fast path is normalize-first with the norms clamped
  by ``maximum``, and every row outside the safe range is flagged by adding
  ``0 * sqrt(s - LOW)`` (NaN there) outside the gradient: a select, or a
  second use of the norms, breaks XLA's fusion of the norms into the dot and
  costs a pass. One ``lax.cond`` on "any NaN" then picks the rescaled path
  for the whole batch, rarely. Elsewhere (Dask, compiled and transformed
  torch) the rescaled path runs on everything, branch-free.
* **Zero vectors** use the "double where" so that forward values are 0 and
  gradients are the subgradient 0, never NaN or ``1/eps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

from ._strategy import (
    clip_straight_through,
    quiet_overflow,
    row_dot,
    row_dot_and_norms,
    row_norm,
    stop_gradient,
    traced_branch,
    values_are_readable,
)

Array = Any


def _norm_range(xp: ModuleType, dtype: Any) -> tuple[float, float]:
    """Norms in this range come from sums of squares without harmful rounding.

    A sum of squares above ``LOW = smallest_normal / eps``: the squares that
    underflowed (each below the smallest normal number) add up to less than
    ``d * 2**-p`` of the sum, far below one ulp for any realistic ``d``; up to
    ``HIGH``, the largest finite value, nothing overflowed. The bounds are on
    the norms, ``sqrt(LOW)`` and ``sqrt(HIGH)``, because some libraries
    compute the norm directly (see ``row_norm``).
    """
    info = xp.finfo(dtype)
    return (
        math.sqrt(float(info.smallest_normal) / float(info.eps)),
        math.sqrt(float(info.max)),
    )


def _in_safe_range(xp: ModuleType, norm: Array) -> Array:
    low, high = _norm_range(xp, norm.dtype)
    return (norm >= low) & (norm <= high)


def _range_flag(xp: ModuleType, sum_of_squares: Array) -> Array:
    """0 where ``s`` is in the safe range, NaN for smaller, infinite or NaN ``s``.

    ``0 * sqrt(s - LOW)`` needs no select; used only on libraries that do
    not warn about the NaN (JAX).
    """
    low = _norm_range(xp, sum_of_squares.dtype)[0] ** 2
    return 0 * xp.sqrt(sum_of_squares - low)


def _clamped_norm(xp: ModuleType, sum_of_squares: Array) -> Array:
    """``sqrt(max(s, LOW))``: finite, with finite gradients, for every row.

    Exact in the safe range; elsewhere a placeholder that the range flag
    marks for the rescaled path.
    """
    low = _norm_range(xp, sum_of_squares.dtype)[0] ** 2
    return xp.sqrt(xp.maximum(sum_of_squares, xp.full_like(sum_of_squares, low)))


def _flagged_cosine(xp: ModuleType, x1: Array, x2: Array, axis: int, eps: float | None) -> Array:
    """The fast-path cosine, normalize-first, NaN on every row that needs rescaling.

    The flag is added outside the gradient: the fast values themselves stay
    finite, so that when the rescaled path is chosen no NaN reaches the
    gradient through them. XLA fuses the clamped norms into the dot only
    while nothing else reads them inside the loop: a select there, or a
    second use of the norms, costs another pass over the data.
    """
    sumsq1 = row_dot(xp, x1, x1, axis)
    sumsq2 = row_dot(xp, x2, x2, axis)
    norm1 = _clamped_norm(xp, sumsq1)
    norm2 = _clamped_norm(xp, sumsq2)
    cosine = row_dot(
        xp, x1 / xp.expand_dims(norm1, axis=axis), x2 / xp.expand_dims(norm2, axis=axis), axis
    )
    if eps is not None:
        cosine = cosine * _eps_factor(xp, norm1, None, eps) * _eps_factor(xp, norm2, None, eps)
    return cosine + stop_gradient(xp, _range_flag(xp, sumsq1) + _range_flag(xp, sumsq2))


def _ones_like(xp: ModuleType, x: Array) -> Array:
    return xp.ones_like(x)


def _safe_sqrt(xp: ModuleType, s: Array) -> Array:
    """``sqrt(s)``, but 1 at ``s == 0`` so that gradients stay finite there."""
    return xp.sqrt(xp.where(s == 0, _ones_like(xp, s), s))


def _eps_factor(xp: ModuleType, norm: Array, scale: Array | None, eps: float) -> Array:
    """``min(1, ||x|| / eps)``, where ``||x|| = scale * norm``.

    Multiplying by this turns ``1 / ||x||`` into ``1 / max(||x||, eps)``.
    Written so that nothing overflows: a rescaled ``norm`` is at least 1, so
    ``scale >= eps`` already means the factor is 1.
    """
    if scale is None:
        return xp.minimum(norm, xp.full_like(norm, eps)) / eps
    ones = _ones_like(xp, norm)
    return xp.minimum(ones, xp.minimum(scale, xp.full_like(scale, eps)) / eps * norm)


def _scaled_by_max(xp: ModuleType, x: Array, axis: int) -> tuple[Array, Array, Array]:
    """``x / max|x|`` along ``axis``, ``max|x|``, and whether ``x`` is finite.

    The scale is a constant for autodiff: cosine is scale-invariant, and
    ``scale * ||x / scale||`` has the exact gradient of ``||x||`` anyway.
    Zero vectors stay zero. Vectors holding inf or NaN become zero here, so
    that no inf-times-zero arithmetic runs (and no NumPy warning is raised),
    and are marked not finite; their results are set to NaN at the end.
    Scale and mask keep ``axis``.
    """
    scale = stop_gradient(xp, xp.max(xp.abs(x), axis=axis, keepdims=True))
    finite = xp.isfinite(scale)
    usable = finite & (scale != 0)
    # XLA on the CPU divides through the reciprocal, and 1/scale is subnormal
    # (flushed to zero) above 2**126 in float32, infinite for subnormal
    # scales. So numerator and divisor are first moved towards 1 by the same
    # power of two, exactly: x2 = 2 * x1 still gives bitwise equal results.
    shift = xp.where(scale > 1, xp.full_like(scale, 2.0**-64), xp.full_like(scale, 2.0**64))
    divisor = xp.where(usable, scale, _ones_like(xp, scale)) * shift
    scaled = xp.where(usable, (x * shift) / divisor, xp.zeros_like(x))
    return scaled, scale, finite


def _rescaled_unit_parts(
    xp: ModuleType, x: Array, axis: int, eps: float | None
) -> tuple[Array, Array | None, Array]:
    """Unit vectors of ``x / max|x|``, the eps factor (or None), and finiteness.

    Rows holding inf or NaN come out as zero vectors, marked not finite.
    """
    scaled, scale, finite = _scaled_by_max(xp, x, axis)
    sumsq = row_dot(xp, scaled, scaled, axis)
    norm = _safe_sqrt(xp, sumsq)
    unit = xp.where(
        xp.expand_dims(sumsq != 0, axis=axis),
        scaled / xp.expand_dims(norm, axis=axis),
        xp.zeros_like(scaled),
    )
    factor = None if eps is None else _eps_factor(xp, norm, xp.squeeze(scale, axis=axis), eps)
    return unit, factor, finite


def _rescaled_cosine(xp: ModuleType, x1: Array, x2: Array, axis: int, eps: float | None) -> Array:
    unit1, factor1, finite1 = _rescaled_unit_parts(xp, x1, axis, eps)
    unit2, factor2, finite2 = _rescaled_unit_parts(xp, x2, axis, eps)
    cosine = row_dot(xp, unit1, unit2, axis)
    if factor1 is not None:
        cosine = cosine * factor1 * factor2
    # NaN is set here, after the dot, so that a non-finite x1 leaves the
    # gradient with respect to x2 at 0 instead of NaN.
    finite = xp.squeeze(finite1 & finite2, axis=axis)
    return xp.where(finite, cosine, xp.full_like(cosine, float("nan")))


class UnitRows(NamedTuple):
    """Vectors scaled to unit length, and the ``eps`` clamp as a separate factor.

    ``unit`` is ``x / ||x||`` (zero vectors stay zero, vectors holding NaN or
    inf are NaN); ``factor`` is ``min(1, ||x|| / eps)`` with ``axis``
    removed, or None without ``eps``. Kept apart because angles and the
    pairwise diagonal need the unclamped direction.
    """

    unit: Array
    factor: Array | None

    def clamped(self, xp: ModuleType, axis: int) -> Array:
        """``x / max(||x||, eps)``: the one place this quotient is formed."""
        if self.factor is None:
            return self.unit
        return self.unit * xp.expand_dims(self.factor, axis=axis)


class _Cosine(NamedTuple):
    cosine: Array


_Rows = TypeVar("_Rows", UnitRows, _Cosine)


# The one-pass path's result: which rows it got right, and ``finish(all_ok)``
# that builds the result. With ``all_ok=False`` it first makes the rows outside
# the safe range finite, so that no NaN leaks into the gradient through the
# ``where`` that later replaces them.
_FastRows = tuple[Array, Callable[[bool], _Rows]]


def _by_path(
    xp: ModuleType,
    arrays: tuple[Array, ...],
    axis: int,
    *,
    empty: Callable[[], _Rows],
    fast: Callable[[], _FastRows[_Rows]],
    flagged: Callable[[], tuple[_Rows, Array]],
    rescaled: Callable[..., _Rows],
) -> _Rows:
    """The one path choice of the kernels, made on every array argument.

    * No data (a size-0 axis): ``empty()``, from shapes alone.
    * Values readable on every argument (see ``values_are_readable``): the
      one-pass ``fast()`` on all rows, and ``rescaled`` again on the rows
      outside its safe range only.
    * Otherwise, with a traced conditional (JAX): ``flagged()`` gives the
      fast result and a 0-d "some row needs rescaling" flag, and the branch
      recomputes the whole batch when it is set.
    * Otherwise (Dask, compiled or transformed PyTorch, accelerators without
      a traced conditional): ``rescaled`` on everything, branch-free.

    ``rescaled(*arrays, axis)`` is exact on every row.
    """
    if any(n == 0 for n in arrays[0].shape):
        return empty()
    if not values_are_readable(xp, *arrays):
        branch = traced_branch(xp)
        if branch is None:
            return rescaled(*arrays, axis)
        result, needs_rescaling = flagged()
        return branch(  # type: ignore[no-any-return]
            needs_rescaling, lambda: rescaled(*arrays, axis), lambda: result
        )
    ok, finish = fast()
    all_ok = bool(xp.all(ok))
    result = finish(all_ok)
    if all_ok:
        return result
    return _repair_rows(xp, result, ok, lambda *rows: rescaled(*rows, -1), arrays, axis)


def _repair_rows(
    xp: ModuleType,
    fast: _Rows,
    fast_ok: Array,
    rescaled: Callable[..., _Rows],
    arrays: tuple[Array, ...],
    axis: int,
) -> _Rows:
    """Replace each field of ``fast`` where ``fast_ok`` is False by ``rescaled`` of those rows.

    ``fast_ok`` has the batch shape (``axis`` removed); each field has either
    that shape or the full shape of ``arrays`` (or is None). Only the rows
    that need it are gathered (``nonzero`` and ``take``) and recomputed, so
    the cost is in proportion to the bad rows. The results are spread back
    without a scatter: the position of a bad row in the compact result is
    the running count of bad rows, a ``cumulative_sum``.
    """
    moved = [xp.moveaxis(a, axis, -1) for a in arrays]
    rows = [xp.reshape(m, (-1, m.shape[-1])) for m in moved]
    bad = xp.reshape(xp.logical_not(fast_ok), (-1,))
    (bad_index,) = xp.nonzero(bad)
    repaired = rescaled(*(xp.take(r, bad_index, axis=0) for r in rows))
    position = xp.clip(xp.cumulative_sum(xp.astype(bad, bad_index.dtype)) - 1, min=0)
    merged: list[Array | None] = []
    for fast_value, repaired_value in zip(fast, repaired, strict=True):
        if fast_value is None:
            merged.append(None)
            continue
        spread = xp.take(repaired_value, position, axis=0)
        if spread.ndim == 2:
            spread = xp.moveaxis(xp.reshape(spread, moved[0].shape), -1, axis)
            merged.append(xp.where(xp.expand_dims(fast_ok, axis=axis), fast_value, spread))
        else:
            merged.append(xp.where(fast_ok, fast_value, xp.reshape(spread, fast_ok.shape)))
    return type(fast)(*merged)


def _fast_cosine(
    xp: ModuleType, x1: Array, x2: Array, axis: int, eps: float | None
) -> _FastRows[_Cosine]:
    with quiet_overflow():
        dot, norm1, norm2 = row_dot_and_norms(xp, x1, x2, axis)
    ok = _in_safe_range(xp, norm1) & _in_safe_range(xp, norm2)

    def finish(all_ok: bool) -> _Cosine:
        d, n1, n2 = dot, norm1, norm2
        if not all_ok:
            ones = _ones_like(xp, d)
            d = xp.where(ok, d, xp.zeros_like(d))
            n1 = xp.where(ok, n1, ones)
            n2 = xp.where(ok, n2, ones)
        cosine = d / (n1 * n2)
        if eps is not None:
            cosine = cosine * _eps_factor(xp, n1, None, eps) * _eps_factor(xp, n2, None, eps)
        return _Cosine(cosine)

    return ok, finish


def _flagged_cosine_rows(
    xp: ModuleType, x1: Array, x2: Array, axis: int, eps: float | None
) -> tuple[_Cosine, Array]:
    flagged = _flagged_cosine(xp, x1, x2, axis, eps)
    return _Cosine(flagged), xp.any(xp.isnan(flagged))


def cosine_rows(xp: ModuleType, x1: Array, x2: Array, axis: int, eps: float | None) -> Array:
    """Unclipped cosine similarity of broadcast ``x1`` and ``x2`` along ``axis``."""
    return _by_path(
        xp,
        (x1, x2),
        axis,
        empty=lambda: _Cosine(row_dot(xp, x1, x2, axis)),
        fast=lambda: _fast_cosine(xp, x1, x2, axis, eps),
        flagged=lambda: _flagged_cosine_rows(xp, x1, x2, axis, eps),
        rescaled=lambda a, b, ax: _Cosine(_rescaled_cosine(xp, a, b, ax, eps)),
    ).cosine


def similarity_rows(xp: ModuleType, x1: Array, x2: Array, axis: int, eps: float | None) -> Array:
    """Cosine similarity of broadcast ``x1`` and ``x2`` along ``axis``, clipped to [-1, 1]."""
    return clip_straight_through(xp, cosine_rows(xp, x1, x2, axis, eps), -1.0, 1.0)


def _rescaled_unit(xp: ModuleType, x: Array, axis: int, eps: float | None) -> UnitRows:
    unit, factor, finite = _rescaled_unit_parts(xp, x, axis, eps)
    return UnitRows(xp.where(finite, unit, xp.full_like(unit, float("nan"))), factor)


def _fast_unit(xp: ModuleType, x: Array, axis: int, eps: float | None) -> _FastRows[UnitRows]:
    with quiet_overflow():
        norm = row_norm(xp, x, axis)
    ok = _in_safe_range(xp, norm)

    def finish(all_ok: bool) -> UnitRows:
        n = norm if all_ok else xp.where(ok, norm, _ones_like(xp, norm))
        factor = None if eps is None else _eps_factor(xp, n, None, eps)
        return UnitRows(x / xp.expand_dims(n, axis=axis), factor)

    return ok, finish


def _flagged_unit(
    xp: ModuleType, x: Array, axis: int, eps: float | None
) -> tuple[UnitRows, Array]:
    sumsq = row_dot(xp, x, x, axis)
    norm = _clamped_norm(xp, sumsq)
    factor = None if eps is None else _eps_factor(xp, norm, None, eps)
    unit = x / xp.expand_dims(norm, axis=axis)
    return UnitRows(unit, factor), xp.any(xp.isnan(_range_flag(xp, sumsq)))


def unit_rows(xp: ModuleType, x: Array, axis: int, eps: float | None) -> UnitRows:
    """Unit vectors along ``axis`` (zero stays zero) and, with ``eps``, the clamp factor."""
    return _by_path(
        xp,
        (x,),
        axis,
        empty=lambda: UnitRows(x, None if eps is None else row_dot(xp, x, x, axis)),
        fast=lambda: _fast_unit(xp, x, axis, eps),
        flagged=lambda: _flagged_unit(xp, x, axis, eps),
        rescaled=lambda a, ax: _rescaled_unit(xp, a, ax, eps),
    )


def safe_divide(xp: ModuleType, numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``, and 0 (with gradient 0) where it is 0."""
    nonzero = denominator != 0
    safe = xp.where(nonzero, denominator, _ones_like(xp, denominator))
    return xp.where(nonzero, numerator / safe, xp.zeros_like(numerator))
