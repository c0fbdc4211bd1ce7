"""The contrastive losses: InfoNCE, NT-Xent, CoSENT and the cosine triplet loss.

Every similarity comes from the cosine core: the pairwise matrix from
``_pairwise.similarity_matrix`` (normalize, then one matrix product, clipped to
``[-1, 1]``) and the row-wise cosine from ``_kernels.similarity_rows``.
Nothing here forms an ``(n, m, d)`` array.

Numerics shared by the four losses:

* every log-sum-exp is shifted by a maximum, so no temperature overflows;
* masks select with ``where`` (and zero weights), never with ``inf`` or
  huge constants, which overflow half precision; every ``exp`` sees an
  argument that is already masked, so no ``inf * 0`` reaches a gradient;
* float16 and bfloat16 are computed in float32 (as the core does) and the
  result is cast back.
"""

from __future__ import annotations

import numbers
from types import ModuleType
from typing import Any, NamedTuple

from array_api_compat import device as array_device

from ._lib._kernels import safe_divide, similarity_rows
from ._lib._pairs import as_result, prepare_pair
from ._lib._reduce import REDUCTIONS, reduce_loss
from ._lib._strategy.autodiff import stop_gradient
from ._lib._strategy.mode import Mode
from ._lib._strategy.rows import log_softmax_parts
from ._lib._validation import (
    choice,
    finite_real,
    flag,
    namespace_of,
    positive_scalar,
    resolve,
    rows_of,
)
from ._pairwise import similarity_matrix

Array = Any

__all__ = ["cosent_loss", "cosine_triplet_loss", "info_nce_loss", "ntxent_loss"]


def _arrays(**arguments: object) -> tuple[tuple[Array, ...], tuple[str, ...]]:
    """The array arguments and their names: all of them decide the `Mode`.

    Everything but ``None`` and plain numbers counts, so that a list or a
    masked array is refused by name (``namespace_of``).
    """
    found = {
        name: value
        for name, value in arguments.items()
        if value is not None and not isinstance(value, numbers.Number)
    }
    return tuple(found.values()), tuple(found)


def _check_vector(xp: ModuleType, labels: Array, n: int | None, name: str, like: Array) -> None:
    """Check that ``labels`` is a 1-D array of ``n`` entries of ``like``'s library."""
    namespace_of(like, labels, names=("embeddings", name), xp=None)
    size = labels.shape[0] if labels.ndim == 1 else None
    # Lazy (Dask) sizes are None or NaN: the library checks those when it runs.
    if labels.ndim != 1 or (isinstance(n, int) and isinstance(size, int) and size != n):
        msg = f"{name} must have shape ({n},), got shape {tuple(labels.shape)}"
        raise ValueError(msg)


