"""The ranking losses on row-wise cosines: CoSENT and the cosine triplet loss.

Every similarity comes from the row-wise cosine core
(``_kernels.similarity_rows``); nothing here forms an ``(n, n)`` or
``(n, m, d)`` array. As in the other losses, every log-sum-exp is shifted
by a maximum and masks select with ``where``, never with ``inf``; float16
and bfloat16 are computed in float32 and cast back.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._lib._kernels import similarity_rows
from ._lib._pairs import as_result, prepare_pair
from ._lib._reduce import REDUCTIONS, reduce_loss
from ._lib._strategy.autodiff import stop_gradient
from ._lib._validation import choice, finite_real, flag, positive_scalar, resolve, vector_of

Array = Any

__all__ = ["cosent_loss", "cosine_triplet_loss"]


def cosent_loss(
    x1: Array,
    x2: Array,
    scores: Array,
    /,
    *,
    scale: float | Array = 20.0,
    axis: int = -1,
    eps: float | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """CoSENT: a ranking loss on the cosine of sentence pairs, in O(n log n).

    With ``c_i = cosine_similarity(x1_i, x2_i)`` and gold ``scores``, the loss
    is ``log(1 + sum over pairs with scores_i > scores_j of
    exp(scale * (c_j - c_i)))``: every pair ranked higher by the gold score
    should get the larger cosine. Pairs of equal scores contribute nothing.
    The equivalent of sentence-transformers' ``CoSENTLoss``, which builds an
    ``n x n`` matrix; here the pairs are sorted by score and summed with a
    running (cumulative) sum: ``O(n log n)`` time and ``O(n)`` memory.

    Parameters
    ----------
    x1, x2 : array
        The two embeddings of each pair, broadcast against each other; with
        ``axis`` removed they must be 1-D, shape ``(n,)``.
    scores : array
        Shape ``(n,)``, real or integer: the gold similarity of each pair.
        Only their order matters.
    scale : float or array, optional
        A positive Python number or 0-d real array; default 20, as
        sentence-transformers.
    axis : int, optional
        The feature axis. Default -1.
    eps : float, optional
        As in `cosine_similarity`.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        A 0-d array in the promoted floating dtype of ``x1`` and ``x2``
        (float16 and bfloat16 computed in float32). 0 when all scores are
        equal, and for no pairs (still connected to the inputs: its
        gradients are 0). NaN when a cosine is NaN or a score is NaN (then
        the gradients are NaN too).

    Raises
    ------
    ValueError
        For shapes that do not fit or a non-positive scale.

    See Also
    --------
    cosine_similarity

    Notes
    -----
    With ``u = scale * c``, the sum over the pairs ``j`` scored below ``i``
    is ``exp(L - u_i)``, where ``L`` is a running log-sum-exp of ``u`` in
    score order: a scan of ``logaddexp`` in ``log2(n)`` steps, exact at any
    ``scale`` in every dtype (a single shift of a cumulative sum would lose
    terms or overflow once ``2 * scale`` exceeds the exponent range, about
    87 in float32). Ties are found by ``searchsorted`` on the sorted scores.
    The outer sum is a log-sum-exp shifted by its maximum.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> x1 = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    >>> x2 = np.array([[1.0, 0.2], [1.0, 1.0], [0.0, 1.0]])
    >>> print(f"{ck.cosent_loss(x1, x2, np.array([1.0, 0.5, 0.0])):.6f}")
    0.004205
    >>> print(f"{ck.cosent_loss(x1, x2, np.array([0.0, 0.5, 1.0])):.6f}")
    19.615819

    """
    pair = prepare_pair(
        x1,
        x2,
        axis=axis,
        eps=eps,
        feature_weights=None,
        xp=xp,
        others=(("scores", scores), ("scale", scale)),
    )
    xp, mode = pair.xp, pair.mode
    cosine = similarity_rows(xp, mode, pair.x1, pair.x2, pair.axis, pair.eps)
    if cosine.ndim != 1:
        msg = (
            f"x1 and x2 must hold one vector per pair, shape (n, features); the "
            f"broadcast shape {tuple(pair.x1.shape)} without axis has {cosine.ndim} dimensions"
        )
        raise ValueError(msg)
    vector_of(scores, cosine.shape[0], "scores", cosine, "x1")
    if not xp.isdtype(scores.dtype, ("real floating", "integral")):
        msg = f"scores must be real, got dtype {scores.dtype}"
        raise TypeError(msg)
    u = cosine * positive_scalar(xp, mode, scale, "scale", cosine, inverse=False)
    if cosine.shape[0] == 0:
        return pair.finish(xp.sum(u), keepdims=False)
    scores = stop_gradient(xp, scores)
    order = xp.argsort(scores, stable=True)
    # How many pairs score strictly lower than each: ties are never counted.
    below = xp.searchsorted(xp.take(scores, order), scores, side="left")
    # log of sum_j exp(u_j) over the `below` lowest-scored pairs, for each i.
    # NaN cosines are set to 0 for the scan (NumPy would warn in logaddexp)
    # and put back into the result at the end.
    u_or_zero = xp.where(xp.isnan(u), xp.zeros_like(u), u)
    running = _cumulative_log_sum_exp(xp, xp.take(u_or_zero, order))
    has_lower = below > 0
    lower = xp.take(running, xp.where(has_lower, below - 1, xp.zeros_like(below)))
    terms = lower - u_or_zero  # log of sum_j exp(u_j - u_i)
    zeros = xp.zeros_like(terms)
    largest = stop_gradient(xp, xp.max(xp.where(has_lower, terms, zeros)))
    largest = xp.where(largest > 0, largest, xp.zeros_like(largest))
    total = xp.exp(-largest) + xp.sum(
        xp.where(has_lower, xp.exp(xp.where(has_lower, terms - largest, zeros)), zeros)
    )
    loss = xp.log(total) + largest + 0 * xp.sum(u)  # NaN where a cosine is NaN
    if xp.isdtype(scores.dtype, "real floating"):
        # A NaN score has no place in the order (each library sorts it
        # elsewhere): the loss is NaN, and so are its gradients.
        unknown = xp.any(xp.isnan(scores))
        loss = loss * xp.where(unknown, xp.full_like(loss, float("nan")), xp.ones_like(loss))
    return pair.finish(loss, keepdims=False)


def _cumulative_log_sum_exp(xp: ModuleType, x: Array) -> Array:
    """``log(cumsum(exp(x)))`` of a 1-D array, exact at any range of ``x``.

    A scan in ``ceil(log2(n))`` steps of ``logaddexp`` (Hillis and Steele):
    each step combines every entry with the one ``step`` places before it.
    No shift can be chosen once for a cumulative sum whose terms span more
    than the exponent range; ``logaddexp`` shifts every pair by its larger
    term. ``O(n log n)`` time, ``O(n)`` memory, static shapes (traceable).
    """
    n = x.shape[0]
    index = xp.arange(n, device=array_device(x))
    step = 1
    while step < n:
        before = xp.concat([x[:step], x[: n - step]])  # x[i - step], for i >= step
        x = xp.where(index >= step, xp.logaddexp(x, before), x)
        step *= 2
    return x


def cosine_triplet_loss(
    anchor: Array,
    positive: Array,
    negative: Array,
    /,
    *,
    margin: float = 1.0,
    swap: bool = False,
    axis: int = -1,
    reduction: str = "mean",
    eps: float | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """The triplet margin loss with the cosine distance.

    Per triplet ``max(0, d(a, p) - d(a, n) + margin)`` with
    ``d = 1 - cosine_similarity``. The equivalent of torch's
    ``TripletMarginWithDistanceLoss(distance_function=lambda a, b: 1 -
    F.cosine_similarity(a, b))``, safe at zero vectors (distance 1).

    Parameters
    ----------
    anchor, positive, negative : array
        Arrays of one library that broadcast against each other.
    margin : float, optional
        Default 1.0 (as torch). Cosine distances lie in ``[0, 2]``, so useful
        margins lie in ``(0, 2]``.
    swap : bool, optional
        Use ``min(d(a, n), d(p, n))`` as the negative distance (the distance
        swap of Balntas et al., torch's ``swap``).
    axis : int, optional
        The feature axis. Default -1.
    reduction : str, optional
        ``"none"`` (per-triplet losses), ``"sum"`` or ``"mean"`` (default;
        the mean of no triplets is 0).
    eps : float, optional
        As in `cosine_similarity`.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        A 0-d array, or the per-triplet losses for ``reduction="none"``, in
        the promoted floating dtype of the inputs.

    See Also
    --------
    cosine_distance, cosine_embedding_loss

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> anchor = np.array([[1.0, 0.0], [1.0, 0.0]])
    >>> positive = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> negative = np.array([[0.0, 1.0], [1.0, 0.1]])
    >>> ck.cosine_triplet_loss(anchor, positive, negative, margin=0.5, reduction="none").round(4)
    array([0.   , 1.495])

    """
    reduction = choice(reduction, REDUCTIONS, "reduction")
    margin_value = finite_real(margin, "margin")
    swap = flag(swap, "swap")
    xp, mode = resolve(anchor, positive, negative, names=("anchor", "positive", "negative"), xp=xp)

    def distance(x1: Array, x2: Array, names: tuple[str, str]) -> tuple[Array, Any]:
        pair = prepare_pair(
            x1,
            x2,
            axis=axis,
            eps=eps,
            feature_weights=None,
            xp=xp,
            names=names,
            resolved=(xp, mode),
        )
        cosine = similarity_rows(xp, mode, pair.x1, pair.x2, pair.axis, pair.eps)
        return 1 - cosine, pair.result_dtype

    to_positive, positive_dtype = distance(anchor, positive, ("anchor", "positive"))
    to_negative, negative_dtype = distance(anchor, negative, ("anchor", "negative"))
    if swap:
        to_negative = xp.minimum(
            to_negative, distance(positive, negative, ("positive", "negative"))[0]
        )
    hinge = to_positive - to_negative + margin_value
    loss = xp.maximum(hinge, xp.zeros_like(hinge))
    result_dtype = xp.result_type(positive_dtype, negative_dtype)
    return as_result(xp, reduce_loss(xp, loss, None, reduction), result_dtype, like=loss)
