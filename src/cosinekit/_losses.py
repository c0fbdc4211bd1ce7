"""Cosine losses: TensorFlow's cosine-distance loss and PyTorch's embedding loss."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._lib._kernels import similarity_rows
from ._lib._pairs import Pair, prepare_pair
from ._lib._reduce import REDUCTIONS, WEIGHTED_REDUCTIONS, reduce_loss
from ._lib._strategy.rows import row_dot
from ._lib._validation import (
    broadcast_shape,
    choice,
    finite_real,
    flag,
    floating_dtypes,
    namespace_of,
    real_number,
)

Array = Any

__all__ = ["cosine_distance_loss", "cosine_embedding_loss"]


def _loss_shape(pair: Pair) -> tuple[int | None, ...]:
    shape = tuple(pair.x1.shape)
    return shape[: pair.axis + len(shape)] + shape[pair.axis + len(shape) + 1 :]


def _per_example_weights(pair: Pair, weights: Any, input_ndim: int, name: str) -> Array | None:
    """``weights`` as an array broadcast to the per-example loss shape."""
    if weights is None:
        return None
    xp = pair.xp
    dtype = pair.x1.dtype
    loss_shape = _loss_shape(pair)
    scalar = real_number(weights)
    if scalar is not None:
        return xp.full(loss_shape, scalar, dtype=dtype, device=array_device(pair.x1))
    namespace_of(pair.x1, weights, names=("inputs", name), xp=None)
    floating_dtypes(xp, weights)  # rejects complex and other dtypes
    weights = xp.astype(weights, dtype, copy=False)
    if weights.ndim == input_ndim and weights.ndim > 0 and weights.shape[pair.axis] == 1:
        # TensorFlow's style: the feature axis kept with size 1.
        weights = xp.squeeze(weights, axis=pair.axis)
    if broadcast_shape(tuple(weights.shape), loss_shape, names=(name, "loss")) != loss_shape:
        msg = (
            f"{name} of shape {tuple(weights.shape)} do not broadcast to the per-example "
            f"loss shape {loss_shape}"
        )
        raise ValueError(msg)
    return xp.broadcast_to(weights, loss_shape)


def cosine_distance_loss(
    labels: Array,
    predictions: Array,
    /,
    *,
    axis: int = -1,
    weights: Array | float | None = None,
    reduction: str = "sum_by_nonzero_weights",
    assume_normalized: bool = False,
    eps: float | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """TensorFlow's ``tf.compat.v1.losses.cosine_distance``, made safe.

    TensorFlow computes ``1 - sum(labels * predictions, axis)`` and silently
    assumes both are unit vectors; fed raw vectors it returns nonsense (-54.0
    for its tutorial's example, whose true loss is 0.077168673). Here the
    per-example loss is ``1 - cosine_similarity(labels, predictions)``.

    Parameters
    ----------
    labels, predictions : array
        Arrays of one array-API library, broadcast against each other.
    axis : int, optional
        The feature axis. Default -1 (TensorFlow requires it explicitly).
    weights : array or float, optional
        ``None`` (all ones), a Python number, or an array that broadcasts to
        the per-example loss shape (the input shape without ``axis``). An
        array of the inputs' rank with size 1 at ``axis``, TensorFlow's
        ``[batch, 1]`` style, is accepted too.
    reduction : str, optional
        ``"none"`` (weighted per-example losses), ``"sum"``, ``"mean"``
        (``sum(w * loss) / sum(w)``), ``"sum_over_batch_size"`` (divided by the
        number of per-example losses) or ``"sum_by_nonzero_weights"`` (divided
        by the number of nonzero weights; the default, as in TensorFlow). A
        zero denominator gives 0, never NaN.
    assume_normalized : bool, optional
        Compute exactly TensorFlow's ``1 - sum(labels * predictions, axis)``,
        for inputs that are already unit vectors. No normalization, no clip.
    eps : float, optional
        As in `cosine_similarity`.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        A 0-d array, or the per-example losses for ``reduction="none"``.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> labels = np.array([[1, 4, 5], [5, 5, 7]], dtype=np.float32)
    >>> predictions = np.array([[3, 2, 5], [3, 2, 7]], dtype=np.float32)
    >>> print(f"{ck.cosine_distance_loss(labels, predictions, axis=1):.6f}")
    0.077169
    >>> print(ck.cosine_distance_loss(labels, predictions, axis=1, assume_normalized=True))
    -54.0

    """
    reduction = choice(reduction, WEIGHTED_REDUCTIONS, "reduction")
    pair = prepare_pair(
        labels,
        predictions,
        axis=axis,
        eps=eps,
        feature_weights=None,
        xp=xp,
        names=("labels", "predictions"),
        others=(("weights", weights),),
    )
    weights = _per_example_weights(pair, weights, pair.x1.ndim, "weights")
    if flag(assume_normalized, "assume_normalized"):
        loss = 1 - row_dot(pair.xp, pair.mode, pair.x1, pair.x2, pair.axis)
    else:
        loss = 1 - similarity_rows(pair.xp, pair.mode, pair.x1, pair.x2, pair.axis, pair.eps)
    return pair.finish(reduce_loss(pair.xp, loss, weights, reduction), keepdims=False)


def cosine_embedding_loss(
    x1: Array,
    x2: Array,
    target: Array,
    /,
    *,
    margin: float = 0.0,
    axis: int = -1,
    reduction: str = "mean",
    eps: float | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """PyTorch's ``torch.nn.functional.cosine_embedding_loss``, made safe.

    Per example: ``1 - cos`` where ``target == 1``, ``max(0, cos - margin)``
    where ``target == -1``, and 0 for any other target value (as PyTorch).

    Parameters
    ----------
    x1, x2 : array
        Arrays of one array-API library, broadcast against each other.
    target : array
        1 for pairs that should align, -1 for pairs that should not. It
        broadcasts to the per-example shape (the inputs without ``axis``).
        A real, integer or boolean dtype; strings, objects and complex
        numbers are a ``TypeError``.
    margin : float, optional
        The margin for ``target == -1``, usually in ``[-1, 1]``. Default 0.
        NaN and infinite margins are a ``ValueError``.
    axis : int, optional
        The feature axis. Default -1.
    reduction : str, optional
        ``"none"``, ``"sum"`` or ``"mean"`` (default). The mean of no
        examples is 0 (PyTorch gives NaN).
    eps : float, optional
        As in `cosine_similarity`. PyTorch adds ``1e-12`` to each squared
        norm instead; the two agree except for norms below about ``1e-6``.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        A 0-d array, or the per-example losses for ``reduction="none"``.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> x1 = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    >>> x2 = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    >>> ck.cosine_embedding_loss(x1, x2, np.array([1, -1, -1]), margin=0.5, reduction="none")
    array([0.29289322, 0.20710678, 0.        ])

    """
    reduction = choice(reduction, REDUCTIONS, "reduction")
    # NaN would make every negative pair's loss NaN, +inf zero and -inf
    # infinite: none of them is a margin.
    margin_value = finite_real(margin, "margin")
    pair = prepare_pair(
        x1, x2, axis=axis, eps=eps, feature_weights=None, xp=xp, others=(("target", target),)
    )
    namespace_of(pair.x1, target, names=("inputs", "target"), xp=None)
    if not pair.xp.isdtype(target.dtype, ("real floating", "integral", "bool")):
        # Strings and objects compare unequal to 1 and -1: every loss would be 0.
        msg = f"target must have a real or integer dtype, got dtype {target.dtype}"
        raise TypeError(msg)
    loss_shape = _loss_shape(pair)
    if broadcast_shape(tuple(target.shape), loss_shape, names=("target", "loss")) != loss_shape:
        msg = (
            f"target of shape {tuple(target.shape)} does not broadcast to the per-example "
            f"loss shape {loss_shape}"
        )
        raise ValueError(msg)
    xp = pair.xp
    cosine = similarity_rows(pair.xp, pair.mode, pair.x1, pair.x2, pair.axis, pair.eps)
    # As numbers: a boolean True is 1, and array-api-strict compares bool with bool only.
    target = xp.astype(target, cosine.dtype, copy=False)
    zero = xp.zeros_like(cosine)
    loss = xp.where(
        target == 1,
        1 - cosine,
        xp.where(target == -1, xp.maximum(cosine - margin_value, zero), zero),
    )
    return pair.finish(reduce_loss(xp, loss, None, reduction), keepdims=False)
