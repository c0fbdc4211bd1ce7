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
* Under a trace with a traced conditional (JAX, ``torch.compile``) the
  similarity takes the three row sums (one fused loop), checks the norms on
  the device, and one conditional recomputes the whole batch on the
  rescaled path, rarely; only per-row values cross it (``_traced_parts``).
  The unit vectors (``unit_rows``) are normalize-first with the norms
  clamped by ``maximum``, every row outside the safe range flagged by
  ``0 * sqrt(s - LOW)`` (NaN there): a select, or a second use of the
  norms, breaks XLA's fusion of the norms into the division and costs a
  pass. Elsewhere (Dask, ``torch.func``, eager accelerators) the rescaled
  path runs on everything, branch-free.
* **Closed-form derivative.** The similarity's gradient
  ``d c / d x1 = (u2 - c u1) / ||x1||`` (the eps clamp and the
  straight-through clip folded in), from per-row factors that both paths
  provide (``_Scaling``), replaces the replay of every operation: as a
  backward on eager PyTorch (when every row of the batch is on the fast
  path; otherwise autograd runs through both paths) and under
  ``torch.compile``, as a jvp rule under JAX. It reads ``x1`` and ``x2``
  once more.
* **Zero vectors** use the "double where" so that forward values are 0 and
  gradients are the subgradient 0, never NaN or ``1/eps``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

from ._strategy import (
    all_within,
    clip_straight_through,
    closed_form_backward,
    closed_form_jvp,
    quiet_overflow,
    row_dot,
    row_dot_and_norms,
    row_norm,
    stop_gradient,
    traced_branch,
    values_are_readable,
)

Array = Any


@functools.cache
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


def _both_in_safe_range(xp: ModuleType, norm1: Array, norm2: Array) -> Array:
    """Whether both norms lie in the safe range: 5 operations instead of 7.

    ``minimum`` and ``maximum`` propagate NaN, which fails both comparisons.
    """
    low, high = _norm_range(xp, norm1.dtype)
    return (xp.minimum(norm1, norm2) >= low) & (xp.maximum(norm1, norm2) <= high)


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


def _ones_like(xp: ModuleType, x: Array) -> Array:
    return xp.ones_like(x)


def _safe_sqrt(xp: ModuleType, s: Array) -> Array:
    """``sqrt(s)``, but 1 at ``s == 0`` so that gradients stay finite there."""
    return xp.sqrt(xp.where(s == 0, _ones_like(xp, s), s))


def _eps_factor(xp: ModuleType, norm: Array, scale: Array | None, eps: float) -> Array:
    """``min(1, ||x|| / eps)``, where ``||x|| = scale * norm``.

    Multiplying by this turns ``1 / ||x||`` into ``1 / max(||x||, eps)``.
    ``scale / eps`` may overflow to inf, which gives 1, rightly: ``norm`` is
    positive wherever ``scale`` is. A zero ``scale`` gives 0 (``eps`` is a
    normal number, so ``scale / eps`` is finite there).
    """
    if scale is None:
        return xp.minimum(norm, xp.full_like(norm, eps)) / eps
    return xp.minimum(_ones_like(xp, norm), scale / eps * norm)


