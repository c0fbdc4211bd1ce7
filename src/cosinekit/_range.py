"""Range search: every (query, key) pair at or above a cosine threshold, in bounded memory."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._lib._blocks import (
    Progress,
    SearchInputs,
    block_starts,
    chunk_blocks,
    row_block,
    unit_vectors,
)
from ._lib._select import self_mask, sort_triples
from ._lib._strategy.autodiff import clip_straight_through
from ._lib._strategy.dask import dask_search_pairs
from ._lib._strategy.mode import Mode, eager_under_compile, execution_mode
from ._lib._strategy.namespaces import index_dtype

Array = Any
Pairs = tuple[Array, Array, Array]

__all__ = ["cosine_range_search"]


def _floor(threshold: float) -> float:
    """The raw similarity from which a pair qualifies once clipped to ``[-1, 1]``.

    For ``-1 < t <= 1``, ``clip(s) >= t`` exactly when ``s >= t``; at
    ``t <= -1`` every number qualifies (NaN never does).
    """
    return -math.inf if threshold <= -1.0 else threshold


def eager_pairs(
    xp: ModuleType,
    mode: Mode,
    queries: Array,
    keys: Array,
    threshold: float,
    *,
    blocks: tuple[int, int],
    exclude_self: bool,
    query_start: int = 0,
    key_start: int = 0,
    progress: Progress | None = None,
) -> Pairs:
    """The qualifying pairs of these rows, ordered.

    ``query_start`` and ``key_start`` place the rows in a larger search (a
    Dask chunk). Keys are the outer loop, so each key block is normalized once.
    """
    n, m = queries.shape[0], keys.shape[0]
    query_rows, key_rows = blocks
    indices = index_dtype(xp)
    query_blocks = list(block_starts(n, query_rows))
    unit_queries = [
        unit_vectors(xp, mode, row_block(queries, row, query_rows)) for row in query_blocks
    ]
    found: list[list[Pairs]] = [[] for _ in query_blocks]
    floor = _floor(threshold)
    for start in block_starts(m, key_rows):
        unit_keys = xp.matrix_transpose(unit_vectors(xp, mode, row_block(keys, start, key_rows)))
        width = unit_keys.shape[1]
        for i, row in enumerate(query_blocks):
            similarity = xp.matmul(unit_queries[i], unit_keys)
            qualifies = similarity >= floor
            if exclude_self:
                excluded = self_mask(
                    xp,
                    similarity.shape[0],
                    width,
                    query_start + row,
                    key_start + start,
                    similarity,
                )
                if excluded is not None:
                    qualifies = qualifies & xp.logical_not(excluded)
            rows, columns = xp.nonzero(qualifies)
            if rows.shape[0] == 0:
                continue
            values = xp.take(xp.reshape(similarity, (-1,)), rows * width + columns)
            found[i].append(
                (
                    xp.astype(rows + (query_start + row), indices),
                    xp.astype(columns + (key_start + start), indices),
                    clip_straight_through(xp, mode, values, -1.0, 1.0),
                )
            )
        if progress is not None:
            progress(min(start + key_rows, m), m)
    device = array_device(queries)
    empty = (
        xp.empty((0,), dtype=indices, device=device),
        xp.empty((0,), dtype=indices, device=device),
        xp.empty((0,), dtype=queries.dtype, device=device),
    )
    return order_pairs(xp, [pairs for block in found for pairs in block], empty)


def order_pairs(xp: ModuleType, parts: list[Pairs], empty: Pairs) -> Pairs:
    """Concatenate pairs and order them by query, descending similarity, key."""
    if not parts:
        return empty
    rows, columns, values = (xp.concat([part[j] for part in parts]) for j in range(3))
    order = sort_triples(xp, rows, values, columns)
    return xp.take(rows, order), xp.take(columns, order), xp.take(values, order)


def _dask_pairs(inputs: SearchInputs, threshold: float) -> Pairs:
    chunk_size, exclude_self = inputs.chunk_size, inputs.exclude_self

    def search(
        chunk_xp: ModuleType, queries: Array, keys: Array, query_start: int, key_start: int
    ) -> Pairs:
        return eager_pairs(
            chunk_xp,
            execution_mode(chunk_xp, queries, keys),
            queries,
            keys,
            threshold,
            blocks=chunk_blocks(chunk_xp, queries, keys, chunk_size),
            exclude_self=exclude_self,
            query_start=query_start,
            key_start=key_start,
        )

    def combine(chunk_xp: ModuleType, parts: list[Pairs]) -> Pairs:
        return order_pairs(chunk_xp, parts, parts[0])

    return dask_search_pairs(inputs.queries, inputs.keys, search, combine, inputs.index_dtype)


@eager_under_compile
def cosine_range_search(
    queries: Array,
    keys: Array,
    /,
    threshold: float | Array,
    *,
    exclude_self: bool = False,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    xp: ModuleType | None = None,
) -> tuple[Array, Array, Array]:
    """Every (query, key) pair whose cosine similarity is at least ``threshold``.

    The equivalent of faiss's ``range_search`` (on normalized vectors with
    ``IndexFlatIP``) and scikit-learn's ``radius_neighbors`` with the cosine
    metric (radius ``1 - threshold``), and of the all-pairs deduplication
    written by hand. Queries and keys are worked through in blocks, so
    memory is bounded by a few blocks plus the result, never ``n * m``.

    Parameters
    ----------
    queries : array
        Shape ``(n, d)``.
    keys : array
        Shape ``(m, d)``, same library and feature size as ``queries``.
    threshold : float or array
        The smallest similarity kept (inclusive): a real number, or a 0-d
        real array (a ``torch.quantile`` result, say), read once. May be
        passed by keyword. Similarities are clipped to ``[-1, 1]`` first,
        so ``threshold <= -1`` keeps every pair whose similarity is a
        number, and ``threshold > 1`` keeps none.
    exclude_self : bool, default False
        ``queries`` and ``keys`` index one collection: the pair ``(i, i)``
        is never returned, while exact duplicates at other indices are.
        Needs ``n <= m``.
    chunk_size : int, optional
        The most rows of queries and of keys in one block (defaults as in
        `cosine_topk`). On Dask the blocks are the chunks of the inputs,
        one task per pair of chunks, and ``chunk_size`` sets the blocks
        inside a task.
    progress : callable, optional
        Called as ``progress(keys_done, m)`` after each block of keys, in an
        eager search. Dask reports progress through its own diagnostics.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    query_indices, key_indices : array
        1-D, the pairs' rows of ``queries`` and ``keys``, in the namespace's
        default index dtype.
    similarities : array
        1-D, the pairs' similarities, in the promoted floating dtype.

    The pairs are ordered by query index, then by descending similarity,
    then by key index (as computed: see `cosine_topk` on ties). A pair
    whose similarity is NaN (a row holding NaN or inf) never qualifies; a
    zero row has similarity 0 with everything.

    Raises
    ------
    TypeError
        Under ``jax.jit``, ``torch.func`` and array-api-strict without
        data-dependent shapes: the number of pairs depends on the values,
        which a traced program cannot have. Use `cosine_topk` with a fixed
        ``k`` there, and mask the similarities below the threshold. Also
        for a ``threshold`` that is not a real number, and ``progress``
        where it cannot be called.
    ValueError
        For a NaN ``threshold``, inputs that are not 2-D or differ in their
        feature size, ``n > m`` with ``exclude_self``, or a ``chunk_size``
        that is not positive.

    Notes
    -----
    Eager libraries return the arrays directly, on any device: on a GPU
    (PyTorch, CuPy, JAX) each block's count of pairs is read, the one kind
    of device synchronization the result size needs. Under
    ``torch.compile`` the call is a graph break: without ``fullgraph`` it
    runs eagerly and returns the eager result; with ``fullgraph=True``
    compilation fails at this call. On Dask the result is three lazy arrays
    of unknown length (``nan`` in their shape), one task per pair of chunks
    where the key chunk lives, nothing computed until asked.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> items = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.1], [1.0, 0.0]])
    >>> rows, cols, sims = ck.cosine_range_search(items, items, 0.99, exclude_self=True)
    >>> rows, cols
    (array([0, 0, 2, 2, 3, 3]), array([3, 2, 0, 3, 0, 2]))
    >>> sims.round(4)
    array([1.    , 0.9988, 0.9988, 0.9988, 1.    , 0.9988])

    """
    inputs = SearchInputs(queries, keys, xp, chunk_size, exclude_self)
    xp = inputs.xp
    value = inputs.threshold(threshold)
    inputs.require_value_dependent_shapes("cosine_range_search")
    report = inputs.check_progress(progress)
    if inputs.lazy:
        query_indices, key_indices, values = _dask_pairs(inputs, value)
    elif inputs.n == 0 or inputs.m == 0 or value > 1.0:
        query_indices = xp.empty((0,), dtype=inputs.index_dtype, device=inputs.device)
        key_indices = xp.empty((0,), dtype=inputs.index_dtype, device=inputs.device)
        values = xp.empty((0,), dtype=inputs.queries.dtype, device=inputs.device)
    else:
        query_indices, key_indices, values = eager_pairs(
            xp,
            inputs.mode,
            inputs.queries,
            inputs.keys,
            value,
            blocks=inputs.blocks(),
            exclude_self=inputs.exclude_self,
            progress=report,
        )
    return query_indices, key_indices, xp.astype(values, inputs.result_dtype, copy=False)
