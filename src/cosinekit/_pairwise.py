"""Pairwise cosine similarity and distance between two sets of row vectors."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._lib._kernels import unit_rows
from ._lib._strategy.autodiff import clip_straight_through, stop_gradient
from ._lib._strategy.inplace import one_minus, set_diagonal, writable_in_place
from ._lib._strategy.mode import Mode
from ._lib._strategy.rows import row_dot
from ._lib._validation import broadcast_shape, flag, floating_dtypes, positive_eps, resolve

Array = Any

__all__ = ["pairwise_cosine_distance", "pairwise_cosine_similarity"]


def _check_rows(name: str, x: Array) -> None:
    if x.ndim < 2:
        msg = f"{name} must have shape (..., rows, features), got shape {tuple(x.shape)}"
        raise ValueError(msg)


def _unit(xp: ModuleType, mode: Mode, x: Array, eps: float | None) -> tuple[Array, Array]:
    """Rows scaled to ``x / max(||x||, eps)``, and each row's ``u . u`` before ``eps``.

    The second array is about 1 for a nonzero row, 0 for a zero row and NaN
    for a row holding NaN or inf; it decides the diagonal of ``y=None``.
    """
    rows = unit_rows(xp, mode, x, -1, eps)
    return rows.clamped(xp, -1), row_dot(xp, mode, rows.unit, rows.unit, -1)


def _non_finite_rows_reach_gradients(
    xp: ModuleType, mode: Mode, self_dot_x: Array, self_dot_y: Array
) -> bool:
    """Whether a NaN unit row could spread NaN into the gradients of every other row.

    The backward of ``unit_x @ unit_y.T`` multiplies the upstream gradient
    (0 where the loss masks a NaN entry out) by the other side's unit rows,
    and 0 * NaN is NaN: one NaN row in ``y`` would make the gradient of every
    row of ``x`` NaN. Only where a gradient may flow, and, where values are
    readable, only when some row is not finite.
    """
    if not mode.records_gradients:
        return False
    if not mode.host_reads_free:
        return True
    return not bool(xp.all(xp.isfinite(self_dot_x)) & xp.all(xp.isfinite(self_dot_y)))


def _zero_non_finite_rows(xp: ModuleType, unit: Array, self_dot: Array) -> tuple[Array, Array]:
    """``unit`` with NaN rows zeroed, and per row 0 or NaN to add back outside the gradient."""
    finite = xp.isfinite(self_dot)
    clean = xp.where(xp.expand_dims(finite, axis=-1), unit, xp.zeros_like(unit))
    nan = xp.where(finite, xp.zeros_like(self_dot), xp.full_like(self_dot, float("nan")))
    return clean, stop_gradient(xp, nan)


# A half-precision result is computed in float32 blocks of at most this
# fraction of its rows, each written into the result: the float32 block costs
# 2 / BLOCKS_PER_RESULT of the result's size, instead of twice the result.
BLOCKS_PER_RESULT = 16


def _pairwise(
    x: Array,
    y: Array | None,
    eps: object,
    xp: ModuleType | None,
    *,
    distance: bool,
    zero_diagonal: bool,
    cast: bool = True,
    resolved: tuple[ModuleType, Mode] | None = None,
    names: tuple[str, str] = ("x", "y"),
) -> tuple[ModuleType, Array, Any]:
    """``(xp, matrix, result_dtype)``: the clipped similarity (or distance), diagonal set.

    The matrix is in the result dtype, or with ``cast=False`` in the compute
    dtype (float32 for half precision), for callers that reduce it further.

    Memory: the matrix product is the only array as large as the result.
    Clipping, ``1 - s`` and the diagonal are written into it in place where
    the library allows (see ``set_diagonal`` in ``_strategy``).
    """
    arrays = (x,) if y is None else (x, y)
    xp, mode = (
        resolve(*arrays, names=names[: len(arrays)], xp=xp) if resolved is None else resolved
    )
    result_dtype, compute_dtype = floating_dtypes(xp, *arrays)
    for name, array in zip(names, arrays, strict=False):
        _check_rows(name, array)
    if y is not None:
        if x.shape[-1] != y.shape[-1]:
            msg = (
                f"{names[0]} and {names[1]} must have the same number of features, got "
                f"shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
            raise ValueError(msg)
        try:
            broadcast_shape(tuple(x.shape[:-2]), tuple(y.shape[:-2]), names=names)
        except ValueError:
            msg = (
                f"the leading dimensions of {names[0]} {tuple(x.shape)} and {names[1]} "
                f"{tuple(y.shape)} do not broadcast"
            )
            raise ValueError(msg) from None
    eps = positive_eps(eps, xp=xp, dtype=compute_dtype)
    unit_x, self_dot = _unit(xp, mode, xp.astype(x, compute_dtype, copy=False), eps)
    unit_y, self_dot_y = (
        (unit_x, self_dot)
        if y is None
        else _unit(xp, mode, xp.astype(y, compute_dtype, copy=False), eps)
    )
    nan_x, nan_y = None, None
    if _non_finite_rows_reach_gradients(xp, mode, self_dot, self_dot_y):
        unit_x, nan_x = _zero_non_finite_rows(xp, unit_x, self_dot)
        unit_y, nan_y = _zero_non_finite_rows(xp, unit_y, self_dot_y)
    unit_y_t = xp.matrix_transpose(unit_y)
    diagonal: Array | float | None = None
    if zero_diagonal:
        diagonal = 0.0
    elif y is None and distance:
        # Each row is at distance 0 from itself, zero rows too; NaN rows stay NaN.
        diagonal = xp.where(xp.isnan(self_dot), self_dot, xp.zeros_like(self_dot))
    elif y is None:
        # NaN > 0 is False, so NaN rows keep NaN and zero rows keep 0.
        diagonal = xp.where(self_dot > 0, xp.ones_like(self_dot), self_dot)

    def block(start: int, stop: int | None) -> Array:
        """Rows ``start:stop`` of the result, in the compute dtype."""
        rows = unit_x if stop is None else unit_x[..., start:stop, :]
        # One matrix product of unit rows: (..., n, d) @ (..., d, m), never (n, m, d).
        values = xp.matmul(rows, unit_y_t)
        if nan_x is not None and nan_y is not None:
            own_nan = nan_x if stop is None else nan_x[..., start:stop]
            values = values + (xp.expand_dims(own_nan, axis=-1) + xp.expand_dims(nan_y, axis=-2))
        values = clip_straight_through(xp, mode, values, -1.0, 1.0, owned=True)
        if distance:
            # Clipped to [-1, 1] first, so this lies in [0, 2].
            values = one_minus(xp, mode, values, owned=True)
        if diagonal is None:
            return values
        own = diagonal if isinstance(diagonal, float) else diagonal[..., start:]
        return set_diagonal(xp, mode, values, own, offset=start, owned=True)

    n = x.shape[-2]
    if not cast:
        return xp, block(0, None), result_dtype
    if result_dtype == compute_dtype or not writable_in_place(xp, mode, unit_x) or n < 2:
        return xp, xp.astype(block(0, None), result_dtype, copy=False), result_dtype
    # Half precision: float32 blocks written into the result as they come.
    shape = (*broadcast_shape(tuple(x.shape[:-2]), tuple(unit_y.shape[:-2]), names=names), n)
    result = xp.empty((*shape, unit_y.shape[-2]), dtype=result_dtype, device=array_device(x))
    step = -(-n // BLOCKS_PER_RESULT)
    for start in range(0, n, step):
        stop = min(start + step, n)
        result[..., start:stop, :] = block(start, stop)
    return xp, result, result_dtype


def similarity_matrix(
    xp: ModuleType,
    mode: Mode,
    x: Array,
    y: Array | None,
    eps: object,
    names: tuple[str, str] = ("x", "y"),
) -> tuple[Array, Any]:
    """``(similarity, result_dtype)``, the similarity clipped and in the compute dtype.

    The core of the losses built on the pairwise similarity (the contrastive
    family): they reduce it, so it stays in float32 for half-precision inputs.
    With ``y=None`` its diagonal is 1 for nonzero rows, as in
    `pairwise_cosine_similarity`. ``xp`` and ``mode`` are the caller's,
    resolved from all of its arguments.
    """
    _, similarity, result_dtype = _pairwise(
        x,
        y,
        eps,
        xp,
        distance=False,
        zero_diagonal=False,
        cast=False,
        resolved=(xp, mode),
        names=names,
    )
    return similarity, result_dtype


def pairwise_cosine_similarity(
    x: Array,
    y: Array | None = None,
    /,
    *,
    eps: float | None = None,
    zero_diagonal: bool = False,
    xp: ModuleType | None = None,
) -> Array:
    """Cosine similarity of every row of ``x`` with every row of ``y``.

    The equivalent of ``sklearn.metrics.pairwise.cosine_similarity`` and
    ``torchmetrics.functional.pairwise_cosine_similarity``, with batches,
    exact at every magnitude and 0 (not NaN) at zero rows. Computed as one
    matrix product of unit rows, so memory is that of the ``(..., n, m)``
    result; an ``(n, m, d)`` array is never formed.

    Parameters
    ----------
    x : array
        Shape ``(..., n, d)``: ``n`` row vectors of ``d`` features.
    y : array, optional
        Shape ``(..., m, d)``; the leading dimensions broadcast against those
        of ``x``. ``None`` (the default) compares ``x`` with itself.
    eps : float, optional
        Clamp each norm separately, ``max(||x||, eps)``. The default ``None``
        clamps only zero norms. Checked against the compute dtype as in
        `cosine_similarity`.
    zero_diagonal : bool, optional
        Set the entries whose row and column index are equal to 0, as
        torchmetrics' option of the same name (its default for ``y=None``).
        With ``y`` given this is the diagonal ``i == j`` of the ``(n, m)``
        block too.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        Shape ``(..., n, m)``, in ``[-1, 1]``, in the promoted floating dtype
        of the inputs (float16 and bfloat16 computed in float32). Zero rows
        have similarity 0 with everything; rows with NaN or inf give NaN.
        With ``y=None`` the diagonal is exactly 1 for every nonzero row, also
        where ``eps`` clamps its norm (a vector points exactly its own way),
        0 for zero rows and NaN for rows holding NaN or inf.

    Raises
    ------
    ValueError
        If an input has fewer than 2 dimensions, the feature sizes differ or
        the leading dimensions do not broadcast.

    See Also
    --------
    pairwise_cosine_distance, cosine_topk

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> x = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    >>> ck.pairwise_cosine_similarity(x).round(4)
    array([[1.    , 0.7071, 0.    ],
           [0.7071, 1.    , 0.    ],
           [0.    , 0.    , 0.    ]])
    >>> ck.pairwise_cosine_similarity(x, np.array([[0.0, 5.0]])).round(4)
    array([[0.    ],
           [0.7071],
           [0.    ]])

    """
    zero_diagonal = flag(zero_diagonal, "zero_diagonal")
    return _pairwise(x, y, eps, xp, distance=False, zero_diagonal=zero_diagonal)[1]


def pairwise_cosine_distance(
    x: Array,
    y: Array | None = None,
    /,
    *,
    eps: float | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """Cosine distance ``1 - cos`` of every row of ``x`` with every row of ``y``.

    The equivalent of ``sklearn.metrics.pairwise.cosine_distances`` and
    ``scipy.spatial.distance.cdist(x, y, "cosine")``, with batches; a zero
    row is at distance 1 from everything (SciPy gives NaN).

    Parameters
    ----------
    x : array
        Shape ``(..., n, d)``.
    y : array, optional
        Shape ``(..., m, d)``, leading dimensions broadcast against ``x``.
        ``None`` (the default) compares ``x`` with itself.
    eps : float, optional
        As in `pairwise_cosine_similarity`.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        Shape ``(..., n, m)``, in ``[0, 2]``. With ``y=None`` the diagonal is
        exactly 0 for every row, zero rows included, as scikit-learn's
        ``cosine_distances(X)`` does (each row is at distance 0 from itself);
        only rows holding NaN or inf keep NaN there.

    Raises
    ------
    ValueError
        As `pairwise_cosine_similarity`.

    See Also
    --------
    pairwise_cosine_similarity

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> x = np.array([[1.0, 0.0], [-2.0, 0.0], [0.0, 0.0]])
    >>> ck.pairwise_cosine_distance(x)
    array([[0., 2., 1.],
           [2., 0., 1.],
           [1., 1., 0.]])

    """
    return _pairwise(x, y, eps, xp, distance=True, zero_diagonal=False)[1]