def _scaled_by_max(
    xp: ModuleType, x: Array, axis: int
) -> tuple[Array, Array, Array, Array, Array]:
    """``x / max|x|`` along ``axis``, ``max|x|``, finiteness, and the quotient's parts.

    The quotient is ``(x * shift) / divisor``, exactly ``x / max|x|``; on
    zero and non-finite rows, where it does not apply, ``divisor`` is
    ``shift``.

    The scale is a constant for autodiff: cosine is scale-invariant, and
    ``scale * ||x / scale||`` has the exact gradient of ``||x||`` anyway.
    Zero vectors stay zero. Vectors holding inf or NaN become zero here, so
    that no inf-times-zero arithmetic runs (and no NumPy warning is raised),
    and are marked not finite; their results are set to NaN at the end.
    Every result keeps ``axis``.
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
    return scaled, scale, finite, shift, divisor


def _rescaled_unit_parts(
    xp: ModuleType, x: Array, axis: int, eps: float | None
) -> tuple[Array, Array | None, Array]:
    """Unit vectors of ``x / max|x|``, the eps factor (or None), and finiteness.

    Rows holding inf or NaN come out as zero vectors, marked not finite.
    This is the form that autodiff goes through (the eager repair path,
    Dask, ``torch.func``): two quotients, each with a finite derivative at
    every magnitude. ``_rescaled_scaling`` computes the same unit vectors
    through one per-row reciprocal ``1 / (max|x| * shift * norm)`` for the
    closed-form derivative; differentiating that reciprocal squares the
    per-row divisor, which underflows for tiny vectors (the gradient was
    -inf for float64 rows of 1e-300), so the two stay separate.
    """
    scaled, scale, finite, _, _ = _scaled_by_max(xp, x, axis)
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
    # NaN is set here, after the dot of the zeroed unit vectors, so that on
    # this path the gradient with respect to a finite x2 paired with a
    # non-finite x1 is 0. The fast paths' dot reads the raw values (0 * inf
    # in its backward), so there, as in torch's and JAX's own functions, it
    # is NaN. Either way only that row's gradient is affected (docs: Numerics).
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


# The one-pass path's result: the norms it divided by (its result is exact
# where they all lie in the safe range), and ``finish(ok)`` that builds the
# result. ``ok`` is None when every row is in range; otherwise it says which
# are, and ``finish`` first makes the others finite, so that no NaN leaks
# into the gradient through the ``where`` that later replaces them.
_FastRows = tuple[tuple[Array, ...], Callable[[Array | None], _Rows]]


def _by_path(
    xp: ModuleType,
    arrays: tuple[Array, ...],
    axis: int,
    *,
    empty: Callable[[], _Rows],
    fast: Callable[[], _FastRows[_Rows]],
    traced: Callable[[Callable[..., Any]], _Rows],
    rescaled: Callable[..., _Rows],
) -> _Rows:
    """The one path choice of the kernels, made on every array argument.

    * No data (a size-0 axis): ``empty()``, from shapes alone.
    * Values readable on every argument (see ``values_are_readable``): the
      one-pass ``fast()`` on all rows, and ``rescaled`` again on the rows
      outside its safe range only.
    * Otherwise, with a traced conditional ``branch`` (JAX, ``torch.compile``):
      ``traced(branch)``, which runs the fast path and branches to the
      rescaled one for the whole batch when some row needs it (see
      ``_traced_similarity`` and ``_flagged_unit``).
    * Otherwise (Dask, ``torch.func``, eager accelerators): ``rescaled`` on
      everything, branch-free.

    ``rescaled(*arrays, axis)`` is exact on every row.
    """
    if 0 in arrays[0].shape:
        return empty()
    if not values_are_readable(xp, *arrays):
        branch = traced_branch(xp)
        if branch is None:
            return rescaled(*arrays, axis)
        return traced(branch)
    norms, finish = fast()
    low, high = _norm_range(xp, norms[0].dtype)
    if all_within(xp, norms, low, high):
        return finish(None)
    ok = _in_safe_range(xp, norms[0])
    for norm in norms[1:]:
        ok = ok & _in_safe_range(xp, norm)
    return _repair_rows(xp, finish(ok), ok, lambda *rows: rescaled(*rows, -1), arrays, axis)


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


def _clip(xp: ModuleType, cosine: Array) -> Array:
    return clip_straight_through(xp, cosine, -1.0, 1.0)


class _Scaling(NamedTuple):
    """How one side's unit vectors and its norm are formed, per row, without overflow.

    ``unit = (x * shift) * inverse`` and ``||x|| = norm * scale``.
    ``reciprocal`` is ``1 / norm``, and 0 where the vector is zero or not
    finite: there the gradient is the subgradient 0 (and ``inverse`` is 0,
    ``scale`` 1). Rows that are not ``finite`` are read as zero vectors.
    ``shift``, ``scale`` and ``finite`` are None (1, 1, True) on the eager
    fast path. Every factor stays finite for every finite input, so the
    derivative below never overflows before its last step.
    """

    shift: Array | None
    inverse: Array
    norm: Array
    reciprocal: Array
    scale: Array | None
    finite: Array | None

    def unit(self, xp: ModuleType, x: Array, axis: int) -> Array:
        if self.finite is not None:
            x = xp.where(xp.expand_dims(self.finite, axis=axis), x, xp.zeros_like(x))
        if self.shift is not None:
            x = x * xp.expand_dims(self.shift, axis=axis)
        return x * xp.expand_dims(self.inverse, axis=axis)

    def eps_factor(self, xp: ModuleType, eps: float) -> Array:
        return _eps_factor(xp, self.norm, self.scale, eps)


def _fast_scaling(xp: ModuleType, norm: Array) -> _Scaling:
    """The scaling of a row whose norm lies in the safe range."""
    inverse = 1 / norm
    return _Scaling(None, inverse, norm, inverse, None, None)


def _rescaled_scaling(xp: ModuleType, x: Array, axis: int) -> _Scaling:
    """The scaling of every row through ``x / max|x|`` (see ``_scaled_by_max``).

    The unit vector is ``(x * shift) / (max|x| * shift * norm)``, the
    quotient taken through one per-row reciprocal: the divisor lies between
    ``2**-85`` and ``2**64``, so the reciprocal is normal in float32.
    """
    scaled, scale, finite, shift, divisor = _scaled_by_max(xp, x, axis)
    sumsq = row_dot(xp, scaled, scaled, axis)
    norm = _safe_sqrt(xp, sumsq)
    # Zero and non-finite rows were zeroed: their unit vector and gradient
    # are 0, and a scale of 1 keeps 0 / scale from being NaN.
    usable = sumsq != 0
    zeros, ones = xp.zeros_like(norm), _ones_like(xp, norm)
    return _Scaling(
        xp.squeeze(shift, axis=axis),
        xp.where(usable, 1 / (xp.squeeze(divisor, axis=axis) * norm), zeros),
        norm,
        xp.where(usable, 1 / norm, zeros),
        xp.where(usable, xp.squeeze(scale, axis=axis), ones),
        xp.squeeze(finite, axis=axis),
    )


def _cosine_gradients(
    xp: ModuleType,
    weight: Array | None,
    needed: tuple[bool, bool],
    x1: Array,
    x2: Array,
    scaling1: _Scaling,
    scaling2: _Scaling,
    cosine: Array,
    axis: int,
    eps: float | None,
) -> tuple[Array | None, Array | None]:
    """The closed-form derivative of the similarity, clip straight through.

    With ``u = x / n`` and ``c = u1 . u2``, ``d c / d x1 = (u2 - c u1) / n1``.
    With ``eps`` the result is ``c f1 f2``, ``f = min(n, eps) / eps``, whose
    derivative ``u / eps`` where ``n < eps`` turns this into
    ``d / d x1 = f2 (f1 u2 - [n1 >= eps] c u1) / n1``. ``cosine`` is ``c``
    (unclipped, without eps). Returns ``weight * d c / d x`` per input (the
    backward of a row gradient ``weight``; None means 1, the rows of the
    Jacobian), None where not ``needed``. The unit vectors are formed first
    and ``1 / n1`` is applied as ``reciprocal / scale``, so nothing
    overflows or underflows on the way, on either path; rows of a zero or
    non-finite vector get 0 (their ``reciprocal`` and ``inverse`` are 0, and
    a non-finite row is zeroed before use).
    """
    unit1 = scaling1.unit(xp, x1, axis)
    unit2 = scaling2.unit(xp, x2, axis)
    factor1 = None if eps is None else scaling1.eps_factor(xp, eps)
    factor2 = None if eps is None else scaling2.eps_factor(xp, eps)

    def one(
        unit: Array,
        scaling: _Scaling,
        factor: Array | None,
        other: Array,
        other_factor: Array | None,
    ) -> Array:
        """The gradient with respect to the vector of ``unit`` and ``scaling``."""
        on_other = scaling.reciprocal if weight is None else weight * scaling.reciprocal
        if other_factor is not None:
            on_other = on_other * other_factor
        on_own = on_other * cosine
        if factor is not None:
            on_other = on_other * factor
            on_own = xp.where(factor >= 1, on_own, xp.zeros_like(on_own))
        gradient = (
            xp.expand_dims(on_other, axis=axis) * other - xp.expand_dims(on_own, axis=axis) * unit
        )
        if scaling.scale is None:
            return gradient
        return gradient / xp.expand_dims(scaling.scale, axis=axis)

    return (
        one(unit1, scaling1, factor1, unit2, factor2) if needed[0] else None,
        one(unit2, scaling2, factor2, unit1, factor1) if needed[1] else None,
    )


def _fast_gradients(
    xp: ModuleType,
    grad: Array,
    needed: tuple[bool, bool],
    x1: Array,
    x2: Array,
    norm1: Array,
    norm2: Array,
    cosine: Array,
    axis: int,
    eps: float | None,
) -> tuple[Array | None, Array | None]:
    """``_cosine_gradients`` of rows on the fast path, from their norms."""
    return _cosine_gradients(
        xp,
        grad,
        needed,
        x1,
        x2,
        _fast_scaling(xp, norm1),
        _fast_scaling(xp, norm2),
        cosine,
        axis,
        eps,
    )


def _recorded_residuals(
    xp: ModuleType, x1: Array, x2: Array, axis: int
) -> tuple[Array, Array, Array]:
    """The norms and the cosine again, recorded: for a gradient of the gradient.

    The residuals of the forward were taken outside the gradient; a
    higher-order derivative needs their dependence on ``x1`` and ``x2``.
    """
    dot, norm1, norm2 = row_dot_and_norms(xp, x1, x2, axis)
    return norm1, norm2, dot / (norm1 * norm2)


def _cosine_from_sums(
    xp: ModuleType, dot: Array, norm1: Array, norm2: Array, eps: float | None
) -> Array:
    cosine = dot / (norm1 * norm2)
    if eps is not None:
        cosine = cosine * _eps_factor(xp, norm1, None, eps) * _eps_factor(xp, norm2, None, eps)
    return cosine


def _fast_similarity(
    xp: ModuleType, x1: Array, x2: Array, axis: int, eps: float | None
) -> _FastRows[_Cosine]:
    """The one-pass similarity, with the closed-form backward where it pays.

    With such a backward (see ``closed_form_backward``) the sums are taken
    outside the gradient and the backward is attached to the result; should
    some row need rescaling they are taken again, recorded, for the merge.
    """
    attach = closed_form_backward(xp, x1, x2)
    plain1, plain2 = (x1, x2) if attach is None else (stop_gradient(xp, x1), stop_gradient(xp, x2))
    with quiet_overflow(xp):
        dot, norm1, norm2 = row_dot_and_norms(xp, plain1, plain2, axis)

    def finish(ok: Array | None) -> _Cosine:
        if ok is None and attach is not None:
            # The unclipped cosine (without eps) is the residual of the backward.
            cosine = dot / (norm1 * norm2)
            value = cosine if eps is None else _cosine_from_sums(xp, dot, norm1, norm2, eps)
            return _Cosine(
                attach(
                    xp.clip(value, -1.0, 1.0),
                    lambda grad, needed, recorded, a, b: _fast_gradients(
                        xp,
                        grad,
                        needed,
                        a,
                        b,
                        *(
                            _recorded_residuals(xp, a, b, axis)
                            if recorded
                            else (norm1, norm2, cosine)
                        ),
                        axis,
                        eps,
                    ),
                    x1,
                    x2,
                )
            )
        d, n1, n2 = dot, norm1, norm2
        if attach is not None:
            with quiet_overflow(xp):
                d, n1, n2 = row_dot_and_norms(xp, x1, x2, axis)
        if ok is not None:
            ones = _ones_like(xp, d)
            d = xp.where(ok, d, xp.zeros_like(d))
            n1 = xp.where(ok, n1, ones)
            n2 = xp.where(ok, n2, ones)
        cosine = _cosine_from_sums(xp, d, n1, n2, eps)
        return _Cosine(clip_straight_through(xp, cosine, -1.0, 1.0, owned=True))

    return (norm1, norm2), finish


class _TracedParts(NamedTuple):
    cosine: Array
    scaling1: _Scaling
    scaling2: _Scaling


def _traced_parts(
    xp: ModuleType, branch: Callable[..., Any], x1: Array, x2: Array, axis: int
) -> _TracedParts:
    """The cosine (unclipped, without eps) and both scalings, under a trace.

    The three row sums are taken once (XLA fuses them into one pass) and
    checked; ``branch`` recomputes the whole batch through ``x / max|x|``
    only when some row lies outside the safe range. Only per-row values
    cross the branch, so nothing of size ``n x d`` is kept for the backward.
    """
    sumsq1 = row_dot(xp, x1, x1, axis)
    sumsq2 = row_dot(xp, x2, x2, axis)
    dot = row_dot(xp, x1, x2, axis)
    needs_rescaling = xp.logical_not(
        xp.all(_both_in_safe_range(xp, xp.sqrt(sumsq1), xp.sqrt(sumsq2)))
    )

    def fast() -> _TracedParts:
        # Both branches return arrays of the same structure: the fast path's
        # shift, scale and finiteness are spelled out as ones and True. Every
        # result is computed inside the branch (torch.cond refuses aliases).
        # torch.cond also refuses one tensor in two places of the result.
        def spelled_out(norm: Array) -> _Scaling:
            return _Scaling(
                _ones_like(xp, norm),
                1 / norm,
                norm,
                1 / norm,
                _ones_like(xp, norm),
                xp.ones_like(norm, dtype=xp.bool),
            )

        norm1, norm2 = xp.sqrt(sumsq1), xp.sqrt(sumsq2)
        return _TracedParts(dot / (norm1 * norm2), spelled_out(norm1), spelled_out(norm2))

    def rescaled() -> _TracedParts:
        scaling1 = _rescaled_scaling(xp, x1, axis)
        scaling2 = _rescaled_scaling(xp, x2, axis)
        cosine = row_dot(xp, scaling1.unit(xp, x1, axis), scaling2.unit(xp, x2, axis), axis)
        return _TracedParts(cosine, scaling1, scaling2)

    return branch(needs_rescaling, rescaled, fast)  # type: ignore[no-any-return]


def _traced_similarity(
    xp: ModuleType,
    branch: Callable[..., Any],
    x1: Array,
    x2: Array,
    axis: int,
    eps: float | None,
) -> _Cosine:
    """The similarity under a trace, with the closed-form derivative attached.

    The derivative (see ``_cosine_gradients``) reads ``x1`` and ``x2`` once
    more and the per-row parts. On JAX it is a jvp rule, so forward mode,
    reverse mode and higher orders all go through it (``closed_form_jvp``);
    under ``torch.compile`` a backward (``closed_form_backward``), and a
    gradient of the gradient recomputes the parts, recorded.
    """

    def value(parts: _TracedParts) -> Array:
        one, two = parts.scaling1, parts.scaling2
        cosine = parts.cosine
        if eps is not None:
            cosine = cosine * one.eps_factor(xp, eps) * two.eps_factor(xp, eps)
        finite = xp.logical_and(one.finite, two.finite)
        cosine = xp.where(finite, cosine, xp.full_like(cosine, float("nan")))
        return xp.clip(cosine, -1.0, 1.0)

    def parts_of(a: Array, b: Array) -> _TracedParts:
        return _traced_parts(xp, branch, a, b, axis)

    def gradients(
        weight: Array | None, needed: tuple[bool, bool], parts: _TracedParts, a: Array, b: Array
    ) -> tuple[Array | None, Array | None]:
        return _cosine_gradients(
            xp, weight, needed, a, b, parts.scaling1, parts.scaling2, parts.cosine, axis, eps
        )

    define = closed_form_jvp(xp)
    if define is not None:

        def tangent(
            parts: _TracedParts, tangents: tuple[Array | None, Array | None], a: Array, b: Array
        ) -> Array:
            needed = (tangents[0] is not None, tangents[1] is not None)
            rows = gradients(None, needed, parts, a, b)
            terms = [
                row_dot(xp, t, r, axis)
                for t, r in zip(tangents, rows, strict=True)
                if t is not None
            ]
            return terms[0] if len(terms) == 1 else terms[0] + terms[1]

        return _Cosine(define(parts_of, value, tangent)(x1, x2))
    attach = closed_form_backward(xp, x1, x2)
    if attach is None:
        return _Cosine(value(parts_of(x1, x2)))
    parts = parts_of(stop_gradient(xp, x1), stop_gradient(xp, x2))
    return _Cosine(
        attach(
            value(parts),
            lambda grad, needed, recorded, a, b: gradients(
                grad, needed, parts_of(a, b) if recorded else parts, a, b
            ),
            x1,
            x2,
        )
    )


def similarity_rows(xp: ModuleType, x1: Array, x2: Array, axis: int, eps: float | None) -> Array:
    """Cosine similarity of broadcast ``x1`` and ``x2`` along ``axis``, clipped to [-1, 1].

    The clip is straight-through (its gradient is the identity).
    """
    return _by_path(
        xp,
        (x1, x2),
        axis,
        empty=lambda: _Cosine(row_dot(xp, x1, x2, axis)),
        fast=lambda: _fast_similarity(xp, x1, x2, axis, eps),
        traced=lambda branch: _traced_similarity(xp, branch, x1, x2, axis, eps),
        rescaled=lambda a, b, ax: _Cosine(_clip(xp, _rescaled_cosine(xp, a, b, ax, eps))),
    ).cosine


def _rescaled_unit(xp: ModuleType, x: Array, axis: int, eps: float | None) -> UnitRows:
    unit, factor, finite = _rescaled_unit_parts(xp, x, axis, eps)
    return UnitRows(xp.where(finite, unit, xp.full_like(unit, float("nan"))), factor)


def _fast_unit(xp: ModuleType, x: Array, axis: int, eps: float | None) -> _FastRows[UnitRows]:
    with quiet_overflow(xp):
        norm = row_norm(xp, x, axis)

    def finish(ok: Array | None) -> UnitRows:
        n = norm if ok is None else xp.where(ok, norm, _ones_like(xp, norm))
        factor = None if eps is None else _eps_factor(xp, n, None, eps)
        return UnitRows(x / xp.expand_dims(n, axis=axis), factor)

    return (norm,), finish


def _flagged_unit(
    xp: ModuleType, branch: Callable[..., Any], x: Array, axis: int, eps: float | None
) -> UnitRows:
    """The fast unit vectors, or the rescaled ones for the whole batch if some row needs it.

    The flag is a NaN (see ``_range_flag``), not a comparison: XLA fuses
    the clamped norm into the division only while nothing else reads it, and
    a select costs another pass. Each branch computes what it returns and
    returns arrays only (``torch.cond`` refuses aliases and None).
    """
    sumsq = row_dot(xp, x, x, axis)

    def pack(rows: UnitRows) -> tuple[Array, ...]:
        return (rows.unit,) if rows.factor is None else (rows.unit, rows.factor)

    def fast() -> tuple[Array, ...]:
        norm = _clamped_norm(xp, sumsq)
        factor = None if eps is None else _eps_factor(xp, norm, None, eps)
        return pack(UnitRows(x / xp.expand_dims(norm, axis=axis), factor))

    chosen = branch(
        xp.any(xp.isnan(_range_flag(xp, sumsq))),
        lambda: pack(_rescaled_unit(xp, x, axis, eps)),
        fast,
    )
    return UnitRows(chosen[0], None if eps is None else chosen[1])


def unit_rows(xp: ModuleType, x: Array, axis: int, eps: float | None) -> UnitRows:
    """Unit vectors along ``axis`` (zero stays zero) and, with ``eps``, the clamp factor."""
    return _by_path(
        xp,
        (x,),
        axis,
        empty=lambda: UnitRows(x, None if eps is None else row_dot(xp, x, x, axis)),
        fast=lambda: _fast_unit(xp, x, axis, eps),
        traced=lambda branch: _flagged_unit(xp, branch, x, axis, eps),
        rescaled=lambda a, ax: _rescaled_unit(xp, a, ax, eps),
    )


def safe_divide(xp: ModuleType, numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``, and 0 (with gradient 0) where it is 0."""
    nonzero = denominator != 0
    safe = xp.where(nonzero, denominator, _ones_like(xp, denominator))
    return xp.where(nonzero, numerator / safe, xp.zeros_like(numerator))
