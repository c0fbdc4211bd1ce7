"""The contrastive losses over a batch's logit matrix: InfoNCE and NT-Xent.

The public wrappers validate; the cores (``_lib/_contrastive_core.py``)
normalize the rows once and hand the logit matrix to the tiles
(``_lib/_tiles.py``), which never form it beyond one ``block_size x
block_size`` tile. CoSENT and the triplet loss, on row-wise cosines, live in
``_ranking``.

Numerics shared by both losses:

* every log-sum-exp is shifted by a running maximum, so no temperature
  overflows;
* masks select with ``where`` (and zero weights), never with ``inf`` or huge
  constants, which overflow half precision;
* float16 and bfloat16 are computed in float32 and the result is cast back.
"""

from __future__ import annotations

import numbers
from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._lib._contrastive_core import Positives, info_nce_rows, ntxent_sums, unit_matrix_rows
from ._lib._kernels import safe_divide
from ._lib._pairs import as_result
from ._lib._reduce import REDUCTIONS, reduce_loss
from ._lib._strategy.mode import Mode
from ._lib._validation import (
    choice,
    flag,
    floating_dtypes,
    namespace_of,
    positive_integer,
    positive_scalar,
    resolve,
    rows_of,
    vector_of,
)

Array = Any

__all__ = ["info_nce_loss", "ntxent_loss"]


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
    block_size: int | None = None,
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
    block_size : int, optional
        The side of the tiles of the logit matrix, which is never formed
        beyond one ``block_size x block_size`` tile: the loss and its
        gradient are computed tile by tile (a running log-sum-exp; the
        backward recomputes each tile), so forward plus backward allocate
        ``O((n + m) d + block_size**2)`` beyond the inputs and their
        gradients. ``None`` (the default) picks one per library and size:
        the dense form (one tile) for small matrices, tiles from 2048 x
        2048 entries where they are faster (on the CPU: NumPy, JAX up to
        128 features, eager PyTorch up to 256), and always beyond 16384 x 16384
        entries (the contrastive guide lists the rule). The result does
        not depend on it beyond rounding.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        A 0-d array, or shape ``(n,)`` for ``reduction="none"``, in the
        promoted floating dtype of ``queries`` and ``keys`` (float16 and
        bfloat16 are computed in float32). An array ``temperature`` is cast
        to the compute dtype and does not change the result dtype. A NaN or
        inf in a query makes that query's loss NaN; in a key, every query's
        (it is a negative of each); with ``symmetric``, every pair's. NaN
        stays in its rows for gradients: reducing only the finite per-query
        losses gives finite gradients to every finite row, keys included,
        while a reduction that includes a NaN loss gives NaN gradients. No
        queries: 0 (``"none"``: an empty array), connected to the inputs
        (their gradients are 0).

    Raises
    ------
    ValueError
        For shapes that do not fit, ``symmetric`` with labels or ``m != n``,
        a non-positive temperature, labels out of range or a non-positive
        ``block_size``.

    See Also
    --------
    ntxent_loss, pairwise_cosine_similarity

    Notes
    -----
    The log-sum-exp is shifted by a running maximum, so a temperature of
    0.01 (logits of 100) is exact in float16 too. The positive's logit is
    the clipped cosine of the query and its key, gathered by position,
    never selected with an infinite mask. Its derivative is written by hand
    (a ``jax.custom_vjp``, a ``torch.autograd.Function`` that also runs
    under ``torch.compile`` and ``torch.func``); differentiating it again
    is exact. Forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``) is
    not available under JAX for that reason.

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

    Tiles of 1 x 1 give the same losses:

    >>> ck.info_nce_loss(queries, keys, temperature=1.0, reduction="none", block_size=1).round(4)
    array([0.4346, 0.5755])

    """
    reduction = choice(reduction, REDUCTIONS, "reduction")
    symmetric = flag(symmetric, "symmetric")
    block = None if block_size is None else positive_integer(block_size, "block_size")
    arrays, names = _arrays(
        queries=queries,
        keys=keys,
        labels=labels,
        temperature=temperature,
        positive_offset=positive_offset,
    )
    xp, mode = resolve(*arrays, names=names, xp=xp)
    q, k, result_dtype = unit_matrix_rows(xp, mode, queries, keys, eps, ("queries", "keys"))
    n, m = q.shape[0], k.shape[0]
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
    positives = _positive_columns(xp, mode, q, m, labels, positive_offset)
    temperature = positive_scalar(xp, mode, temperature, "temperature", q, inverse=True)
    loss = info_nce_rows(
        xp, mode, q, k, 1 / temperature, positives, symmetric=symmetric, block_size=block
    )
    return as_result(xp, reduce_loss(xp, loss, None, reduction), result_dtype, like=q)


def _positive_columns(
    xp: ModuleType, mode: Mode, queries: Array, m: int, labels: Array | None, offset: object
) -> Positives:
    n = queries.shape[0]
    rows = xp.arange(n, device=array_device(queries))
    if labels is not None:
        vector_of(labels, n, "labels", queries, "queries")
        if not xp.isdtype(labels.dtype, "integral"):
            msg = f"labels must be an integer array, got dtype {labels.dtype}"
            raise TypeError(msg)
        columns = xp.astype(labels, rows.dtype)
        if mode.host_reads_free:
            if n and bool(xp.any((columns < 0) | (columns >= m))):
                msg = f"labels must lie in [0, {m}) (the key positions)"
                raise ValueError(msg)
            return Positives(columns, None)
        return Positives(columns, (columns >= 0) & (columns < m))
    if isinstance(offset, numbers.Integral) and not isinstance(offset, bool):
        if not 0 <= int(offset) <= m - n:
            msg = (
                f"labels=None needs at least as many keys as queries past positive_offset "
                f"(the positive of query i is key positive_offset + i), got "
                f"positive_offset={int(offset)}, n={n}, m={m}"
            )
            raise ValueError(msg)
        return Positives(None, None, int(offset))
    namespace_of(queries, offset, names=("queries", "positive_offset"), xp=None)
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
        return Positives(columns, None)
    return Positives(columns, (columns >= 0) & (columns < m))


def ntxent_loss(
    embeddings: Array,
    labels: Array,
    /,
    *,
    temperature: float | Array = 0.07,
    eps: float | None = None,
    block_size: int | None = None,
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
    block_size : int, optional
        The side of the tiles of the logit matrix, which is never formed
        beyond one ``block_size x block_size`` tile: the loss and its
        gradient are computed tile by tile (a running log-sum-exp; the
        backward recomputes each tile), so forward plus backward allocate
        ``O((n + m) d + block_size**2)`` beyond the inputs and their
        gradients. ``None`` (the default) picks one per library and size:
        the dense form (one tile) for small matrices, tiles from 2048 x
        2048 entries where they are faster (on the CPU: NumPy, JAX up to
        128 features, eager PyTorch up to 256), and always beyond 16384 x 16384
        entries (the contrastive guide lists the rule). The result does
        not depend on it beyond rounding.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    array
        A 0-d array in the floating dtype of ``embeddings`` (float16 and
        bfloat16 computed in float32). 0, not NaN, when there is no positive
        pair (``optax.ntxent`` gives NaN there; pytorch-metric-learning 0),
        and for no rows, still connected to the inputs (gradients 0). NaN
        when a row holding NaN or inf takes part in a pair, as one of its
        two rows or as a negative of its first: it never turns a loss into
        0; the gradients are NaN then too.

    Raises
    ------
    ValueError
        For shapes that do not fit, a non-positive temperature or a
        non-positive ``block_size``.

    See Also
    --------
    info_nce_loss

    Notes
    -----
    The loss of a pair is ``softplus(N_i - s_ij / t)`` with ``N_i`` the
    log-sum-exp of the row's negatives, shifted by a running maximum;
    ``softplus`` is ``logaddexp(0, .)``. So the result is exact at any
    temperature, where a single shift per row (as optax) underflows for a
    positive far below the row's best. Negatives are selected by ``where``,
    never by ``-inf`` (optax) or the dtype's lowest value
    (pytorch-metric-learning). Whether a row has negatives is read from the
    labels, never from the values. The cosines are matrix products of unit
    rows; optax sums a broadcast ``(n, n, d)`` product (written out unless
    XLA fuses it under ``jit``). The derivative is written by hand, as in
    `info_nce_loss`.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> z = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> print(f"{ck.ntxent_loss(z, np.array([0, 0, 1, 1]), temperature=0.5):.6f}")
    0.296460
    >>> print(f"{ck.ntxent_loss(z, np.array([0, 0, 1, 1]), temperature=0.5, block_size=3):.6f}")
    0.296460

    """
    block = None if block_size is None else positive_integer(block_size, "block_size")
    arrays, names = _arrays(embeddings=embeddings, labels=labels, temperature=temperature)
    xp, mode = resolve(*arrays, names=names, xp=xp)
    rows_of(embeddings, "embeddings")
    vector_of(labels, embeddings.shape[0], "labels", embeddings, "embeddings")
    result_dtype, compute_dtype = floating_dtypes(xp, embeddings)
    like = xp.zeros((), dtype=compute_dtype, device=array_device(embeddings))
    temperature = positive_scalar(xp, mode, temperature, "temperature", like, inverse=True)
    total, count = ntxent_sums(
        xp, mode, embeddings, labels, embeddings, labels, 0, temperature, block, eps
    )
    return as_result(xp, safe_divide(xp, total, count), result_dtype, like=total)
