"""Exact selection for the searches: the running top-k of each query, block by block.

Every search walks through blocks of similarities ``S`` (a block of queries
against a block of keys) and keeps, per query, the best ``k`` so far in
order ``(-similarity, key index)``. Two implementations share that state:

* **Eager with pruning** (reads free: NumPy, eager PyTorch on the CPU,
  array-api-strict; see ``_strategy.select.search_prunes``). *Threshold
  pruning*: the state's k-th value ``t`` of
  each query is known, and one vectorized compare ``S > t`` keeps only the
  candidates that can enter; after the first blocks these are a tiny
  fraction, so the cost is the matrix product plus one pass. Keys arrive
  in ascending index order, so a value equal to ``t`` loses the tie to the
  key already held and ``>`` (not ``>=``) is exact. The few candidates are
  merged with the state by one sort of ``(row, -value, index)``: the tie
  rule is enforced there, on a handful of values, never on the block.
  When a block has many candidates (the first block of each query block),
  the library's own top-k (``top_k_positions``) finds each row's k-th value
  of the block first and only values at or above it become candidates.
* **Fixed shapes** (JAX, under ``jit`` or not; ``torch.compile`` and
  ``torch.func``; eager accelerators, where a read would synchronize): every
  block is selected in full
  (``select_traced``) and merged with the state; JAX's ``lax.top_k`` keeps
  the lower index first among equal values, so there one top-k per block
  and one per merge are exact (see ``_strategy.select``).

Values are clipped to ``[-1, 1]`` before they are compared with each other,
so ``1.0000001`` and ``1.0`` tie (the smaller index wins), as in the
brute-force ``pairwise_cosine_similarity`` followed by a stable sort. Raw
values are compared with clipped thresholds only where that is
conservative (see ``_dense_floor``). NaN similarities never become
candidates in the eager path; a query with fewer than ``k`` numeric
similarities gets its remaining places filled by ``fill_empty`` with the
smallest free key indices and NaN values, which is where a stable sort
that ranks NaN last puts them.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._strategy.autodiff import clip_straight_through
from ._strategy.mode import Mode
from ._strategy.namespaces import index_dtype
from ._strategy.select import top_k_lower_index_first, top_k_positions

Array = Any

# A block whose candidates outnumber DENSE_FACTOR * k per query is first cut
# down by the library's top-k: sorting that many candidates costs more.
DENSE_FACTOR = 4

# The traced path ranks NaN similarities here: below every clipped value in
# [-1, 1], above the -inf that marks an excluded key (exclude_self).
NAN_RANK = -2.0


def _take_2d(xp: ModuleType, x: Array, positions: Array) -> Array:
    """``x[i, positions[i, j]]`` for 2-D arrays, with the standard's 1-D ``take`` only."""
    rows, width = positions.shape[0], x.shape[1]
    offsets = xp.arange(rows, dtype=positions.dtype, device=array_device(positions)) * width
    flat = xp.reshape(positions + xp.reshape(offsets, (rows, 1)), (-1,))
    return xp.reshape(xp.take(xp.reshape(x, (-1,)), flat), tuple(positions.shape))


def self_mask(
    xp: ModuleType, rows: int, columns: int, row_start: int, column_start: int, like: Array
) -> Array | None:
    """Where query ``row_start + i`` meets key ``column_start + j`` of the same index.

    None when the block does not touch the diagonal (no mask to build). The
    mask is built from ``arange``, so it is lazy- and trace-safe.
    """
    if row_start >= column_start + columns or column_start >= row_start + rows:
        return None
    device = array_device(like)
    shift = row_start - column_start
    row_index = xp.reshape(xp.arange(shift, shift + rows, device=device), (rows, 1))
    return row_index == xp.reshape(xp.arange(columns, device=device), (1, columns))


def empty_state(
    xp: ModuleType, rows: int, k: int, sentinel: int, like: Array
) -> tuple[Array, Array]:
    """The state before any key: values -inf, indices ``sentinel`` (past every key)."""
    device = array_device(like)
    values = xp.full((rows, k), -math.inf, dtype=like.dtype, device=device)
    return values, xp.full((rows, k), sentinel, dtype=index_dtype(xp), device=device)


def sort_triples(xp: ModuleType, rows: Array, values: Array, indices: Array) -> Array:
    """The order of the triples by row, then descending value, then index."""
    order = xp.argsort(indices, stable=True)
    order = xp.take(order, xp.argsort(-xp.take(values, order), stable=True))
    return xp.take(order, xp.argsort(xp.take(rows, order), stable=True))


