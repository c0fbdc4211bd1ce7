"""Top-k cosine search: the most similar keys for each query, in bounded memory."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

from array_api_compat import array_namespace, is_dask_namespace
from array_api_compat import device as array_device

from ._lib._kernels import unit_rows
from ._lib._select import (
    NAN_RANK,
    best_of_rows,
    empty_state,
    fill_empty,
    select_traced,
    self_mask,
    update_eager,
)
from ._lib._strategy import dask_search_chunks, prunes_by_value, values_are_readable
from ._lib._validation import floating_dtypes, integer, known_size, namespace_of

Array = Any
Progress = Callable[[int, int], object]

__all__ = ["cosine_topk"]

# Default blocks: at most QUERY_ROWS queries against as many keys as make
# 2**22 similarities (16 MiB in float32; 1,000 queries meet 4,194 keys),
# and no key block above KEY_BLOCK_BYTES. Unit queries are kept for the whole
# search when they fit in UNIT_QUERY_BYTES, else normalized per block. With
# the candidate mask and the dense-block copy, the peak stays far below
# 256 MiB whatever n and m (measured in benchmarks/search.py).
BLOCK_VALUES = 2**22
QUERY_ROWS = 1024
KEY_BLOCK_BYTES = 2**25
UNIT_QUERY_BYTES = 2**26


def block_rows(n: int, m: int, d: int, itemsize: int, chunk_size: int | None) -> tuple[int, int]:
    """``(query rows, key rows)`` per block: ``chunk_size`` for both, or the defaults."""
    if chunk_size is not None:
        return chunk_size, chunk_size
    query_rows = max(1, min(n, QUERY_ROWS))
    key_rows = min(
        max(1, BLOCK_VALUES // query_rows), max(1, KEY_BLOCK_BYTES // max(1, d * itemsize))
    )
    return query_rows, max(1, min(m, key_rows))


def unit_vectors(xp: ModuleType, x: Array) -> Array:
    return unit_rows(xp, x, -1, None).unit


def block_starts(size: int, step: int) -> range:
    return range(0, size, step)


def row_block(x: Array, start: int, step: int) -> Array:
    # Stops past the end are not portable (array-api-strict rejects them).
    return x[start : min(start + step, x.shape[0]), :]


class SearchInputs:
    """Validated search inputs: namespace, dtypes, sizes, arrays in the compute dtype."""

    def __init__(
        self,
        queries: Array,
        keys: Array,
        xp: ModuleType | None,
        chunk_size: object,
        exclude_self: object,
    ) -> None:
        xp = namespace_of(queries, keys, names=("queries", "keys"), xp=xp)
        self.xp = xp
        self.result_dtype, compute_dtype = floating_dtypes(xp, queries, keys)
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
        self.n = known_size(queries, 0, "queries")
        self.m = known_size(keys, 0, "keys")
        self.chunk_size: int | None = None
        if chunk_size is not None:
            self.chunk_size = integer(chunk_size, "chunk_size")
            if self.chunk_size <= 0:
                msg = f"chunk_size must be positive, got {self.chunk_size}"
                raise ValueError(msg)
        if not isinstance(exclude_self, bool):
            msg = f"exclude_self must be True or False, got {type(exclude_self).__name__}"
            raise TypeError(msg)
        self.exclude_self = exclude_self
        if exclude_self and self.n > self.m:
            msg = (
                "exclude_self=True needs queries and keys to index one collection "
                f"(n <= m), got {self.n} queries and {self.m} keys"
            )
            raise ValueError(msg)
        self.index_dtype = xp.__array_namespace_info__().default_dtypes()["indexing"]
        self.device = array_device(queries)
        self.queries = xp.astype(queries, compute_dtype, copy=False)
        self.keys = xp.astype(keys, compute_dtype, copy=False)
        self.lazy = is_dask_namespace(xp)
        self.readable = not self.lazy and all(
            values_are_readable(xp, x) for x in (self.queries, self.keys)
        )
        self.prune = self.readable and all(
            prunes_by_value(xp, x) for x in (self.queries, self.keys)
        )

    def blocks(self) -> tuple[int, int]:
        d = int(self.queries.shape[1])
        itemsize = dtype_bytes(self.xp, self.queries.dtype)
        return block_rows(self.n, self.m, d, itemsize, self.chunk_size)

    def check_progress(self, progress: object) -> Progress | None:
        if progress is None:
            return None
        if not callable(progress):
            msg = f"progress must be None or a callable, got {type(progress).__name__}"
            raise TypeError(msg)
        if not self.readable:
            where = (
                "Dask arrays report progress through Dask's diagnostics "
                "(dask.diagnostics.ProgressBar, or distributed's progress and dashboard)"
                if self.lazy
                else "a traced search (jax.jit, torch.compile) has no moment to call it"
            )
            msg = f"progress is called between the blocks of an eager search; {where}"
            raise TypeError(msg)
        checked: Progress = progress
        return checked


def dtype_bytes(xp: ModuleType, dtype: Any) -> int:
    return int(xp.finfo(dtype).bits) // 8


def eager_topk(
    xp: ModuleType,
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
    """Threshold-pruned top-k where values are readable (see ``_lib._select``).

    Keys are the outer loop, so that each key block is normalized once;
    ``query_start`` and ``key_start`` place these rows in a larger search
    (a Dask chunk), ``sentinel`` is an index past every key.
    """
    n, m = queries.shape[0], keys.shape[0]
    query_rows, key_rows = blocks
    whole = n * queries.shape[1] * dtype_bytes(xp, queries.dtype) <= UNIT_QUERY_BYTES
    unit_queries = unit_vectors(xp, queries) if whole else None
    query_blocks = list(block_starts(n, query_rows))
    states = [
        empty_state(xp, min(query_rows, n - start), k, sentinel, queries) for start in query_blocks
    ]
    for start in block_starts(m, key_rows):
        unit_keys = xp.matrix_transpose(unit_vectors(xp, row_block(keys, start, key_rows)))
        for i, row in enumerate(query_blocks):
            block = (
                row_block(unit_queries, row, query_rows)
                if unit_queries is not None
                else unit_vectors(xp, row_block(queries, row, query_rows))
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
            states[i] = update_eager(xp, states[i], similarity, key_start + start, excluded)
        if progress is not None:
            progress(min(start + key_rows, m), m)
    values = xp.concat([state[0] for state in states], axis=0)
    indices = xp.concat([state[1] for state in states], axis=0)
    return values, indices


def _traced_topk(inputs: SearchInputs, k: int, progress: Progress | None) -> tuple[Array, Array]:
    """Fixed-shape top-k: traced code (JAX, torch.compile, strict flags), or eager JAX."""
    xp, queries, keys = inputs.xp, inputs.queries, inputs.keys
    query_rows, key_rows = inputs.blocks()
    query_blocks = list(block_starts(inputs.n, query_rows))
    unit_queries = [unit_vectors(xp, row_block(queries, row, query_rows)) for row in query_blocks]
    states: list[tuple[Array, Array] | None] = [None] * len(query_blocks)
    for start in block_starts(inputs.m, key_rows):
        unit_keys = xp.matrix_transpose(unit_vectors(xp, row_block(keys, start, key_rows)))
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
                xp, states[i], xp.matmul(block, unit_keys), columns, excluded, k
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

    def unpack(chunk_xp: ModuleType, packed: Array, dtype: Any) -> tuple[Array, Array]:
        half = packed.shape[1] // 2
        index_dtype = chunk_xp.__array_namespace_info__().default_dtypes()["indexing"]
        return (
            chunk_xp.astype(packed[:, :half], dtype),
            chunk_xp.astype(packed[:, half:], index_dtype),
        )

    dtype = inputs.queries.dtype

    def search(queries: Array, keys: Array, query_start: int, key_start: int) -> Array:
        chunk_xp = array_namespace(queries, keys)
        n_here, m_here = queries.shape[0], keys.shape[0]
        blocks = block_rows(
            n_here, m_here, queries.shape[1], dtype_bytes(chunk_xp, queries.dtype), chunk_size
        )
        state = eager_topk(
            chunk_xp,
            queries,
            keys,
            k,
            blocks=blocks,
            exclude_self=exclude_self,
            query_start=query_start,
            key_start=key_start,
            sentinel=m,
        )
        return pack(chunk_xp, state)

    def merge(packed: Array) -> Array:
        chunk_xp = array_namespace(packed)
        if packed.shape[1] <= 2 * k:
            return packed
        left = unpack(chunk_xp, packed[:, : 2 * k], chunk_xp.float64)
        right = unpack(chunk_xp, packed[:, 2 * k :], chunk_xp.float64)
        values = chunk_xp.concat((left[0], right[0]), axis=1)
        indices = chunk_xp.concat((left[1], right[1]), axis=1)
        return pack(chunk_xp, best_of_rows(chunk_xp, values, indices, k))

    def finish(packed: Array, query_start: int) -> Array:
        chunk_xp = array_namespace(packed)
        state = unpack(chunk_xp, packed, chunk_xp.float64)
        return pack(chunk_xp, fill_empty(chunk_xp, state, m, query_start, exclude_self))

    packed = dask_search_chunks(inputs.queries, inputs.keys, search, merge, finish, 2 * k)
    return xp.astype(packed[:, :k], dtype), xp.astype(packed[:, k:], inputs.index_dtype)


def cosine_topk(
    queries: Array,
    keys: Array,
    k: int,
    /,
    *,
    chunk_size: int | None = None,
    exclude_self: bool = False,
    progress: Progress | None = None,
    xp: ModuleType | None = None,
) -> tuple[Array, Array]:
    """The ``k`` keys most similar to each query, by cosine similarity.

    Exact (brute-force) search that works through queries and keys in blocks,
    keeping a running top-k per query. Peak memory is a few blocks of
    similarities plus the ``n * k`` result, never ``n * m``. Where values
    are readable (NumPy, CuPy, eager PyTorch and JAX, array-api-strict) each
    block costs its matrix product plus one comparison: only similarities
    above a query's current k-th best are kept (threshold pruning). Under
    ``jax.jit`` and ``torch.compile`` the blocks are static slices of the
    traced program. On Dask each key chunk is searched by one task where it
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
        eager search (for a progress bar, such as ``tqdm``'s ``update``).
        Dask reports progress through its own diagnostics instead, and a
        traced search has no moment to call it: there it is a ``TypeError``.
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