def info_nce_loss(
    queries: Array,
    keys: Array,
    /,
    *,
    temperature: float | Array = 0.05,
    labels: Array | None = None,
    symmetric: bool = False,
    reduction: str = "mean",
    eps: float | None = None,
    positive_offset: int | Array = 0,
    xp: ModuleType | None = None,
) -> Array:
    """InfoNCE: cross-entropy over cosine logits, with in-batch and hard negatives.

    The logits are ``pairwise_cosine_similarity(queries, keys) / temperature``
    and the loss of query ``i`` is the cross-entropy
    ``logsumexp_j(logits[i, j]) - logits[i, label_i]``. The equivalent of
    sentence-transformers' ``MultipleNegativesRankingLoss`` (whose ``scale``
    is ``1 / temperature``), of its symmetric variant and of CLIP's loss
    (``logit_scale = 1 / temperature``).

    Parameters
    ----------
    queries : array
        Shape ``(n, d)``.
    keys : array
        Shape ``(m, d)``, of the same library as ``queries``.
    temperature : float or array, optional
        A positive Python number or a 0-d real array, for example a learnable
        parameter: the gradient flows to it. Default 0.05 (a scale of 20, as
        sentence-transformers). A non-positive value is a ``ValueError``
        where values are readable.
    labels : array, optional
        ``None`` (the default): the positive of query ``i`` is key
        ``positive_offset + i``; needs ``positive_offset + n <= m``, and the
        other keys are extra negatives for every query (mined hard
        negatives, say). Otherwise an integer array of shape ``(n,)`` of key
        positions in ``[0, m)``. A position outside is a ``ValueError`` where
        values are free to read (eager, on the host); elsewhere (under a
        trace, on an accelerator) that query's loss is NaN, never another
        key's value.
    symmetric : bool, optional
        Average with the same loss from keys to queries (each key's positive
        is query ``i``), as CLIP. Needs ``labels=None`` and ``m == n``.
    reduction : str, optional
        ``"none"`` (the ``(n,)`` per-query losses; with ``symmetric`` the
        mean of the two directions per pair), ``"sum"`` or ``"mean"``
        (default). The mean of no queries is 0.
    eps : float, optional
        As in `pairwise_cosine_similarity`.
    positive_offset : int or array, optional
        With ``labels=None``, the positive of query ``i`` is key
        ``positive_offset + i``: local queries scored against keys gathered
        from every device, whose own keys start at ``positive_offset``. A
        Python int or a 0-d integer array (such as
        ``jax.lax.axis_index("batch") * n`` inside ``shard_map``), checked
        as ``labels`` are. Default 0.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        A 0-d array, or shape ``(n,)`` for ``reduction="none"``, in the
        promoted floating dtype of ``queries`` and ``keys`` (float16 and
        bfloat16 are computed in float32). An array ``temperature`` is cast
        to the compute dtype and does not change the result dtype. A NaN in
        a query gives NaN for that query; a NaN in a key gives NaN for every
        query (it enters every denominator).

    Raises
    ------
    ValueError
        For shapes that do not fit, ``symmetric`` with labels or ``m != n``,
        a non-positive temperature or labels out of range.

    See Also
    --------
    ntxent_loss, pairwise_cosine_similarity

    Notes
    -----
    The log-softmax is shifted by the row's maximum, so a temperature of
    0.01 (logits of 100) is exact in float16 too. The positive is gathered
    by its position, never selected with an infinite mask.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> keys = np.array([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.0]])
    >>> print(f"{ck.info_nce_loss(queries, keys, temperature=0.1):.6f}")
    0.000153
    >>> ck.info_nce_loss(queries, keys, temperature=1.0, reduction="none").round(4)
    array([0.4346, 0.5755])

    """
    reduction = choice(reduction, REDUCTIONS, "reduction")
    symmetric = flag(symmetric, "symmetric")
    arrays, names = _arrays(
        queries=queries,
        keys=keys,
        labels=labels,
        temperature=temperature,
        positive_offset=positive_offset,
    )
    xp, mode = resolve(*arrays, names=names, xp=xp)
    rows_of(queries, "queries")
    rows_of(keys, "keys")
    similarity, result_dtype = similarity_matrix(
        xp, mode, queries, keys, eps, names=("queries", "keys")
    )
    n, m = similarity.shape
    if symmetric:
        if labels is not None:
            msg = "symmetric=True needs labels=None (the positive of query i is key i)"
            raise ValueError(msg)
        if not (isinstance(positive_offset, numbers.Integral) and positive_offset == 0):
            msg = "symmetric=True needs positive_offset=0 (the positive of query i is key i)"
            raise ValueError(msg)
        if n != m:
            msg = f"symmetric=True needs as many keys as queries, got n={n}, m={m}"
            raise ValueError(msg)
    positives = _positive_columns(xp, mode, similarity, labels, positive_offset)
    # One multiply of the (n, m) matrix by 1 / t (a scalar), not a division.
    scalar = positive_scalar(xp, mode, temperature, "temperature", similarity, inverse=True)
    logits = similarity * (1 / scalar)
    if n == 0:
        loss = xp.sum(logits, axis=1)
    else:
        # The cross-entropy, as torch's: the log-softmax at the positive.
        loss = -_log_softmax_at(xp, logits, 1, positives)
        if symmetric:
            # The positive of key i is query i: the diagonal, per column.
            loss = (loss - _log_softmax_at(xp, logits, 0, _DIAGONAL)) / 2
    return as_result(xp, reduce_loss(xp, loss, None, reduction), result_dtype, like=similarity)


