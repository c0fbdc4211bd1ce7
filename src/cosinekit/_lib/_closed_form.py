"""The closed-form derivative of the cosine, from per-row factors that every path provides.

With ``u = x / ||x||`` and ``c = u1 . u2``, ``d c / d x1 = (u2 - c u1) / ||x1||``
(the eps clamp and the straight-through clip folded in). It replaces the
replay of every operation of the forward: as a backward on eager PyTorch and
under ``torch.compile``, as a jvp rule under JAX (``_strategy.autodiff``),
and reads ``x1`` and ``x2`` once more. The per-row factors (`Scaling`) come
from the fast path's norms or from the rescaled form, so nothing overflows
or underflows on the way.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

from ._rescale import eps_factor, ones_like, safe_sqrt, scaled_by_max
from ._strategy.mode import Mode
from ._strategy.rows import row_dot, row_dot_and_norms

Array = Any


class Scaling(NamedTuple):
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
        return eps_factor(xp, self.norm, self.scale, eps)


def fast_scaling(xp: ModuleType, norm: Array) -> Scaling:
    """The scaling of a row whose norm lies in the safe range."""
    inverse = 1 / norm
    return Scaling(None, inverse, norm, inverse, None, None)


def rescaled_scaling(xp: ModuleType, mode: Mode, x: Array, axis: int) -> Scaling:
    """The scaling of every row through ``x / max|x|`` (see ``scaled_by_max``).

    The unit vector is ``(x * shift) / (max|x| * shift * norm)``, the
    quotient taken through one per-row reciprocal: the divisor lies between
    ``2**-85`` and ``2**64``, so the reciprocal is normal in float32.
    """
    scaled, scale, finite, shift, divisor = scaled_by_max(xp, x, axis)
    sumsq = row_dot(xp, mode, scaled, scaled, axis)
    norm = safe_sqrt(xp, sumsq)
    # Zero and non-finite rows were zeroed: their unit vector and gradient
    # are 0, and a scale of 1 keeps 0 / scale from being NaN.
    usable = sumsq != 0
    zeros, ones = xp.zeros_like(norm), ones_like(xp, norm)
    return Scaling(
        xp.squeeze(shift, axis=axis),
        xp.where(usable, 1 / (xp.squeeze(divisor, axis=axis) * norm), zeros),
        norm,
        xp.where(usable, 1 / norm, zeros),
        xp.where(usable, xp.squeeze(scale, axis=axis), ones),
        xp.squeeze(finite, axis=axis),
    )


def cosine_gradients(
    xp: ModuleType,
    weight: Array | None,
    needed: tuple[bool, bool],
    x1: Array,
    x2: Array,
    scaling1: Scaling,
    scaling2: Scaling,
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
        scaling: Scaling,
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


def fast_gradients(
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
    """``cosine_gradients`` of rows on the fast path, from their norms."""
    return cosine_gradients(
        xp,
        grad,
        needed,
        x1,
        x2,
        fast_scaling(xp, norm1),
        fast_scaling(xp, norm2),
        cosine,
        axis,
        eps,
    )


def recorded_residuals(
    xp: ModuleType, mode: Mode, x1: Array, x2: Array, axis: int
) -> tuple[Array, Array, Array]:
    """The norms and the cosine again, recorded: for a gradient of the gradient.

    The residuals of the forward were taken outside the gradient; a
    higher-order derivative needs their dependence on ``x1`` and ``x2``.
    """
    dot, norm1, norm2 = row_dot_and_norms(xp, mode, x1, x2, axis)
    return norm1, norm2, dot / (norm1 * norm2)


def cosine_from_sums(
    xp: ModuleType, dot: Array, norm1: Array, norm2: Array, eps: float | None
) -> Array:
    cosine = dot / (norm1 * norm2)
    if eps is not None:
        cosine = cosine * eps_factor(xp, norm1, None, eps) * eps_factor(xp, norm2, None, eps)
    return cosine