def merge_candidates(
    xp: ModuleType,
    state: tuple[Array, Array],
    rows: Array,
    values: Array,
    indices: Array,
) -> tuple[Array, Array]:
    """The best ``k`` of each row among its state and its candidates.

    ``rows`` (ascending), ``values`` (clipped, no NaN) and ``indices`` are 1-D:
    candidate ``c`` belongs to row ``rows[c]``. One sort of all triples puts
    each row's entries together, best first; each row has at least ``k``
    (its state), so the first ``k`` of every row are taken by position.
    """
    best_values, best_indices = state
    n, k = best_values.shape
    row_dtype = rows.dtype
    state_rows = xp.reshape(
        xp.broadcast_to(xp.reshape(xp.arange(n, dtype=row_dtype), (n, 1)), (n, k)), (-1,)
    )
    all_rows = xp.concat((state_rows, rows))
    all_values = xp.concat((xp.reshape(best_values, (-1,)), values))
    all_indices = xp.concat(
        (xp.reshape(best_indices, (-1,)), xp.astype(indices, best_indices.dtype))
    )
    order = sort_triples(xp, all_rows, all_values, all_indices)
    # Row r starts after the k entries of every earlier row and their candidates.
    earlier = xp.searchsorted(rows, xp.arange(n, dtype=row_dtype))
    starts = xp.arange(n, dtype=row_dtype) * k + xp.astype(earlier, row_dtype)
    chosen = xp.take(
        order,
        xp.reshape(
            xp.reshape(starts, (n, 1)) + xp.reshape(xp.arange(k, dtype=row_dtype), (1, k)),
            (-1,),
        ),
    )
    return (
        xp.reshape(xp.take(all_values, chosen), (n, k)),
        xp.reshape(xp.take(all_indices, chosen), (n, k)),
    )


def _dense_floor(xp: ModuleType, similarity: Array, excluded: Array | None, k: int) -> Array:
    """Per row, a value below which no entry of the block can be among its best ``k``.

    The library's top-k finds the k-th largest raw value ``t`` (NaN and the
    excluded key count as -inf). Any entry below ``min(t, 1)`` is below ``k``
    others after clipping too; at ``t <= -1`` clipping can tie everything at
    -1, so no floor is used (-inf).
    """
    ranked = xp.where(xp.isnan(similarity), xp.full_like(similarity, -math.inf), similarity)
    if excluded is not None:
        ranked = xp.where(excluded, xp.full_like(ranked, -math.inf), ranked)
    width = similarity.shape[1]
    kth = xp.min(_take_2d(xp, ranked, top_k_positions(xp, ranked, min(k, width))), axis=1)
    floor = xp.where(kth <= -1.0, xp.full_like(kth, -math.inf), xp.minimum(kth, xp.ones_like(kth)))
    return xp.reshape(floor, (-1, 1))


def update_eager(
    xp: ModuleType,
    mode: Mode,
    state: tuple[Array, Array],
    similarity: Array,
    key_start: int,
    excluded: Array | None,
) -> tuple[Array, Array]:
    """Merge one block of raw similarities (keys from ``key_start`` on) into the state."""
    k = state[0].shape[1]
    rows_here, width = similarity.shape
    candidate = similarity > state[0][:, k - 1 : k]
    if excluded is not None:
        candidate = candidate & xp.logical_not(excluded)
    count = int(xp.count_nonzero(candidate))
    if count == 0:
        return state
    if count > DENSE_FACTOR * k * rows_here:
        candidate = candidate & (similarity >= _dense_floor(xp, similarity, excluded, k))
    rows, columns = xp.nonzero(candidate)
    values = xp.take(xp.reshape(similarity, (-1,)), rows * width + columns)
    values = clip_straight_through(xp, mode, values, -1.0, 1.0)
    return merge_candidates(xp, state, rows, values, columns + key_start)


def best_of_rows(xp: ModuleType, values: Array, indices: Array, k: int) -> tuple[Array, Array]:
    """The best ``k`` of each row of ``(values, indices)`` by ``(-value, index)``, eagerly."""
    n, width = values.shape
    if width <= k:
        return values, indices
    rows = xp.reshape(
        xp.broadcast_to(xp.reshape(xp.arange(n, dtype=indices.dtype), (n, 1)), (n, width)), (-1,)
    )
    order = sort_triples(xp, rows, xp.reshape(values, (-1,)), xp.reshape(indices, (-1,)))
    chosen = xp.reshape(xp.reshape(order, (n, width))[:, :k], (-1,))
    return (
        xp.reshape(xp.take(xp.reshape(values, (-1,)), chosen), (n, k)),
        xp.reshape(xp.take(xp.reshape(indices, (-1,)), chosen), (n, k)),
    )


FILL_ROWS = 4096


def fill_empty(
    xp: ModuleType, state: tuple[Array, Array], sentinel: int, row_start: int, exclude_self: bool
) -> tuple[Array, Array]:
    """Give places the search left empty the smallest free key indices, with NaN.

    A place stays empty only where a query has fewer than ``k`` numeric
    similarities (it or keys hold NaN or inf). Those keys rank last, among
    themselves by index: the smallest indices not already chosen (and not
    the query's own index with ``exclude_self``). Among the first ``2k + 1``
    indices at most ``k`` are taken, so ``k`` free ones are always there.
    Eager only (it reads whether any place is empty); rows go in blocks of
    ``FILL_ROWS`` to bound the ``(rows, 2k + 1, k)`` comparison.
    """
    values, indices = state
    if not bool(xp.any(indices == sentinel)):
        return state
    n = indices.shape[0]
    parts = [
        _fill_rows(
            xp,
            values[start : min(start + FILL_ROWS, n), :],
            indices[start : min(start + FILL_ROWS, n), :],
            sentinel,
            row_start + start,
            exclude_self,
        )
        for start in range(0, n, FILL_ROWS)
    ]
    return xp.concat([p[0] for p in parts], axis=0), xp.concat([p[1] for p in parts], axis=0)