class _Positives(NamedTuple):
    """The key position of each query's positive, and which rows have a valid one.

    ``columns`` is None for the diagonal (query ``i`` with key ``i``);
    ``valid`` is None where every position was checked (values readable, or
    fixed by shapes); otherwise rows whose position lies outside ``[0, m)``
    get NaN, never another column's value.
    """

    columns: Array | None
    valid: Array | None


_DIAGONAL = _Positives(None, None)


def _positive_columns(
    xp: ModuleType, mode: Mode, similarity: Array, labels: Array | None, offset: object
) -> _Positives:
    n, m = similarity.shape
    rows = xp.arange(n, device=array_device(similarity))
    if labels is not None:
        _check_vector(xp, labels, n, "labels", similarity)
        if not xp.isdtype(labels.dtype, "integral"):
            msg = f"labels must be an integer array, got dtype {labels.dtype}"
            raise TypeError(msg)
        columns = xp.astype(labels, rows.dtype)
        if mode.host_reads_free:
            if n and bool(xp.any((columns < 0) | (columns >= m))):
                msg = f"labels must lie in [0, {m}) (the key positions)"
                raise ValueError(msg)
            return _Positives(columns, None)
        return _Positives(columns, (columns >= 0) & (columns < m))
    if isinstance(offset, numbers.Integral) and not isinstance(offset, bool):
        if not 0 <= int(offset) <= m - n:
            msg = (
                f"labels=None needs at least as many keys as queries past positive_offset "
                f"(the positive of query i is key positive_offset + i), got "
                f"positive_offset={int(offset)}, n={n}, m={m}"
            )
            raise ValueError(msg)
        return _DIAGONAL if int(offset) == 0 else _Positives(rows + int(offset), None)
    namespace_of(similarity, offset, names=("queries", "positive_offset"), xp=None)
    array: Array = offset
    if array.ndim != 0 or not xp.isdtype(array.dtype, "integral"):
        msg = (
            "positive_offset must be a Python int or a 0-d integer array, got "
            f"dtype {array.dtype} and shape {tuple(array.shape)}"
        )
        raise TypeError(msg)
    columns = rows + xp.astype(array, rows.dtype)
    if mode.host_reads_free:
        if not 0 <= int(array) <= m - n:
            msg = f"positive_offset={int(array)} must lie in [0, m - n] = [0, {m - n}]"
            raise ValueError(msg)
        return _Positives(columns, None)
    return _Positives(columns, (columns >= 0) & (columns < m))


def _log_softmax_at(xp: ModuleType, logits: Array, axis: int, positives: _Positives) -> Array:
    """The log-softmax along ``axis`` at each row's positive (see `_Positives`)."""
    matrix, normalizer = log_softmax_parts(xp, logits, axis)
    picked = _picked(xp, matrix, positives)
    return picked if normalizer is None else picked - normalizer


def _picked(xp: ModuleType, logits: Array, positives: _Positives) -> Array:
    """``logits[i, column_i]`` for each row ``i``; NaN where the column is not valid.

    One gather from the flattened matrix: its backward writes ``n`` values
    into zeros, where a one-hot ``where`` would cost passes over ``(n, m)``.
    """
    n, m = logits.shape
    rows = xp.arange(n, device=array_device(logits))
    columns, valid = positives
    if columns is None:
        columns = rows
    elif valid is not None:
        columns = xp.where(valid, columns, xp.zeros_like(columns))
    picked = xp.take(xp.reshape(logits, (-1,)), rows * m + columns)
    if valid is None:
        return picked
    return xp.where(valid, picked, xp.full_like(picked, float("nan")))


