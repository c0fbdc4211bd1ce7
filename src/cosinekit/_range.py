"""Range search: every (query, key) pair at or above a cosine threshold, in bounded memory."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._lib._blocks import Progress, SearchInputs, chunk_blocks, join_parts, search_blocks
from ._lib._qualify import Qualifying, ordered_pairs
from ._lib._strategy.dask import dask_search_pairs
from ._lib._strategy.loops import from_host, host_namespace, to_host
from ._lib._strategy.mode import Mode, eager_under_compile, execution_mode
from ._lib._strategy.namespaces import index_dtype

Array = Any
Pairs = tuple[Array, Array, Array]

__all__ = ["cosine_range_search"]


def range_pairs(
    xp: ModuleType,
    mode: Mode,
    queries: Array,
    keys: Array,
    threshold: float,
    *,
    blocks: tuple[int, int],
    exclude_self: bool,
    device: Any,
    offsets: tuple[int, int] = (0, 0),
    progress: Progress | None = None,
) -> Pairs:
    """The qualifying pairs of these rows, ordered by query, -similarity, key."""
    visitor = Qualifying(
        xp,
        mode,
        threshold,
        features=int(queries.shape[1]),
        dtype=queries.dtype,
        index_dtype=index_dtype(xp),
        device=device,
        order="rows",
        group=blocks[0] * blocks[1],
        exclude_self=exclude_self,
    )
    query_indices, key_indices, values = search_blocks(
        xp, mode, queries, keys, visitor, blocks=blocks, offsets=offsets, progress=progress
    )
    return query_indices, key_indices, values


def _dask_pairs(inputs: SearchInputs, threshold: float) -> Pairs:
    chunk_size, exclude_self = inputs.chunk_size, inputs.exclude_self

    def search(
        chunk_xp: ModuleType, queries: Array, keys: Array, query_start: int, key_start: int
    ) -> Pairs:
        return range_pairs(
            chunk_xp,
            execution_mode(chunk_xp, queries, keys),
            queries,
            keys,
            threshold,
            blocks=chunk_blocks(chunk_xp, queries, keys, chunk_size, pairs=True),
            exclude_self=exclude_self,
            device=array_device(queries),
            offsets=(query_start, key_start),
        )

    def combine(chunk_xp: ModuleType, parts: list[Pairs]) -> Pairs:
        query_indices, key_indices, values = ordered_pairs(
            chunk_xp, list(join_parts(chunk_xp, list(parts))), "rows"
        )
        return query_indices, key_indices, values

    dtypes = (inputs.index_dtype, inputs.index_dtype, inputs.queries.dtype)
    query_indices, key_indices, values = dask_search_pairs(
        inputs.queries, inputs.keys, search, combine, dtypes
    )
    return query_indices, key_indices, values


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
        number, and ``threshold > 1`` keeps none. Rows that are identical
        (bit for bit, after normalization) have similarity exactly 1, so
        ``threshold=1.0`` finds exact duplicates (see Notes).
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
    *Duplicates.* A matrix product rounds the similarity of two identical
    unit vectors to a little below 1 (0.9999999999999998 in float64), so
    that a threshold of 1 would miss exact duplicates, even a row with
    itself. Every pair within ``(d + 4) * eps`` of 1 (``eps`` the machine
    epsilon of the compute dtype), the most that rounding can take from an
    identical pair, is compared row by row: where the two unit vectors are
    equal, the similarity is exactly 1. Pairs that are merely close keep
    their computed value. Memory is the blocks plus at most twice the
    result.

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
    host = host_namespace(xp, inputs.mode)
    if host is not None:
        found = cosine_range_search(
            to_host(xp, inputs.queries),
            to_host(xp, inputs.keys),
            value,
            exclude_self=inputs.exclude_self,
            chunk_size=chunk_size,
            progress=report,
        )
        dtypes = (inputs.index_dtype, inputs.index_dtype, inputs.result_dtype)
        query_indices, key_indices, values = (
            xp.astype(from_host(xp, a, inputs.device), dtype)
            for a, dtype in zip(found, dtypes, strict=True)
        )
        return query_indices, key_indices, values
    if inputs.lazy:
        query_indices, key_indices, values = _dask_pairs(inputs, value)
    elif inputs.n == 0 or inputs.m == 0 or value > 1.0:
        query_indices = xp.empty((0,), dtype=inputs.index_dtype, device=inputs.device)
        key_indices = xp.empty((0,), dtype=inputs.index_dtype, device=inputs.device)
        values = xp.empty((0,), dtype=inputs.queries.dtype, device=inputs.device)
    else:
        query_indices, key_indices, values = range_pairs(
            xp,
            inputs.mode,
            inputs.queries,
            inputs.keys,
            value,
            blocks=inputs.blocks(pairs=True),
            exclude_self=inputs.exclude_self,
            device=inputs.device,
            progress=report,
        )
    return query_indices, key_indices, xp.astype(values, inputs.result_dtype, copy=False)
