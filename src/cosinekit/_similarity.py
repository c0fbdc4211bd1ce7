"""Row-wise cosine similarity, cosine distance and angular distance."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from ._lib._kernels import similarity_rows, unit_rows
from ._lib._pairs import prepare_pair
from ._lib._strategy.autodiff import clip_straight_through
from ._lib._strategy.rows import row_dot, row_norm

Array = Any

__all__ = ["angular_distance", "cosine_distance", "cosine_similarity"]


def cosine_similarity(
    x1: Array,
    x2: Array,
    /,
    *,
    axis: int = -1,
    eps: float | None = None,
    keepdims: bool = False,
    feature_weights: Array | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """Cosine of the angle between ``x1`` and ``x2`` along ``axis``.

    The equivalent of ``torch.nn.functional.cosine_similarity`` (with ``axis``
    for ``dim``) and ``optax.cosine_similarity``, exact at every magnitude and
    safe at zero vectors.

    Parameters
    ----------
    x1, x2 : array
        Arrays of one array-API library. They broadcast against each other
        before any norm is taken.
    axis : int, optional
        The feature axis. Default -1.
    eps : float, optional
        Clamp each norm separately, ``max(||x||, eps)``, as PyTorch does.
        The default ``None`` clamps only zero norms (the floor is the
        dtype's smallest subnormal number), so every nonzero vector gets its
        true cosine. An ``eps`` below the compute dtype's smallest normal
        number acts as ``None``; one above its largest finite value is a
        ``ValueError`` (float16 and bfloat16 are computed in float32).
    keepdims : bool, optional
        Keep ``axis`` with size 1 in the result.
    feature_weights : array, optional
        Non-negative weights of the features:
        ``sum(w x1 x2) / sqrt(sum(w x1^2) sum(w x2^2))``, as
        ``scipy.spatial.distance.cosine(u, v, w)``. A 1-D array lies along
        ``axis``; others broadcast against the inputs. A 0/1 array is a mask
        (optax's ``where``): features of weight 0 are ignored entirely, even
        where they hold NaN.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        The similarity in ``[-1, 1]``, shaped as the broadcast inputs without
        ``axis``, in the promoted floating dtype of the inputs. It is 0 where
        either vector is zero and NaN where either holds NaN or inf.

    Notes
    -----
    float16 and bfloat16 are computed in float32. Gradients pass straight
    through the final clip to ``[-1, 1]`` and are 0 at zero vectors.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    >>> b = np.array([[0.0, 2.0], [3.0, 3.0], [1.0, 2.0]])
    >>> ck.cosine_similarity(a, b)
    array([0., 1., 0.])
    >>> ck.cosine_similarity(np.array([1e300, 1e300]), np.array([1e-300, 0.0]))
    array(0.70710678)

    """
    pair = prepare_pair(x1, x2, axis=axis, eps=eps, feature_weights=feature_weights, xp=xp)
    similarity = similarity_rows(pair.xp, pair.mode, pair.x1, pair.x2, pair.axis, pair.eps)
    return pair.finish(similarity, keepdims=keepdims)


def cosine_distance(
    x1: Array,
    x2: Array,
    /,
    *,
    axis: int = -1,
    eps: float | None = None,
    keepdims: bool = False,
    feature_weights: Array | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """Cosine distance ``1 - cosine_similarity(x1, x2)``, in ``[0, 2]``.

    The row-wise equivalent of ``scipy.spatial.distance.cosine``. A zero
    vector is at distance 1 from everything (SciPy returns NaN and warns).

    Parameters
    ----------
    x1, x2 : array
        Arrays of one array-API library, broadcast against each other.
    axis : int, optional
        The feature axis. Default -1.
    eps : float, optional
        As in `cosine_similarity`.
    keepdims : bool, optional
        Keep ``axis`` with size 1 in the result.
    feature_weights : array, optional
        As in `cosine_similarity` (SciPy's ``w``).
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        The distance in ``[0, 2]``, shaped as the broadcast inputs without
        ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> x1 = np.array([[1.0, 0.0], [0.0, 0.0]])
    >>> ck.cosine_distance(x1, np.array([[-1.0, 0.0], [1.0, 1.0]]))
    array([2., 1.])

    """
    pair = prepare_pair(x1, x2, axis=axis, eps=eps, feature_weights=feature_weights, xp=xp)
    similarity = similarity_rows(pair.xp, pair.mode, pair.x1, pair.x2, pair.axis, pair.eps)
    return pair.finish(1 - similarity, keepdims=keepdims)


def angular_distance(
    x1: Array,
    x2: Array,
    /,
    *,
    axis: int = -1,
    eps: float | None = None,
    keepdims: bool = False,
    feature_weights: Array | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """The angle between ``x1`` and ``x2`` divided by pi, in ``[0, 1]``.

    A true metric on directions. It is computed with Kahan's formula
    ``2 * atan2(||u - v||, ||u + v||)`` on the unit vectors ``u`` and ``v``,
    accurate for nearly parallel and nearly opposite vectors where
    ``arccos`` of the cosine loses half its digits, and with finite
    gradients everywhere (0 at exactly parallel or opposite vectors).

    Parameters
    ----------
    x1, x2 : array
        Arrays of one array-API library, broadcast against each other.
    axis : int, optional
        The feature axis. Default -1.
    eps : float, optional
        As in `cosine_similarity`. Where it clamps a norm, the result is the
        angle whose cosine is the clamped similarity, so the two functions
        always agree.
    keepdims : bool, optional
        Keep ``axis`` with size 1 in the result.
    feature_weights : array, optional
        As in `cosine_similarity`.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        The angular distance in ``[0, 1]``. A zero vector is at distance 0.5
        from everything, consistent with its similarity 0; NaN where either
        vector holds NaN or inf (also when the other is a zero vector) or
        where ``feature_weights`` holds NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> x1 = np.array([[1.0, 0.0], [1.0, 0.0]])
    >>> ck.angular_distance(x1, np.array([[0.0, 3.0], [-1.0, 0.0]]))
    array([0.5, 1. ])

    """
    pair = prepare_pair(x1, x2, axis=axis, eps=eps, feature_weights=feature_weights, xp=xp)
    xp, mode, axis, eps = pair.xp, pair.mode, pair.axis, pair.eps
    unit1, factor1 = unit_rows(xp, mode, pair.x1, axis, eps)
    unit2, factor2 = unit_rows(xp, mode, pair.x2, axis, eps)
    half_angle = xp.atan2(
        row_norm(xp, mode, unit1 - unit2, axis), row_norm(xp, mode, unit1 + unit2, axis)
    )
    # Both vectors zero: atan2(0, 0) would say 0; the contract says 0.5. The
    # test is "both zero" by equality, which is False for a NaN unit vector
    # (NaN or inf in the input), so NaN stays NaN.
    both_zero = (row_dot(xp, mode, unit1, unit1, axis) == 0) & (
        row_dot(xp, mode, unit2, unit2, axis) == 0
    )
    angle = xp.where(both_zero, xp.full_like(half_angle, 0.5), half_angle * (2 / math.pi))
    if factor1 is not None and factor2 is not None:
        # Where eps clamps a norm, use the angle of the clamped cosine; it is
        # strictly inside (-1, 1) there, where arccos is accurate.
        shrink = factor1 * factor2
        clamped = shrink < 1
        cosine = xp.where(
            clamped, row_dot(xp, mode, unit1, unit2, axis) * shrink, xp.zeros_like(shrink)
        )
        angle = xp.where(clamped, xp.acos(xp.clip(cosine, -1.0, 1.0)) / math.pi, angle)
    return pair.finish(clip_straight_through(xp, mode, angle, 0.0, 1.0), keepdims=keepdims)
