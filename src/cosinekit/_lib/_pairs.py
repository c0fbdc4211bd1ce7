"""Preparing the two inputs of a row-wise function: namespace, dtype, broadcasting."""

from __future__ import annotations

import numbers
from types import ModuleType
from typing import Any, NamedTuple

from ._strategy.mode import Mode
from ._validation import (
    broadcast_shape,
    flag,
    floating_dtypes,
    namespace_of,
    normalize_axis,
    positive_eps,
    resolve,
)

Array = Any


class Pair(NamedTuple):
    """Two inputs broadcast against each other, in the compute dtype.

    A named tuple, not a frozen dataclass: it is built on every call, and
    the dataclass's ``__init__`` costs a microsecond.
    """

    xp: ModuleType
    mode: Mode  # of the whole call: every array argument counts
    x1: Array
    x2: Array
    axis: int  # negative index of the feature axis in the broadcast shape
    result_dtype: Any
    eps: float | None  # checked against the compute dtype (see positive_eps)

    def finish(self, values: Array, *, keepdims: bool) -> Array:
        """Cast a per-row result back to the result dtype, keeping the axis if asked."""
        if flag(keepdims, "keepdims"):
            values = self.xp.expand_dims(values, axis=self.axis)
        return as_result(self.xp, values, self.result_dtype, like=self.x1)


def as_result(xp: ModuleType, values: Array, dtype: Any, *, like: Array) -> Array:
    """``values`` cast to the result dtype, as an array of ``like``'s type.

    NumPy reductions return NumPy scalars; the contract promises arrays.
    """
    if values.dtype != dtype:
        values = xp.astype(values, dtype)
    return values if isinstance(values, type(like)) else xp.asarray(values)


def prepare_pair(
    x1: Array,
    x2: Array,
    *,
    axis: object,
    eps: object,
    feature_weights: Array | None,
    xp: ModuleType | None,
    names: tuple[str, str] = ("x1", "x2"),
    others: tuple[tuple[str, object], ...] = (),
    resolved: tuple[ModuleType, Mode] | None = None,
) -> Pair:
    """Validate, promote and broadcast ``x1`` and ``x2``, and check ``eps``.

    With ``feature_weights`` the inputs become ``sqrt(w) * x``, so that every
    formula downstream computes the weighted cosine
    ``sum(w x1 x2) / sqrt(sum(w x1^2) sum(w x2^2))`` unchanged. Features of
    weight 0 are excluded entirely, as a mask (``where``) excludes them.
    ``others`` are the call's further arguments, ``(name, value)``: those
    that are arrays count for the namespace and the mode. ``resolved`` is
    the caller's ``(xp, mode)``, where it resolved them from more arrays.
    """
    arrays = (x1, x2) if feature_weights is None else (x1, x2, feature_weights)
    array_names = (*names, "feature_weights")[: len(arrays)]
    # Everything but None and numbers counts (a number may be symbolic under
    # torch.compile(dynamic=True), where is_array_api_obj cannot be traced).
    extra = [
        (name, value)
        for name, value in others
        if value is not None and not isinstance(value, numbers.Number)
    ]
    if resolved is None:
        xp, mode = resolve(
            *arrays,
            *(value for _, value in extra),
            names=(*array_names, *(name for name, _ in extra)),
            xp=xp,
        )
    else:
        xp, mode = resolved
        namespace_of(*arrays, names=array_names, xp=None)
    result_dtype, compute_dtype = floating_dtypes(xp, x1, x2)
    shape1, shape2 = tuple(x1.shape), tuple(x2.shape)
    same_shape = shape1 == shape2
    shape = shape1 if same_shape else broadcast_shape(shape1, shape2, names=names)
    axis = normalize_axis(axis, len(shape))
    # Only a cast or broadcast that changes something: each call is a dispatch.
    if x1.dtype != compute_dtype:
        x1 = xp.astype(x1, compute_dtype)
    if x2.dtype != compute_dtype:
        x2 = xp.astype(x2, compute_dtype)
    if not same_shape:
        x1, x2 = xp.broadcast_arrays(x1, x2)
    if feature_weights is not None:
        root = _root_weights(xp, mode, feature_weights, tuple(x1.shape), axis, compute_dtype)
        excluded = root == 0
        zero = xp.zeros_like(root)
        # Zero the excluded features before multiplying: 0 * inf would be NaN.
        x1 = root * xp.where(excluded, zero, x1)
        x2 = root * xp.where(excluded, zero, x2)
    eps = positive_eps(eps, xp=xp, dtype=compute_dtype)
    return Pair(xp, mode, x1, x2, axis, result_dtype, eps)


def _root_weights(
    xp: ModuleType,
    mode: Mode,
    weights: Array,
    shape: tuple[int | None, ...],
    axis: int,
    dtype: Any,
) -> Array:
    """``sqrt(w)``, with a 1-D ``w`` laid along ``axis``; negative ``w`` is an error."""
    floating_dtypes(xp, weights)  # rejects complex and other dtypes
    weights = xp.astype(weights, dtype, copy=False)
    if weights.ndim == 1:
        placed = [1] * len(shape)
        placed[axis] = weights.shape[0]
        weights = xp.reshape(weights, tuple(placed))
    broadcast_shape(shape, tuple(weights.shape), names=("inputs", "feature_weights"))
    if mode.host_reads_free and bool(xp.any(weights < 0)):
        msg = "feature_weights must be non-negative"
        raise ValueError(msg)
    positive = weights > 0
    # The double where keeps the gradient with respect to w finite at w == 0.
    root = xp.where(
        positive,
        xp.sqrt(xp.where(positive, weights, xp.ones_like(weights))),
        xp.zeros_like(weights),
    )
    # Negative weights that could not be checked (lazy arrays) and NaN weights
    # make their features NaN, so the result is NaN rather than silently wrong.
    return xp.where(weights >= 0, root, xp.full_like(weights, float("nan")))
