"""The cosine numerics, each formula in exactly one place.

Design (see the "Numerics" docs page):

* **Fast path.** Per row the dot ``x1.x2`` and the two unscaled norms, in the
  compute dtype. Where both sums of squares lie in ``[LOW, HIGH]`` (the norms
  in ``[sqrt(LOW), sqrt(HIGH)]``) no square overflowed and no significant
  square underflowed, so the plain formula is accurate to a few ulp. This is
  one pass over the data.
* **Rescaled path** (``_rescale``). Each vector is divided by its largest
  magnitude first, so its sum of squares lies in ``[1, d]``: exact from the
  smallest subnormal to the largest finite value, and NaN for vectors
  holding NaN or inf. The cosine is then the dot of the two unit vectors
  (normalize first), a form that XLA fuses into few passes, where three sums
  over the scaled vectors stay separate loops (see ``benchmarks/``).
* Where reads are free (the call's ``Mode``, see ``_strategy.mode``), the
  fast path runs on everything and only the rows outside the safe range
  (zero vectors, extreme magnitudes, NaN, inf) are gathered and recomputed
  by the rescaled path (``_paths``).
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
* **Closed-form derivative** (``_closed_form``): as a backward on eager
  PyTorch (when every row of the batch is on the fast path; otherwise
  autograd runs through both paths) and under ``torch.compile``, as a jvp
  rule under JAX.
* **Zero vectors** use the "double where" so that forward values are 0 and
  gradients are the subgradient 0, never NaN or ``1/eps``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

from ._closed_form import (
    Scaling,
    cosine_from_sums,
    cosine_gradients,
    fast_gradients,
    recorded_residuals,
    rescaled_scaling,
)
from ._paths import Cosine, FastRows, UnitRows, by_path
from ._rescale import (
    both_in_safe_range,
    clamped_norm,
    eps_factor,
    ones_like,
    range_flag,
    rescaled_cosine,
    rescaled_unit_parts,
)
from ._strategy.autodiff import (
    clip_straight_through,
    closed_form_backward,
    closed_form_jvp,
    stop_gradient,
)
from ._strategy.mode import Mode
from ._strategy.rows import quiet_overflow, row_dot, row_dot_and_norms, row_norm

Array = Any

__all__ = ["Cosine", "UnitRows", "safe_divide", "similarity_rows", "unit_rows"]


def _fast_similarity(
    xp: ModuleType, mode: Mode, x1: Array, x2: Array, axis: int, eps: float | None
) -> FastRows[Cosine]:
    """The one-pass similarity, with the closed-form backward where it pays.

    With such a backward (see ``closed_form_backward``) the sums are taken
    outside the gradient and the backward is attached to the result; should
    some row need rescaling they are taken again, recorded, for the merge.
    """
    attach = closed_form_backward(xp, mode, x1, x2)
    plain1, plain2 = (x1, x2) if attach is None else (stop_gradient(xp, x1), stop_gradient(xp, x2))
    with quiet_overflow(xp):
        dot, norm1, norm2 = row_dot_and_norms(xp, mode, plain1, plain2, axis)

    def finish(ok: Array | None) -> Cosine:
        if ok is None and attach is not None:
            # The unclipped cosine (without eps) is the residual of the backward.
            cosine = dot / (norm1 * norm2)
            value = cosine if eps is None else cosine_from_sums(xp, dot, norm1, norm2, eps)
            return Cosine(
                attach(
                    xp.clip(value, -1.0, 1.0),
                    lambda grad, needed, recorded, a, b: fast_gradients(
                        xp,
                        grad,
                        needed,
                        a,
                        b,
                        *(
                            recorded_residuals(xp, mode, a, b, axis)
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
                d, n1, n2 = row_dot_and_norms(xp, mode, x1, x2, axis)
        if ok is not None:
            ones = ones_like(xp, d)
            d = xp.where(ok, d, xp.zeros_like(d))
            n1 = xp.where(ok, n1, ones)
            n2 = xp.where(ok, n2, ones)
        cosine = cosine_from_sums(xp, d, n1, n2, eps)
        return Cosine(clip_straight_through(xp, mode, cosine, -1.0, 1.0, owned=True))

    return (norm1, norm2), finish


class _TracedParts(NamedTuple):
    cosine: Array
    scaling1: Scaling
    scaling2: Scaling


def _traced_parts(
    xp: ModuleType, mode: Mode, branch: Callable[..., Any], x1: Array, x2: Array, axis: int
) -> _TracedParts:
    """The cosine (unclipped, without eps) and both scalings, under a trace.

    The three row sums are taken once (XLA fuses them into one pass) and
    checked; ``branch`` recomputes the whole batch through ``x / max|x|``
    only when some row lies outside the safe range. Only per-row values
    cross the branch, so nothing of size ``n x d`` is kept for the backward.
    """
    sumsq1 = row_dot(xp, mode, x1, x1, axis)
    sumsq2 = row_dot(xp, mode, x2, x2, axis)
    dot = row_dot(xp, mode, x1, x2, axis)
    needs_rescaling = xp.logical_not(
        xp.all(both_in_safe_range(xp, xp.sqrt(sumsq1), xp.sqrt(sumsq2)))
    )

    def fast() -> _TracedParts:
        # Both branches return arrays of the same structure: the fast path's
        # shift, scale and finiteness are spelled out as ones and True. Every
        # result is computed inside the branch (torch.cond refuses aliases).
        # torch.cond also refuses one tensor in two places of the result.
        def spelled_out(norm: Array) -> Scaling:
            return Scaling(
                ones_like(xp, norm),
                1 / norm,
                norm,
                1 / norm,
                ones_like(xp, norm),
                xp.ones_like(norm, dtype=xp.bool),
            )

        norm1, norm2 = xp.sqrt(sumsq1), xp.sqrt(sumsq2)
        return _TracedParts(dot / (norm1 * norm2), spelled_out(norm1), spelled_out(norm2))

    def rescaled() -> _TracedParts:
        scaling1 = rescaled_scaling(xp, mode, x1, axis)
        scaling2 = rescaled_scaling(xp, mode, x2, axis)
        cosine = row_dot(xp, mode, scaling1.unit(xp, x1, axis), scaling2.unit(xp, x2, axis), axis)
        return _TracedParts(cosine, scaling1, scaling2)

    return branch(needs_rescaling, rescaled, fast)  # type: ignore[no-any-return]


def _traced_similarity(
    xp: ModuleType,
    mode: Mode,
    branch: Callable[..., Any],
    x1: Array,
    x2: Array,
    axis: int,
    eps: float | None,
) -> Cosine:
    """The similarity under a trace, with the closed-form derivative attached.

    The derivative (see ``cosine_gradients``) reads ``x1`` and ``x2`` once
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
        return _traced_parts(xp, mode, branch, a, b, axis)

    def gradients(
        weight: Array | None, needed: tuple[bool, bool], parts: _TracedParts, a: Array, b: Array
    ) -> tuple[Array | None, Array | None]:
        return cosine_gradients(
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
                row_dot(xp, mode, t, r, axis)
                for t, r in zip(tangents, rows, strict=True)
                if t is not None
            ]
            return terms[0] if len(terms) == 1 else terms[0] + terms[1]

        return Cosine(define(parts_of, value, tangent)(x1, x2))
    attach = closed_form_backward(xp, mode, x1, x2)
    if attach is None:
        return Cosine(value(parts_of(x1, x2)))
    parts = parts_of(stop_gradient(xp, x1), stop_gradient(xp, x2))
    return Cosine(
        attach(
            value(parts),
            lambda grad, needed, recorded, a, b: gradients(
                grad, needed, parts_of(a, b) if recorded else parts, a, b
            ),
            x1,
            x2,
        )
    )


