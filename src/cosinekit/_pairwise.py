"""Pairwise cosine similarity and distance between two sets of row vectors."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._lib._kernels import unit_rows
from ._lib._strategy import clip_straight_through, row_dot
from ._lib._validation import broadcast_shape, floating_dtypes, namespace_of, positive_eps

Array = Any

__all__ = ["pairwise_cosine_distance", "pairwise_cosine_similarity"]


def _check_rows(name: str, x: Array) -> None:
    if x.ndim < 2:
        msg = f"{name} must have shape (..., rows, features), got shape {tuple(x.shape)}"
        raise ValueError(msg)


def _unit(xp: ModuleType, x: Array, eps: float | None) -> tuple[Array, Array]:
    """Rows scaled to ``x / max(||x||, eps)``, and each row's ``u . u`` before ``eps``.

    The second array is about 1 for a nonzero row, 0 for a zero row and NaN
    for a row holding NaN or inf; it decides the diagonal of ``y=None``.
    """
    rows = unit_rows(xp, x, -1, eps)
    return rows.clamped(xp, -1), row_dot(xp, rows.unit, rows.unit, -1)


def _similarity(
    x: Array, y: Array | None, eps: object, xp: ModuleType | None
) -> tuple[ModuleType, Array, Array | None, Any]:
    """The clipped similarity matrix, each row's ``u . u`` when ``y`` is None, the dtype."""
    arrays = (x,) if y is None else (x, y)
    names = ("x", "y")[: len(arrays)]
    xp = namespace_of(*arrays, names=names, xp=xp)
    result_dtype, compute_dtype = floating_dtypes(xp, *arrays)
    for name, array in zip(names, arrays, strict=True):
        _check_rows(name, array)
    if y is not None:
        if x.shape[-1] != y.shape[-1]:
            msg = (
                f"x and y must have the same number of features, got shapes "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
            raise ValueError(msg)
        try:
            broadcast_shape(tuple(x.shape[:-2]), tuple(y.shape[:-2]), names=("x", "y"))
        except ValueError:
            msg = (
                f"the leading dimensions of x {tuple(x.shape)} and y {tuple(y.shape)} "
                "do not broadcast"
            )
            raise ValueError(msg) from None
    eps = positive_eps(eps, xp=xp, dtype=compute_dtype)
    unit_x, self_dot = _unit(xp, xp.astype(x, compute_dtype, copy=False), eps)
    unit_y = unit_x if y is None else _unit(xp, xp.astype(y, compute_dtype, copy=False), eps)[0]
    # One matrix product of unit rows: (..., n, d) @ (..., d, m), never (n, m, d).
    similarity = xp.matmul(unit_x, xp.matrix_transpose(unit_y))
    similarity = clip_straight_through(xp, similarity, -1.0, 1.0, owned=True)
    return xp, similarity, None if y is not None else self_dot, result_dtype


def _diagonal(xp: ModuleType, similarity: Array) -> Array:
    """Where row index equals column index, as an ``(n, m)`` mask (lazy-safe)."""
    n, m = similarity.shape[-2], similarity.shape[-1]
    device = array_device(similarity)
    rows = xp.reshape(xp.arange(n, device=device), (n, 1))
    return rows == xp.reshape(xp.arange(m, device=device), (1, m))


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
    xp, similarity, self_dot, result_dtype = _similarity(x, y, eps, xp)
    if zero_diagonal:
        similarity = xp.where(_diagonal(xp, similarity), xp.zeros_like(similarity), similarity)
    elif self_dot is not None:
        # NaN > 0 is False, so NaN rows keep NaN and zero rows keep 0.
        own = xp.where(self_dot > 0, xp.ones_like(self_dot), self_dot)
        similarity = xp.where(_diagonal(xp, similarity), xp.expand_dims(own, axis=-1), similarity)
    return xp.astype(similarity, result_dtype, copy=False)


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
    xp, similarity, self_dot, result_dtype = _similarity(x, y, eps, xp)
    # The similarity is already clipped to [-1, 1], so this lies in [0, 2].
    distance = 1 - similarity
    if self_dot is not None:
        own = xp.where(xp.isnan(self_dot), self_dot, xp.zeros_like(self_dot))
        distance = xp.where(_diagonal(xp, distance), xp.expand_dims(own, axis=-1), distance)
    return xp.astype(distance, result_dtype, copy=False)