def _fill_rows(
    xp: ModuleType,
    values: Array,
    indices: Array,
    sentinel: int,
    row_start: int,
    exclude_self: bool,
) -> tuple[Array, Array]:
    n, k = indices.shape
    width = min(sentinel, 2 * k + 1)
    dtype = indices.dtype
    device = array_device(indices)
    free_keys = xp.reshape(xp.arange(width, dtype=dtype, device=device), (1, width, 1))
    taken = xp.any(free_keys == xp.reshape(indices, (n, 1, k)), axis=2)
    if exclude_self:
        own = xp.reshape(xp.arange(row_start, row_start + n, dtype=dtype, device=device), (n, 1))
        taken = taken | (xp.reshape(free_keys, (1, width)) == own)
    first_free = xp.argsort(xp.astype(taken, xp.int8), axis=1, stable=True)
    empty = indices == sentinel
    held = k - xp.sum(xp.astype(empty, dtype), axis=1, keepdims=True)
    places = xp.reshape(xp.arange(k, dtype=dtype, device=device), (1, k)) - held
    fill = _take_2d(xp, first_free, xp.clip(places, min=0))
    return (
        xp.where(empty, xp.full_like(values, math.nan), values),
        xp.where(empty, xp.astype(fill, dtype), indices),
    )


def _select_ranked(xp: ModuleType, values: Array, indices: Array, k: int) -> tuple[Array, Array]:
    """The ``k`` largest ``values`` of each row, descending, ties to the smaller index.

    Portable form for traced code: a native top-k (``top_k_positions``) finds
    the k-th largest value ``t`` of each row, choosing any of the values equal
    to it; a second native top-k on an integer rank picks the exact set:
    values above ``t`` rank highest, values equal to ``t`` by smaller index,
    the rest lowest. Only the ``k`` winners are then sorted.
    """
    width = values.shape[1]
    k = min(k, width)
    candidates = top_k_positions(xp, values, k)
    threshold = xp.min(_take_2d(xp, values, candidates), axis=1, keepdims=True)
    info = xp.iinfo(indices.dtype)
    highest = xp.full_like(indices, info.max)
    lowest = xp.full_like(indices, info.min)
    rank = xp.where(values > threshold, highest, xp.where(values == threshold, -indices, lowest))
    chosen = top_k_positions(xp, rank, k)
    if indices.ndim == 1:
        index = xp.reshape(xp.take(indices, xp.reshape(chosen, (-1,))), tuple(chosen.shape))
    else:
        index = _take_2d(xp, indices, chosen)
    value = _take_2d(xp, values, chosen)
    # Indices are distinct in a row: sort by index, then stably by value.
    by_index = xp.argsort(index, axis=1)
    value, index = _take_2d(xp, value, by_index), _take_2d(xp, index, by_index)
    by_value = xp.argsort(-value, axis=1, stable=True)
    return _take_2d(xp, value, by_value), _take_2d(xp, index, by_value)


def select_traced(
    xp: ModuleType,
    mode: Mode,
    state: tuple[Array, Array] | None,
    similarity: Array,
    columns: Array,
    excluded: Array | None,
    k: int,
) -> tuple[Array, Array]:
    """Merge one block into the state with fixed shapes (no value is read).

    Similarities are clipped, NaN ranks as ``NAN_RANK`` and an excluded key
    as -inf (``k <= m - 1`` keeps it out of the result).
    """
    similarity = clip_straight_through(xp, mode, similarity, -1.0, 1.0)
    similarity = xp.where(xp.isnan(similarity), xp.full_like(similarity, NAN_RANK), similarity)
    if excluded is not None:
        similarity = xp.where(excluded, xp.full_like(similarity, -math.inf), similarity)
    native = top_k_lower_index_first(xp)
    if native is not None:
        # The state's keys all precede this block's, and each part is ordered
        # with ties by index: concatenated, position order is index order.
        values, positions = native(similarity, min(k, similarity.shape[1]))
        found = (values, xp.take(columns, positions))
        if state is None:
            return found
        values = xp.concat((state[0], found[0]), axis=1)
        indices = xp.concat((state[1], found[1]), axis=1)
        values, positions = native(values, min(k, values.shape[1]))
        return values, _take_2d(xp, indices, positions)
    found = _select_ranked(xp, similarity, columns, k)
    if state is None:
        return found
    return _select_ranked(
        xp,
        xp.concat((state[0], found[0]), axis=1),
        xp.concat((state[1], found[1]), axis=1),
        k,
    )
