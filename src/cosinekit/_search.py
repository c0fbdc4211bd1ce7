"""Top-k cosine search: the most similar keys for each query, in bounded memory."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._lib._kernels import unit_rows
from ._lib._strategy import clip_straight_through, top_k_positions
from ._lib._validation import floating_dtypes, integer, known_size, namespace_of

Array = Any

__all__ = ["cosine_topk"]

# Similarities per block when chunk_size is not given: 2**22 values are 16 MiB
# in float32; with the int64 ranking key and the masks built from it a block
# needs well under 128 MiB of working memory.
BLOCK_VALUES = 2**22


def default_chunk_size(n: int, m: int) -> int:
    """Rows per block so that one ``(query block, key block)`` holds ``<= 2**22`` values.

    Square blocks of ``2**11`` rows, unless one side is short: then the other
    side's blocks grow so that a block still holds about ``2**22`` values
    (1,000 queries are searched in key blocks of 4,194 rows).
    """
    short = max(1, min(n, m))
    return max(math.isqrt(BLOCK_VALUES), BLOCK_VALUES // short)


def _gather(xp: ModuleType, x: Array, positions: Array) -> Array:
    """``x[i, positions[i, j]]`` for 2-D arrays, with the standard's 1-D ``take`` only."""
    rows, width = positions.shape[0], x.shape[1]
    offsets = xp.arange(rows, dtype=positions.dtype, device=array_device(positions)) * width
    flat = xp.reshape(positions + xp.reshape(offsets, (rows, 1)), (-1,))
    return xp.reshape(xp.take(xp.reshape(x, (-1,)), flat), tuple(positions.shape))


def _select(xp: ModuleType, values: Array, indices: Array, k: int) -> tuple[Array, Array]:
    """The ``k`` largest ``values`` of each row, descending, ties to the smaller index.

    ``values`` is 2-D and holds no NaN; ``indices`` gives each column's key
    index, either one row shared by all rows or the same shape as
    ``values``, distinct within a row. A native top-k (``top_k_positions``)
    finds the k-th largest value ``t`` of each row; it may choose any of the
    values equal to ``t``. A second native top-k on an integer rank picks the
    exact set: every value above ``t`` ranks highest, values equal to ``t``
    rank by smaller index, the rest lowest. Only the ``k`` winners are then
    sorted, so every backend gives the same answer.
    """
    width = values.shape[1]
    k = min(k, width)
    candidates = top_k_positions(xp, values, k)
    threshold = xp.min(_gather(xp, values, candidates), axis=1, keepdims=True)
    info = xp.iinfo(indices.dtype)
    highest = xp.full_like(indices, info.max)
    lowest = xp.full_like(indices, info.min)
    rank = xp.where(values > threshold, highest, xp.where(values == threshold, -indices, lowest))
    chosen = top_k_positions(xp, rank, k)
    if indices.ndim == 1:
        index = xp.reshape(xp.take(indices, xp.reshape(chosen, (-1,))), tuple(chosen.shape))
    else:
        index = _gather(xp, indices, chosen)
    value = _gather(xp, values, chosen)
    # Indices are distinct in a row: sort by index, then stably by value.
    by_index = xp.argsort(index, axis=1)
    value, index = _gather(xp, value, by_index), _gather(xp, index, by_index)
    by_value = xp.argsort(-value, axis=1, stable=True)
    return _gather(xp, value, by_value), _gather(xp, index, by_value)


def _unit(xp: ModuleType, x: Array) -> Array:
    return unit_rows(xp, x, -1, None).unit


def _search_block(
    xp: ModuleType, queries: Array, keys: Array, k: int, chunk: int, index_dtype: Any
) -> tuple[Array, Array]:
    """The top ``k`` of one block of queries against all keys, key block by key block."""
    unit_queries = _unit(xp, queries)
    device = array_device(queries)
    best: tuple[Array, Array] | None = None
    size = keys.shape[0]
    for start in range(0, size, chunk):
        # Stops past the end are not portable (array-api-strict rejects them).
        block = keys[start : min(start + chunk, size), :]
        similarity = xp.matmul(unit_queries, xp.matrix_transpose(_unit(xp, block)))
        similarity = clip_straight_through(xp, similarity, -1.0, 1.0)
        # NaN (a query or key holding NaN or inf) ranks below every number,
        # the same on every backend; -inf never occurs otherwise, as
        # similarities lie in [-1, 1], so it is turned back into NaN at the end.
        similarity = xp.where(
            xp.isnan(similarity), xp.full_like(similarity, -math.inf), similarity
        )
        columns = xp.arange(start, start + block.shape[0], dtype=index_dtype, device=device)
        found = _select(xp, similarity, columns, k)
        if best is not None:
            # Both candidate lists are short (at most k each); merge and re-select.
            found = _select(
                xp,
                xp.concat((best[0], found[0]), axis=1),
                xp.concat((best[1], found[1]), axis=1),
                k,
            )
        best = found
    assert best is not None  # keys has at least k >= 1 rows
    return best


