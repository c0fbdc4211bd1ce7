"""Top-k cosine search: the most similar keys for each query, in bounded memory."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from ._lib._blocks import (
    UNIT_QUERY_BYTES,
    Progress,
    SearchInputs,
    block_starts,
    chunk_blocks,
    dtype_bytes,
    row_block,
    unit_vectors,
)
from ._lib._select import (
    NAN_RANK,
    best_of_rows,
    empty_state,
    fill_empty,
    select_traced,
    self_mask,
    update_eager,
)
from ._lib._strategy.dask import dask_search_chunks
from ._lib._strategy.mode import Mode, compiling, eager_under_compile, execution_mode
from ._lib._strategy.namespaces import index_dtype
from ._lib._validation import integer

Array = Any

__all__ = ["cosine_topk"]


def eager_topk(
    xp: ModuleType,
    mode: Mode,
    queries: Array,
    keys: Array,
    k: int,
    *,
    blocks: tuple[int, int],
    exclude_self: bool,
    query_start: int = 0,
    key_start: int = 0,
    sentinel: int,
    progress: Progress | None = None,
) -> tuple[Array, Array]:
    """Threshold-pruned top-k where reads are free (see ``_lib._select``).

    Keys are the outer loop, so that each key block is normalized once;
    ``query_start`` and ``key_start`` place these rows in a larger search
    (a Dask chunk), ``sentinel`` is an index past every key.
    """
    n, m = queries.shape[0], keys.shape[0]
    query_rows, key_rows = blocks
    whole = n * queries.shape[1] * dtype_bytes(xp, queries.dtype) <= UNIT_QUERY_BYTES
    unit_queries = unit_vectors(xp, mode, queries) if whole else None
    query_blocks = list(block_starts(n, query_rows))
    states = [
        empty_state(xp, min(query_rows, n - start), k, sentinel, queries) for start in query_blocks
    ]
    for start in block_starts(m, key_rows):
        unit_keys = xp.matrix_transpose(unit_vectors(xp, mode, row_block(keys, start, key_rows)))
        for i, row in enumerate(query_blocks):
            block = (
                row_block(unit_queries, row, query_rows)
                if unit_queries is not None
                else unit_vectors(xp, mode, row_block(queries, row, query_rows))
            )
            excluded = None
            if exclude_self:
                excluded = self_mask(
                    xp,
                    block.shape[0],
                    unit_keys.shape[1],
                    query_start + row,
                    key_start + start,
                    block,
                )
            similarity = xp.matmul(block, unit_keys)
            states[i] = update_eager(xp, mode, states[i], similarity, key_start + start, excluded)
        if progress is not None:
            progress(min(start + key_rows, m), m)
    values = xp.concat([state[0] for state in states], axis=0)
    indices = xp.concat([state[1] for state in states], axis=0)
    return values, indices


def _traced_topk(inputs: SearchInputs, k: int, progress: Progress | None) -> tuple[Array, Array]:
    """Fixed-shape top-k: traced code (JAX, torch.compile, strict flags), or eager JAX."""
    xp, mode, queries, keys = inputs.xp, inputs.mode, inputs.queries, inputs.keys
    query_rows, key_rows = inputs.blocks()
    query_blocks = list(block_starts(inputs.n, query_rows))
    unit_queries = [
        unit_vectors(xp, mode, row_block(queries, row, query_rows)) for row in query_blocks
    ]
    states: list[tuple[Array, Array] | None] = [None] * len(query_blocks)
    for start in block_starts(inputs.m, key_rows):
        unit_keys = xp.matrix_transpose(unit_vectors(xp, mode, row_block(keys, start, key_rows)))
        width = unit_keys.shape[1]
        columns = xp.arange(start, start + width, dtype=inputs.index_dtype, device=inputs.device)
        for i, row in enumerate(query_blocks):
            block = unit_queries[i]
            excluded = (
                self_mask(xp, block.shape[0], width, row, start, block)
                if inputs.exclude_self
                else None
            )
            states[i] = select_traced(
                xp, mode, states[i], xp.matmul(block, unit_keys), columns, excluded, k
            )
        if progress is not None:
            progress(min(start + key_rows, inputs.m), inputs.m)
    values = xp.concat([state[0] for state in states if state is not None], axis=0)
    indices = xp.concat([state[1] for state in states if state is not None], axis=0)
    values = xp.where(values == NAN_RANK, xp.full_like(values, math.nan), values)
    return values, indices


def _dask_topk(inputs: SearchInputs, k: int) -> tuple[Array, Array]:
    """Each key chunk searched by the eager kernel where it lives, merged in a tree.

    Values and indices travel packed side by side in one float64 block
    (exact: float32 and float64 values, indices below 2**53).
    """
    xp, m, exclude_self = inputs.xp, inputs.m, inputs.exclude_self
    chunk_size = inputs.chunk_size

    def pack(chunk_xp: ModuleType, state: tuple[Array, Array]) -> Array:
        return chunk_xp.concat([chunk_xp.astype(part, chunk_xp.float64) for part in state], axis=1)

    def unpack(chunk_xp: ModuleType, packed: Array) -> tuple[Array, Array]:
        half = packed.shape[1] // 2
        return packed[:, :half], chunk_xp.astype(packed[:, half:], index_dtype(chunk_xp))

    def search(
        chunk_xp: ModuleType, queries: Array, keys: Array, query_start: int, key_start: int
    ) -> Array:
        state = eager_topk(
            chunk_xp,
            execution_mode(chunk_xp, queries, keys),
            queries,
            keys,
            k,
            blocks=chunk_blocks(chunk_xp, queries, keys, chunk_size),
            exclude_self=exclude_self,
            query_start=query_start,
            key_start=key_start,
            sentinel=m,
        )
        return pack(chunk_xp, state)

    def merge(chunk_xp: ModuleType, packed: Array) -> Array:
        if packed.shape[1] <= 2 * k:
            return packed
        left = unpack(chunk_xp, packed[:, : 2 * k])
        right = unpack(chunk_xp, packed[:, 2 * k :])
        values = chunk_xp.concat((left[0], right[0]), axis=1)
        indices = chunk_xp.concat((left[1], right[1]), axis=1)
        return pack(chunk_xp, best_of_rows(chunk_xp, values, indices, k))

    def finish(chunk_xp: ModuleType, packed: Array, query_start: int) -> Array:
        state = unpack(chunk_xp, packed)
        return pack(chunk_xp, fill_empty(chunk_xp, state, m, query_start, exclude_self))

    packed = dask_search_chunks(inputs.queries, inputs.keys, search, merge, finish, 2 * k)
    dtype = inputs.queries.dtype
    return xp.astype(packed[:, :k], dtype), xp.astype(packed[:, k:], inputs.index_dtype)


def cosine_topk(
    queries: Array,
    keys: Array,
    /,
    k: int,
    *,
    chunk_size: int | None = None,
    exclude_self: bool = False,
    progress: Progress | None = None,
    xp: ModuleType | None = None,
) -> tuple[Array, Array]:
    """The ``k`` keys most similar to each query, by cosine similarity.

    Exact (brute-force) search that works through queries and keys in blocks,
    keeping a running top-k per query. Peak memory is a few blocks of
    similarities plus the ``n * k`` result, never ``n * m``. Where reading a
    value is free (NumPy, eager PyTorch on the CPU, array-api-strict) each
    block costs its matrix product plus one comparison: only similarities
    above a query's current k-th best are kept (threshold pruning).
    Elsewhere every block is selected with fixed shapes: on JAX (whose
    ``lax.top_k`` keeps ties in order), under ``torch.compile`` and
    ``torch.func``, and on accelerators (PyTorch on a GPU, CuPy), where a
    read would synchronize with the device. On Dask each key chunk is searched by one task where it
    lives and the ``(n, k)`` partial results are merged in a tree; nothing is
    computed until the result is.

    Parameters
    ----------
    queries : array
        Shape ``(n, d)``.
    keys : array
        Shape ``(m, d)``, same library and feature size as ``queries``.
    k : int
        How many keys to return per query, ``1 <= k <= m`` (``k <= m - 1``
        with ``exclude_self``).
    chunk_size : int, optional
        The most rows of queries and of keys in one block. By default a
        block holds at most 1,024 queries and about ``2**22`` similarities
        (16 MiB in float32; 1,000 queries meet 4,194 keys per block). On
        Dask the key blocks are the chunks of ``keys`` (each searched by one
        task) and ``chunk_size`` sets the blocks inside a task.
    exclude_self : bool, default False
        ``queries`` and ``keys`` index one collection (row ``i`` of both is
        the same item): query ``i`` never gets key ``i``, while an exact
        duplicate stored at another index is still found (a kNN graph,
        near-duplicate detection). Needs ``n <= m``.
    progress : callable, optional
        Called as ``progress(keys_done, m)`` after each block of keys, in an
        eager search on any device (for a progress bar, such as ``tqdm``'s
        ``update``). Under ``torch.compile`` such a call is a graph break
        and runs eagerly. Dask reports progress through its own diagnostics
        instead, and under ``jax.jit`` or ``torch.func`` a search has no
        moment to call it: there it is a ``TypeError``.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    similarities : array
        Shape ``(n, k)``, each row in descending order, clipped to
        ``[-1, 1]``, in the promoted floating dtype of the inputs (float16
        and bfloat16 computed in float32).
    indices : array
        Shape ``(n, k)``, the rows of ``keys``, in the namespace's default
        index dtype. Among equal similarities the smaller index comes
        first, and is the one kept at the k-th place.

    Raises
    ------
    ValueError
        If an input is not 2-D, the feature sizes differ, ``k`` is outside
        ``1..m`` (``1..m - 1`` with ``exclude_self``), ``n > m`` with
        ``exclude_self``, or ``chunk_size`` is not positive.
    TypeError
        If ``k`` or ``chunk_size`` is not an integer, ``exclude_self`` not a
        bool, or ``progress`` is given where it cannot be called.

    Notes
    -----
    *Ties.* The tie rule holds for similarities that compare equal *as
    computed*. Each similarity is one dot product of unit vectors, and a
    matrix product may round the same pair differently (by an ulp) in
    different block shapes, on different backends or with different
    ``chunk_size``: two stored copies of one key can then differ in the
    last bit, and the larger comes first even if its index is larger.
    Results are therefore equal to a brute-force search (of the same
    computed values) under the tie rule, but the order of exact duplicates
    is only promised where their computed similarities are equal, as for
    keys that normalize to the same unit vector bit for bit.

    A zero query has similarity 0 with every key, so it gets keys
    ``0..k-1``. A query or key holding NaN or inf has NaN similarities;
    NaN ranks below every number and such keys come last, by index.

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

    With ``exclude_self`` a collection searches itself: each row finds its
    nearest *other* row, and a stored duplicate counts.

    >>> items = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    >>> ck.cosine_topk(items, items, 1, exclude_self=True)[1]
    array([[2],
           [0],
           [0]])

    """
    if progress is not None and compiling():
        # An eager search calls progress between blocks: a graph break.
        return eager_under_compile(cosine_topk)(
            queries,
            keys,
            k,
            chunk_size=chunk_size,
            exclude_self=exclude_self,
            progress=progress,
            xp=xp,
        )
    inputs = SearchInputs(queries, keys, xp, chunk_size, exclude_self)
    xp = inputs.xp
    k = integer(k, "k")
    limit = inputs.m - 1 if inputs.exclude_self else inputs.m
    if not 1 <= k <= limit:
        what = (
            "the number of keys minus one (exclude_self)"
            if inputs.exclude_self
            else ("the number of keys")
        )
        msg = f"k must be between 1 and {what} {limit}, got {k}"
        raise ValueError(msg)
    report = inputs.check_progress(progress)
    if inputs.n == 0:
        return (
            xp.empty((0, k), dtype=inputs.result_dtype, device=inputs.device),
            xp.empty((0, k), dtype=inputs.index_dtype, device=inputs.device),
        )
    if inputs.lazy:
        values, indices = _dask_topk(inputs, k)
    elif inputs.prune:
        state = eager_topk(
            xp,
            inputs.mode,
            inputs.queries,
            inputs.keys,
            k,
            blocks=inputs.blocks(),
            exclude_self=inputs.exclude_self,
            sentinel=inputs.m,
            progress=report,
        )
        values, indices = fill_empty(xp, state, inputs.m, 0, inputs.exclude_self)
    else:
        values, indices = _traced_topk(inputs, k, report)
    return xp.astype(values, inputs.result_dtype, copy=False), indices