def ntxent_loss(
    embeddings: Array,
    labels: Array,
    /,
    *,
    temperature: float | Array = 0.07,
    eps: float | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR.

    Every ordered pair ``(i, j)``, ``i != j``, of equal labels is a positive
    pair, with loss
    ``-log(exp(s_ij / t) / (exp(s_ij / t) + sum_{k: label_k != label_i} exp(s_ik / t)))``
    where ``s`` is the cosine similarity and ``t`` the temperature. The
    result is the mean over positive pairs. The equivalent of
    ``optax.ntxent`` and of pytorch-metric-learning's ``NTXentLoss``.

    Parameters
    ----------
    embeddings : array
        Shape ``(n, d)``. Two augmented views ``z1``, ``z2`` of ``N`` items
        are ``concat(z1, z2)``, with labels ``concat(arange(N), arange(N))``.
    labels : array
        Shape ``(n,)``: equal labels mark positives, different labels
        negatives. Any dtype that compares with ``==``.
    temperature : float or array, optional
        A positive Python number or a 0-d real array (the gradient flows to
        it). Default 0.07.
    eps : float, optional
        As in `pairwise_cosine_similarity`.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        A 0-d array in the floating dtype of ``embeddings`` (float16 and
        bfloat16 computed in float32). 0, not NaN, when there is no positive
        pair (``optax.ntxent`` gives NaN there; pytorch-metric-learning 0).

    Raises
    ------
    ValueError
        For shapes that do not fit or a non-positive temperature.

    See Also
    --------
    info_nce_loss

    Notes
    -----
    The loss of a pair is ``softplus(log S_i - s_ij / t)`` with ``S_i`` the
    row's sum over negatives, taken as a log-sum-exp shifted by the row's
    largest negative logit; ``softplus`` is ``logaddexp(0, .)``. So the
    result is exact at any temperature, where a single shift per row (as
    optax) underflows for a positive far below the row's best. Negatives
    are selected by ``where``, never by ``-inf`` (optax) or the dtype's
    lowest value (pytorch-metric-learning). The matrix is the ``(n, n)``
    cosine matrix of the pairwise core, one matrix product; optax sums a
    broadcast ``(n, n, d)`` product (written out unless XLA fuses it under
    ``jit``).

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> z = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> print(f"{ck.ntxent_loss(z, np.array([0, 0, 1, 1]), temperature=0.5):.6f}")
    0.296460

    """
    arrays, names = _arrays(embeddings=embeddings, labels=labels, temperature=temperature)
    xp, mode = resolve(*arrays, names=names, xp=xp)
    rows_of(embeddings, "embeddings")
    similarity, result_dtype = similarity_matrix(
        xp, mode, embeddings, None, eps, names=("embeddings", "embeddings")
    )
    _check_vector(xp, labels, similarity.shape[0], "labels", similarity)
    temperature = positive_scalar(xp, mode, temperature, "temperature", similarity, inverse=True)
    logits = similarity / temperature
    same = xp.reshape(labels, (-1, 1)) == xp.reshape(labels, (1, -1))
    index = xp.arange(similarity.shape[0], device=array_device(similarity))
    positive = same & (xp.reshape(index, (-1, 1)) != xp.reshape(index, (1, -1)))
    negative = xp.logical_not(same)
    zeros = xp.zeros_like(logits)
    # The largest negative logit of each row; -1 / t (below every logit)
    # where a row has no negatives.
    floor = xp.full_like(similarity, -1.0) / temperature
    largest = stop_gradient(xp, xp.max(xp.where(negative, logits, floor), axis=1, keepdims=True))
    # The negatives' sum, shifted: exp(largest) * scaled is sum_k exp(s_ik / t).
    # The inner where keeps exp from overflowing on entries it then drops.
    scaled = xp.sum(
        xp.where(negative, xp.exp(xp.where(negative, logits - largest, zeros)), zeros),
        axis=1,
        keepdims=True,
    )
    has_negative = scaled > 0
    log_negatives = largest + xp.log(xp.where(has_negative, scaled, xp.ones_like(scaled)))
    # -log(e^a / (e^a + S)) = log(1 + S e^-a) = softplus(log S - a), one
    # logaddexp per pair: stable at any temperature, and 0 without negatives.
    argument = log_negatives - logits
    nan = xp.isnan(argument)  # kept as NaN, but out of logaddexp (NumPy warns)
    softplus = xp.logaddexp(zeros, xp.where(nan, zeros, argument))
    pair_loss = xp.where(has_negative, xp.where(nan, argument, softplus), zeros)
    total = xp.sum(xp.where(positive, pair_loss, zeros))
    count = xp.sum(xp.astype(positive, logits.dtype))
    return as_result(xp, safe_divide(xp, total, count), result_dtype, like=similarity)


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
        equal; NaN when a cosine is NaN.

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
    _check_vector(xp, scores, cosine.shape[0], "scores", cosine)
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