def similarity_rows(
    xp: ModuleType, mode: Mode, x1: Array, x2: Array, axis: int, eps: float | None
) -> Array:
    """Cosine similarity of broadcast ``x1`` and ``x2`` along ``axis``, clipped to [-1, 1].

    The clip is straight-through (its gradient is the identity).
    """
    return by_path(
        xp,
        mode,
        (x1, x2),
        axis,
        empty=lambda: Cosine(row_dot(xp, mode, x1, x2, axis)),
        fast=lambda: _fast_similarity(xp, mode, x1, x2, axis, eps),
        traced=lambda branch: _traced_similarity(xp, mode, branch, x1, x2, axis, eps),
        rescaled=lambda a, b, ax: Cosine(
            clip_straight_through(xp, mode, rescaled_cosine(xp, mode, a, b, ax, eps), -1.0, 1.0)
        ),
    ).cosine


def _rescaled_unit(xp: ModuleType, mode: Mode, x: Array, axis: int, eps: float | None) -> UnitRows:
    unit, factor, finite = rescaled_unit_parts(xp, mode, x, axis, eps)
    return UnitRows(xp.where(finite, unit, xp.full_like(unit, float("nan"))), factor)


def _fast_unit(
    xp: ModuleType, mode: Mode, x: Array, axis: int, eps: float | None
) -> FastRows[UnitRows]:
    with quiet_overflow(xp):
        norm = row_norm(xp, mode, x, axis)

    def finish(ok: Array | None) -> UnitRows:
        n = norm if ok is None else xp.where(ok, norm, ones_like(xp, norm))
        factor = None if eps is None else eps_factor(xp, n, None, eps)
        return UnitRows(x / xp.expand_dims(n, axis=axis), factor)

    return (norm,), finish