def cosine_topk(
    queries: Array,
    keys: Array,
    k: int,
    /,
    *,
    chunk_size: int | None = None,
    xp: ModuleType | None = None,
) -> tuple[Array, Array]:
    """The ``k`` keys most similar to each query, by cosine similarity.

    Exact (brute-force) search that works through queries and keys in blocks
    of at most ``chunk_size`` rows each, keeping a running top-k per query.
    Peak memory is one block of similarities plus the ``n * k`` result,
    never ``n * m``. The same code runs eagerly (NumPy, PyTorch, CuPy), under
    ``jax.jit`` (the blocks are static slices) and lazily on Dask, where
    each block becomes tasks of the graph and nothing is computed until the
    result is.

    Parameters
    ----------
    queries : array
        Shape ``(n, d)``.
    keys : array
        Shape ``(m, d)``, same library and feature size as ``queries``.
    k : int
        How many keys to return per query, ``1 <= k <= m``.
    chunk_size : int, optional
        The most rows of queries and of keys in one block. The default
        keeps a block at about ``2**22`` similarities (16 MiB in float32):
        blocks of 2048 rows, or longer key blocks when there are fewer
        queries (1,000 queries: 4,194 keys per block). Larger blocks are
        faster and use more memory; under ``jax.jit`` and on Dask they also
        mean fewer operations in the traced program or the task graph.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    similarities : array
        Shape ``(n, k)``, each row in descending order, in the promoted
        floating dtype of the inputs (float16 and bfloat16 computed in
        float32).
    indices : array
        Shape ``(n, k)``, the rows of ``keys``, in the namespace's default
        index dtype. Among equal similarities the smaller index comes
        first, and is the one kept at the k-th place, on every backend.

    Raises
    ------
    ValueError
        If an input is not 2-D, the feature sizes differ, ``k`` is outside
        ``1..m`` or ``chunk_size`` is not positive.
    TypeError
        If ``k`` or ``chunk_size`` is not an integer.

    Notes
    -----
    A zero query has similarity 0 with every key, so it gets keys
    ``0..k-1``. A query or key holding NaN or inf has NaN similarities;
    NaN ranks below every number, so such keys come last. Each block's
    selection uses the library's own top-k where it has one (NumPy's
    ``argpartition``, ``torch.topk``, ``jax.lax.top_k``, Dask's
    ``argtopk``), with the tie rule imposed on top of it.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> keys = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    >>> queries = np.array([[3.0, 0.1], [0.0, 0.0]])
    >>> similarities, indices = ck.cosine_topk(queries, keys, 2)
    >>> indices
    array([[0, 3],
           [0, 1]])
    >>> similarities.round(4)
    array([[0.9994, 0.9994],
           [0.    , 0.    ]])

    """
    xp = namespace_of(queries, keys, names=("queries", "keys"), xp=xp)
    result_dtype, compute_dtype = floating_dtypes(xp, queries, keys)
    for name, array in (("queries", queries), ("keys", keys)):
        if array.ndim != 2:
            msg = f"{name} must have shape (rows, features), got shape {tuple(array.shape)}"
            raise ValueError(msg)
    if queries.shape[1] != keys.shape[1]:
        msg = (
            f"queries and keys must have the same number of features, got shapes "
            f"{tuple(queries.shape)} and {tuple(keys.shape)}"
        )
        raise ValueError(msg)
    n = known_size(queries, 0, "queries")
    m = known_size(keys, 0, "keys")
    k = integer(k, "k")
    if not 1 <= k <= m:
        msg = f"k must be between 1 and the number of keys {m}, got {k}"
        raise ValueError(msg)
    if chunk_size is None:
        chunk = default_chunk_size(n, m)
    else:
        chunk = integer(chunk_size, "chunk_size")
        if chunk <= 0:
            msg = f"chunk_size must be positive, got {chunk}"
            raise ValueError(msg)
    index_dtype = xp.__array_namespace_info__().default_dtypes()["indexing"]
    device = array_device(queries)
    queries = xp.astype(queries, compute_dtype, copy=False)
    keys = xp.astype(keys, compute_dtype, copy=False)
    if n == 0:
        return (
            xp.empty((0, k), dtype=result_dtype, device=device),
            xp.empty((0, k), dtype=index_dtype, device=device),
        )
    parts = [
        _search_block(xp, queries[start : min(start + chunk, n), :], keys, k, chunk, index_dtype)
        for start in range(0, n, chunk)
    ]
    similarities = xp.concat([part[0] for part in parts], axis=0)
    indices = xp.concat([part[1] for part in parts], axis=0)
    similarities = xp.where(
        similarities == -math.inf, xp.full_like(similarities, math.nan), similarities
    )
    return xp.astype(similarities, result_dtype, copy=False), indices
