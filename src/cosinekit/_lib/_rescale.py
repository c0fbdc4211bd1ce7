"""The safe range of the one-pass norms, and the rescaled forms that are exact everywhere.

Where both sums of squares of a row lie in the safe range (see
`norm_range`), the plain formula is accurate to a few ulp. Everywhere else
each vector is divided by its largest magnitude first (`scaled_by_max`), so
its sum of squares lies in ``[1, d]``: exact from the smallest subnormal to
the largest finite value, and NaN for vectors holding NaN or inf.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import Any

from ._strategy.autodiff import stop_gradient
from ._strategy.mode import Mode
from ._strategy.rows import row_dot

Array = Any


@functools.cache
def norm_range(xp: ModuleType, dtype: Any) -> tuple[float, float]:
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


def in_safe_range(xp: ModuleType, norm: Array) -> Array:
    low, high = norm_range(xp, norm.dtype)
    return (norm >= low) & (norm <= high)


def both_in_safe_range(xp: ModuleType, norm1: Array, norm2: Array) -> Array:
    """Whether both norms lie in the safe range: 5 operations instead of 7.

    ``minimum`` and ``maximum`` propagate NaN, which fails both comparisons.
    """
    low, high = norm_range(xp, norm1.dtype)
    return (xp.minimum(norm1, norm2) >= low) & (xp.maximum(norm1, norm2) <= high)


def range_flag(xp: ModuleType, sum_of_squares: Array) -> Array:
    """0 where ``s`` is in the safe range, NaN for smaller, infinite or NaN ``s``.

    ``0 * sqrt(s - LOW)`` needs no select; used only on libraries that do
    not warn about the NaN (JAX).
    """
    low = norm_range(xp, sum_of_squares.dtype)[0] ** 2
    return 0 * xp.sqrt(sum_of_squares - low)


def clamped_norm(xp: ModuleType, sum_of_squares: Array) -> Array:
    """``sqrt(max(s, LOW))``: finite, with finite gradients, for every row.

    Exact in the safe range; elsewhere a placeholder that the range flag
    marks for the rescaled path.
    """
    low = norm_range(xp, sum_of_squares.dtype)[0] ** 2
    return xp.sqrt(xp.maximum(sum_of_squares, xp.full_like(sum_of_squares, low)))


def ones_like(xp: ModuleType, x: Array) -> Array:
    return xp.ones_like(x)


def safe_sqrt(xp: ModuleType, s: Array) -> Array:
    """``sqrt(s)``, but 1 at ``s == 0`` so that gradients stay finite there."""
    return xp.sqrt(xp.where(s == 0, ones_like(xp, s), s))


def eps_factor(xp: ModuleType, norm: Array, scale: Array | None, eps: float) -> Array:
    """``min(1, ||x|| / eps)``, where ``||x|| = scale * norm``.

    Multiplying by this turns ``1 / ||x||`` into ``1 / max(||x||, eps)``.
    ``scale / eps`` may overflow to inf, which gives 1, rightly: ``norm`` is
    positive wherever ``scale`` is. A zero ``scale`` gives 0 (``eps`` is a
    normal number, so ``scale / eps`` is finite there).
    """
    if scale is None:
        return xp.minimum(norm, xp.full_like(norm, eps)) / eps
    return xp.minimum(ones_like(xp, norm), scale / eps * norm)


def scaled_by_max(xp: ModuleType, x: Array, axis: int) -> tuple[Array, Array, Array, Array, Array]:
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
    divisor = xp.where(usable, scale, ones_like(xp, scale)) * shift
    scaled = xp.where(usable, (x * shift) / divisor, xp.zeros_like(x))
    return scaled, scale, finite, shift, divisor


def rescaled_unit_parts(
    xp: ModuleType, mode: Mode, x: Array, axis: int, eps: float | None
) -> tuple[Array, Array | None, Array]:
    """Unit vectors of ``x / max|x|``, the eps factor (or None), and finiteness.

    Rows holding inf or NaN come out as zero vectors, marked not finite.
    This is the form that autodiff goes through (the eager repair path,
    Dask, ``torch.func``): two quotients, each with a finite derivative at
    every magnitude. ``rescaled_scaling`` computes the same unit vectors
    through one per-row reciprocal ``1 / (max|x| * shift * norm)`` for the
    closed-form derivative; differentiating that reciprocal squares the
    per-row divisor, which underflows for tiny vectors (the gradient would be
    -inf for float64 rows of 1e-300), so the two stay separate.
    """
    scaled, scale, finite, _, _ = scaled_by_max(xp, x, axis)
    sumsq = row_dot(xp, mode, scaled, scaled, axis)
    norm = safe_sqrt(xp, sumsq)
    unit = xp.where(
        xp.expand_dims(sumsq != 0, axis=axis),
        scaled / xp.expand_dims(norm, axis=axis),
        xp.zeros_like(scaled),
    )
    factor = None if eps is None else eps_factor(xp, norm, xp.squeeze(scale, axis=axis), eps)
    return unit, factor, finite


def rescaled_cosine(
    xp: ModuleType, mode: Mode, x1: Array, x2: Array, axis: int, eps: float | None
) -> Array:
    unit1, factor1, finite1 = rescaled_unit_parts(xp, mode, x1, axis, eps)
    unit2, factor2, finite2 = rescaled_unit_parts(xp, mode, x2, axis, eps)
    cosine = row_dot(xp, mode, unit1, unit2, axis)
    if factor1 is not None:
        cosine = cosine * factor1 * factor2
    # NaN is set here, after the dot of the zeroed unit vectors, so that on
    # this path the gradient with respect to a finite x2 paired with a
    # non-finite x1 is 0. The fast paths' dot reads the raw values (0 * inf
    # in its backward), so there, as in torch's and JAX's own functions, it
    # is NaN. Either way only that row's gradient is affected (docs: Numerics).
    finite = xp.squeeze(finite1 & finite2, axis=axis)
    return xp.where(finite, cosine, xp.full_like(cosine, float("nan")))