def _flagged_unit(
    xp: ModuleType, mode: Mode, branch: Callable[..., Any], x: Array, axis: int, eps: float | None
) -> UnitRows:
    """The fast unit vectors, or the rescaled ones for the whole batch if some row needs it.

    The flag is a NaN (see ``range_flag``), not a comparison: XLA fuses
    the clamped norm into the division only while nothing else reads it, and
    a select costs another pass. Each branch computes what it returns and
    returns arrays only (``torch.cond`` refuses aliases and None).
    """
    sumsq = row_dot(xp, mode, x, x, axis)

    def pack(rows: UnitRows) -> tuple[Array, ...]:
        return (rows.unit,) if rows.factor is None else (rows.unit, rows.factor)

    def fast() -> tuple[Array, ...]:
        norm = clamped_norm(xp, sumsq)
        factor = None if eps is None else eps_factor(xp, norm, None, eps)
        return pack(UnitRows(x / xp.expand_dims(norm, axis=axis), factor))

    chosen = branch(
        xp.any(xp.isnan(range_flag(xp, sumsq))),
        lambda: pack(_rescaled_unit(xp, mode, x, axis, eps)),
        fast,
    )
    return UnitRows(chosen[0], None if eps is None else chosen[1])


def unit_rows(xp: ModuleType, mode: Mode, x: Array, axis: int, eps: float | None) -> UnitRows:
    """Unit vectors along ``axis`` (zero stays zero) and, with ``eps``, the clamp factor."""
    return by_path(
        xp,
        mode,
        (x,),
        axis,
        empty=lambda: UnitRows(x, None if eps is None else row_dot(xp, mode, x, x, axis)),
        fast=lambda: _fast_unit(xp, mode, x, axis, eps),
        traced=lambda branch: _flagged_unit(xp, mode, branch, x, axis, eps),
        rescaled=lambda a, ax: _rescaled_unit(xp, mode, a, ax, eps),
    )


def safe_divide(xp: ModuleType, numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``, and 0 (with gradient 0) where it is 0."""
    nonzero = denominator != 0
    safe = xp.where(nonzero, denominator, ones_like(xp, denominator))
    return xp.where(nonzero, numerator / safe, xp.zeros_like(numerator))
