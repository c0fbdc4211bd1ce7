"""Hard negatives: the most similar keys that are not a query's positives, filtered."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from ._lib._blocks import SearchInputs, chunk_blocks, search_blocks, unit_vectors
from ._lib._mining import in_window, mining_visitor
from ._lib._select import best_of_rows
from ._lib._strategy.dask import dask_search_chunks
from ._lib._strategy.loops import compiled_on_jax
from ._lib._strategy.mode import execution_mode
from ._lib._strategy.namespaces import index_dtype
from ._lib._strategy.rows import row_dot
from ._lib._validation import finite_real, integer

Array = Any

__all__ = ["mine_hard_negatives"]

_STATIC = ("k", "rank_range", "max_similarity", "margin", "relative_margin", "chunk_size")


def _rank_range(rank_range: object) -> tuple[int, int | None]:
    """``rank_range`` as ``(lo, hi)``: None is ``(0, None)`` (every rank)."""
    if rank_range is None:
        return 0, None
    if not isinstance(rank_range, (tuple, list)) or len(rank_range) != 2:
        msg = f"rank_range must be None or a pair (lo, hi) of integers, got {rank_range!r}"
        raise TypeError(msg)
    low = integer(rank_range[0], "rank_range[0]")
    high = integer(rank_range[1], "rank_range[1]")
    if not 0 <= low < high:
        msg = f"rank_range must have 0 <= lo < hi, got ({low}, {high})"
        raise ValueError(msg)
    return low, high


def _positives(inputs: SearchInputs, positives: Array) -> Array:
    """``positives`` as an ``(n, p)`` array of the index dtype, checked where reads are free."""
    xp = inputs.xp
    if not xp.isdtype(positives.dtype, "integral"):
        msg = f"positives must be an integer array of key indices, got dtype {positives.dtype}"
        raise TypeError(msg)
    if positives.ndim not in (1, 2) or positives.shape[0] != inputs.n:
        msg = (
            f"positives must have shape (n,) or (n, p) with n = {inputs.n} queries, "
            f"got shape {tuple(positives.shape)}"
        )
        raise ValueError(msg)
    if positives.ndim == 1:
        positives = xp.reshape(positives, (inputs.n, 1))
    positives = xp.astype(positives, inputs.index_dtype, copy=False)
    if inputs.mode.host_reads_free and inputs.n > 0:
        inside = (positives >= -1) & (positives < inputs.m)
        if not bool(xp.all(inside)):
            msg = (
                f"positives must be key indices in [0, {inputs.m}) or -1 (none), "
                "got values outside"
            )
            raise ValueError(msg)
    return positives


def _caps(
    inputs: SearchInputs,
    positives: Array,
    max_similarity: float | None,
    margin: float | None,
    relative_margin: float | None,
) -> Array | None:
    """Each query's largest similarity a negative may have (None: no cap at all).

    The margins subtract from the query's least similar positive; a query
    without positives has no margin. Under a trace (or on a device) a query
    with a positive out of range gets a cap of -inf: a row of padding.
    """
    xp, mode = inputs.xp, inputs.mode
    n, p = positives.shape
    dtype = inputs.queries.dtype
    infinity = xp.full((n,), math.inf, dtype=dtype, device=inputs.device)
    caps: Array | None = None
    if (margin is not None or relative_margin is not None) and p > 0:
        present = positives >= 0
        d = inputs.queries.shape[1]
        where = xp.reshape(xp.clip(positives, 0, max(inputs.m - 1, 0)), (-1,))
        found = unit_vectors(xp, mode, xp.take(inputs.keys, where, axis=0))
        own = xp.reshape(unit_vectors(xp, mode, inputs.queries), (n, 1, d))
        similarity = xp.clip(row_dot(xp, mode, own, xp.reshape(found, (n, p, d)), -1), -1.0, 1.0)
        least = xp.min(xp.where(present, similarity, xp.full_like(similarity, math.inf)), axis=1)
        has = xp.any(present, axis=1)
        least = xp.where(has, least, xp.zeros_like(least))
        if margin is not None:
            caps = xp.where(has, least - margin, infinity)
        if relative_margin is not None:
            relative = xp.where(has, least - xp.abs(least) * relative_margin, infinity)
            caps = relative if caps is None else xp.minimum(caps, relative)
    if max_similarity is not None:
        most = xp.full_like(infinity, max_similarity)
        caps = most if caps is None else xp.minimum(caps, most)
    if not mode.host_reads_free:
        inside = xp.all((positives >= -1) & (positives < inputs.m), axis=1)
        caps = xp.where(inside, infinity if caps is None else caps, -infinity)
    return caps


def _dask_mining(
    inputs: SearchInputs,
    extras: tuple[Array, ...],
    size: int,
    count: bool,
    k: int,
    window: tuple[int, int | None],
) -> tuple[Array, Array]:
    """Each key chunk mined where it lives, the top candidates merged in a tree, then cut."""
    xp, m, chunk_size, capped = inputs.xp, inputs.m, inputs.chunk_size, len(extras) > 1
    width = 2 * size + 1

    def search(
        chunk_xp: ModuleType,
        queries: Array,
        keys: Array,
        query_start: int,
        key_start: int,
        *more: Array,
    ) -> Array:
        mode = execution_mode(chunk_xp, queries, keys)
        visitor = mining_visitor(chunk_xp, mode, size, capped, count, m, queries)
        values, indices, counted = search_blocks(
            chunk_xp,
            mode,
            queries,
            keys,
            visitor,
            blocks=chunk_blocks(chunk_xp, queries, keys, chunk_size, k=size),
            offsets=(query_start, key_start),
            extras=more,
        )
        if counted.shape[1] == 0:
            counted = chunk_xp.zeros((queries.shape[0], 1), dtype=chunk_xp.float64)
        parts = (values, indices, counted)
        return chunk_xp.concat([chunk_xp.astype(a, chunk_xp.float64) for a in parts], axis=1)

    def merge(chunk_xp: ModuleType, packed: Array) -> Array:
        if packed.shape[1] <= width:
            return packed
        left, right = packed[:, :width], packed[:, width:]
        values = chunk_xp.concat((left[:, :size], right[:, :size]), axis=1)
        indices = chunk_xp.astype(
            chunk_xp.concat((left[:, size:-1], right[:, size:-1]), axis=1), index_dtype(chunk_xp)
        )
        values, indices = best_of_rows(chunk_xp, values, indices, size)
        counted = left[:, -1:] + right[:, -1:]
        parts = (values, chunk_xp.astype(indices, chunk_xp.float64), counted)
        return chunk_xp.concat(parts, axis=1)

    def finish(chunk_xp: ModuleType, packed: Array, query_start: int) -> Array:
        indices = chunk_xp.astype(packed[:, size:-1], index_dtype(chunk_xp))
        counted = chunk_xp.astype(packed[:, -1], index_dtype(chunk_xp)) if count else None
        found = in_window(chunk_xp, packed[:, :size], indices, counted, k, *window)
        return chunk_xp.concat((chunk_xp.astype(found[0], chunk_xp.float64), found[1]), axis=1)

    packed = dask_search_chunks(
        inputs.queries,
        inputs.keys,
        search,
        merge,
        finish,
        width,
        extras=extras,
        finished_width=2 * k,
    )
    indices = xp.astype(packed[:, :k], inputs.index_dtype)
    return indices, xp.astype(packed[:, k:], inputs.queries.dtype)


def mine_hard_negatives(
    queries: Array,
    keys: Array,
    positives: Array,
    /,
    *,
    k: int,
    rank_range: tuple[int, int] | None = None,
    max_similarity: float | None = None,
    margin: float | None = None,
    relative_margin: float | None = None,
    chunk_size: int | None = None,
    xp: ModuleType | None = None,
) -> tuple[Array, Array]:
    """For each query, the ``k`` most similar keys that are not its positives, filtered.

    Hard-negative mining on embeddings, with the filters of
    sentence-transformers' ``mine_hard_negatives`` and the NV-Retriever
    margins. The candidates of query ``i`` are the keys that are not among
    ``positives[i]``, ranked by descending similarity (ties: lower index);
    a candidate is kept if it passes every filter given:

    * ``rank_range=(lo, hi)``: its rank among the candidates is in
      ``[lo, hi)`` (skip the ``lo`` most similar, which are often
      unlabelled positives);
    * ``max_similarity``: ``similarity <= max_similarity``;
    * ``margin``: ``similarity <= positive_similarity - margin``;
    * ``relative_margin``: ``similarity <= positive_similarity -
      abs(positive_similarity) * relative_margin`` (NV-Retriever's
      TopK-PercPos is ``relative_margin=0.05``).

    ``positive_similarity`` is the similarity of the query with its least
    similar positive; a query without positives has no margin filter. The
    first ``k`` that pass are returned. The search is the blocked top-k of
    `cosine_topk` (of ``lo + k`` candidates per query), so memory is the
    blocks plus the ``(n, lo + k)`` candidates, never ``n * m``.

    Parameters
    ----------
    queries : array
        Shape ``(n, d)``.
    keys : array
        Shape ``(m, d)``, same library and feature size.
    positives : array
        Integer, shape ``(n,)`` or ``(n, p)``: key indices of each query's
        positives; ``-1`` entries are ignored (queries with fewer positives).
    k : int
        Negatives per query, ``1 <= k <= m``.
    rank_range : (int, int), optional
        ``(lo, hi)`` with ``0 <= lo < hi``: the ranks kept.
    max_similarity, margin, relative_margin : float, optional
        The filters above (finite real numbers).
    chunk_size : int, optional
        The most rows of queries and of keys in one block (as in
        `cosine_topk`).
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    indices : array
        Shape ``(n, k)``, the negatives' key indices by descending
        similarity (ties: lower index), in the namespace's default index
        dtype; -1 where fewer than ``k`` pass.
    similarities : array
        Shape ``(n, k)``, their similarities, NaN where the index is -1, in
        the promoted floating dtype.

    Raises
    ------
    ValueError
        If an input is not 2-D or the feature sizes differ, ``k`` is
        outside ``1..m``, ``positives`` is not ``(n,)`` or ``(n, p)``, a
        positive is outside ``[-1, m)`` where values can be read (under a
        trace, or on an accelerator, such a query gets a row of padding),
        a filter is not finite, or ``rank_range`` does not have
        ``0 <= lo < hi``.
    TypeError
        If ``k``, ``chunk_size`` or an end of ``rank_range`` is not an
        integer, a filter is not a real number, or ``positives`` is not an
        integer array.

    Notes
    -----
    A key whose similarity is NaN (a row holding NaN or inf) is never a
    negative; with a NaN query or positive every key fails a margin and
    the row is padding. The shapes are fixed: the function runs under
    ``jax.jit``, ``torch.compile(fullgraph=True)`` and ``torch.func`` as
    well as eagerly, on any device without reading a value, and lazily on
    Dask (one task per pair of chunks, merged in a tree). Ranks count
    among all non-positive keys, whatever the other filters: sentence-
    transformers counts them among the keys left after its filters.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> keys = np.array([[1.0, 0.0], [0.9, 0.1], [0.7, 0.7], [0.0, 1.0], [1.0, 0.05]])
    >>> queries = np.array([[1.0, 0.0]])
    >>> positives = np.array([0])
    >>> indices, similarities = ck.mine_hard_negatives(queries, keys, positives, k=2)
    >>> indices
    array([[4, 1]])
    >>> ck.mine_hard_negatives(queries, keys, positives, k=2, margin=0.05)[0]
    array([[2, 3]])

    """
    inputs = SearchInputs(
        queries,
        keys,
        xp,
        chunk_size,
        False,
        names=("queries", "keys", "positives"),
        others=(positives,),
    )
    xp = inputs.xp
    k = integer(k, "k")
    if not 1 <= k <= inputs.m:
        msg = f"k must be between 1 and the number of keys {inputs.m}, got {k}"
        raise ValueError(msg)
    window = _rank_range(rank_range)
    filters = [
        None if value is None else finite_real(value, name)
        for value, name in (
            (max_similarity, "max_similarity"),
            (margin, "margin"),
            (relative_margin, "relative_margin"),
        )
    ]
    held = _positives(inputs, positives)
    if inputs.n == 0:
        return (
            xp.empty((0, k), dtype=inputs.index_dtype, device=inputs.device),
            xp.empty((0, k), dtype=inputs.result_dtype, device=inputs.device),
        )
    compiled = compiled_on_jax(xp, inputs.mode, mine_hard_negatives, _STATIC)
    if compiled is not None:
        found: tuple[Array, Array] = compiled(
            queries,
            keys,
            positives,
            k=k,
            rank_range=None if rank_range is None else window,
            max_similarity=filters[0],
            margin=filters[1],
            relative_margin=filters[2],
            chunk_size=chunk_size,
        )
        return found
    caps = _caps(inputs, held, *filters)
    size = min(window[0] + k, inputs.m)
    count = caps is not None and (window[0] > 0 or window[1] is not None)
    extras = (held,) if caps is None else (held, caps)
    if inputs.lazy:
        indices, values = _dask_mining(inputs, extras, size, count, k, window)
    else:
        visitor = mining_visitor(
            xp, inputs.mode, size, caps is not None, count, inputs.m, inputs.queries
        )
        top_values, top_indices, counted = search_blocks(
            xp,
            inputs.mode,
            inputs.queries,
            inputs.keys,
            visitor,
            blocks=inputs.blocks(k=size),
            extras=extras,
        )
        indices, values = in_window(
            xp, top_values, top_indices, counted[:, 0] if count else None, k, *window
        )
    return indices, xp.astype(values, inputs.result_dtype, copy=False)
