"""L2 normalization of vectors."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ._lib._kernels import unit_rows
from ._lib._validation import floating_dtypes, normalize_axis, positive_eps, resolve

Array = Any

__all__ = ["l2_normalize"]


def l2_normalize(
    x: Array,
    /,
    *,
    axis: int = -1,
    eps: float | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """Scale each vector along ``axis`` to unit Euclidean length.

    ``x / max(||x||, eps)``: the equivalent of ``tf.math.l2_normalize`` and
    ``torch.nn.functional.normalize(p=2)``, exact at every magnitude.

    Parameters
    ----------
    x : array
        An array of any array-API library.
    axis : int, optional
        The feature axis. Default -1.
    eps : float, optional
        Clamp the norm, ``max(||x||, eps)``, as PyTorch does. The default
        ``None`` clamps only zero norms, so every nonzero vector comes out
        with unit length, even a vector of subnormal numbers. Checked
        against the compute dtype as in `cosine_similarity`.
    xp : namespace, optional
        The array namespace; inferred from ``x`` by default.

    Returns
    -------
    array
        Same shape as ``x``, in its floating dtype (integers become the
        default floating dtype). Zero vectors stay zero vectors and their
        gradient is 0 (PyTorch's is ``1/eps``); NaN or inf in a vector makes
        that whole vector NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> ck.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0], [1e-320, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ],
           [1. , 0. ]])

    """
    xp, mode = resolve(x, names=("x",), xp=xp)
    result_dtype, compute_dtype = floating_dtypes(xp, x)
    axis = normalize_axis(axis, x.ndim)
    eps = positive_eps(eps, xp=xp, dtype=compute_dtype)
    x = xp.astype(x, compute_dtype, copy=False)
    unit = unit_rows(xp, mode, x, axis, eps).clamped(xp, axis)
    return xp.astype(unit, result_dtype, copy=False)
