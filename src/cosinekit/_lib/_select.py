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
  merged into the states of the rows that have any, by two stable sorts
  (value, then row: the state and the candidates are already in index
  order among equal values): the tie rule is enforced there, on a handful
  of values, never on the block. When a block has many candidates (the
  first block of each query block), the library's own selection
  (``kth_largest``) finds each row's k-th value of the block first and only
  values at or above it become candidates.
* **Fixed shapes** (JAX, under ``jit`` or not; ``torch.compile`` and
  ``torch.func``; eager accelerators, where a read would synchronize): every
  block is selected in full
  (``select_traced``) and merged with the state; JAX's ``lax.top_k`` keeps
  the lower index first among equal values, so there one top-k per block
  and one per merge are exact (see ``_strategy.select``).

Both run as visitors of the one loop over blocks (``_blocks.search_blocks``,
through ``_topk``); the rules of which keys a query never gets (itself, a
mining search's positives) are `Excluded` objects, applied to the few
candidates on the eager path and as a mask on the fixed-shape one.

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
from typing import TYPE_CHECKING, Any, Protocol

from array_api_compat import device as array_device

from ._strategy.autodiff import clip_straight_through
from ._strategy.mode import Mode
from ._strategy.namespaces import index_dtype
from ._strategy.select import (
    count_true,
    from_view,
    kth_largest,
    mask_view,
    nonzero_flat,
    top_k_lower_index_first,
    top_k_positions,
)

if TYPE_CHECKING:
    from ._blocks import Block

Array = Any

# A block whose candidates outnumber DENSE_FACTOR * k per query is first cut
# down by the library's top-k: sorting that many candidates costs more.
DENSE_FACTOR = 4

# The traced path ranks NaN similarities here: below every clipped value in
# [-1, 1], above the -inf that marks an excluded key (exclude_self).
NAN_RANK = -2.0


def nonzero_2d(xp: ModuleType, namespace: ModuleType, mask: Array) -> tuple[Array, Array, Array]:
    """``(flat positions, rows, columns)`` of the True entries of 2-D ``mask``, row by row.

    ``mask`` lives in ``namespace`` (a `mask_view`); the positions come back
    as arrays of ``xp``. One ``nonzero`` of the flattened mask: NumPy finds
    the positions of a mostly-False 2-D mask about ten times faster flat
    than as two coordinate arrays, and the few rows and columns follow by
    division.
    """
    width = mask.shape[1]
    flat = from_view(xp, nonzero_flat(namespace, mask))
    rows = flat // width
    return flat, rows, flat - rows * width


def take_2d(xp: ModuleType, x: Array, positions: Array) -> Array:
    """``x[i, positions[i, j]]`` for 2-D arrays, with the standard's 1-D ``take`` only."""
    rows, width = positions.shape[0], x.shape[1]
    offsets = xp.arange(rows, dtype=positions.dtype, device=array_device(positions)) * width
    flat = xp.reshape(positions + xp.reshape(offsets, (rows, 1)), (-1,))
    return xp.reshape(xp.take(xp.reshape(x, (-1,)), flat), tuple(positions.shape))


class Excluded(Protocol):
    """Keys that a search never returns for some queries (itself, positives, ...)."""

    def dense(self, xp: ModuleType, block: Block) -> Array | None:
        """``(rows, columns)``, True where the block's key is excluded; None: none is."""

    def among(self, xp: ModuleType, block: Block, rows: Array, columns: Array) -> Array | None:
        """For candidates at ``(rows, columns)`` of the block (1-D), True where excluded."""


class SelfExcluded:
    """``exclude_self``: query ``i`` never gets key ``i``."""

    def dense(self, xp: ModuleType, block: Block) -> Array | None:
        rows, columns = block.similarity.shape
        return self_mask(xp, rows, columns, block.row, block.column, block.similarity)

    def among(self, xp: ModuleType, block: Block, rows: Array, columns: Array) -> Array | None:
        height, width = block.similarity.shape
        if not meets_diagonal(height, width, block.row, block.column):
            return None
        return rows + (block.row - block.column) == columns


def meets_diagonal(rows: int, columns: int, row_start: Any, column_start: Any) -> bool:
    """Whether some query ``row_start + i`` meets key ``row_start + i`` (True if traced)."""
    if not (isinstance(row_start, int) and isinstance(column_start, int)):
        return True
    return row_start < column_start + columns and column_start < row_start + rows


def self_mask(
    xp: ModuleType, rows: int, columns: int, row_start: Any, column_start: Any, like: Array
) -> Array | None:
    """Where query ``row_start + i`` meets key ``column_start + j`` of the same index.

    None when the block does not touch the diagonal (no mask to build). The
    mask is built from ``arange``, so it is lazy- and trace-safe (the starts
    may be traced integers inside a compiled loop).
    """
    if not meets_diagonal(rows, columns, row_start, column_start):
        return None
    device = array_device(like)
    row_index = xp.reshape(xp.arange(rows, device=device) + (row_start - column_start), (rows, 1))
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
    candidate ``c`` belongs to row ``rows[c]``. Only the rows that have
    candidates are merged (after the first blocks, a few of them): their
    states are taken out, merged, and put back by one ``take``.
    """
    best_values, best_indices = state
    n = best_values.shape[0]
    row_dtype = rows.dtype
    first = xp.concat((xp.ones((1,), dtype=xp.bool), rows[1:] != rows[:-1]))
    touched = xp.take(rows, nonzero_flat(xp, first))
    count = touched.shape[0]
    if 2 * count > n:
        return _merge_rows(xp, state, rows, values, indices)
    # Each candidate's place among the touched rows (rows ascend).
    local = xp.cumulative_sum(xp.astype(first, row_dtype)) - 1
    merged = _merge_rows(
        xp,
        (xp.take(best_values, touched, axis=0), xp.take(best_indices, touched, axis=0)),
        local,
        values,
        indices,
    )
    every = xp.arange(n, dtype=row_dtype)
    place = xp.searchsorted(touched, every)
    hit = xp.take(touched, xp.clip(place, max=count - 1)) == every
    source = xp.where(hit, xp.astype(place, row_dtype) + n, every)
    return (
        xp.take(xp.concat((best_values, merged[0]), axis=0), source, axis=0),
        xp.take(xp.concat((best_indices, merged[1]), axis=0), source, axis=0),
    )


def _merge_rows(
    xp: ModuleType,
    state: tuple[Array, Array],
    rows: Array,
    values: Array,
    indices: Array,
) -> tuple[Array, Array]:
    """`merge_candidates` of every row.

    One sort of all triples puts each row's entries together, best first;
    each row has at least ``k`` (its state), so the first ``k`` of every
    row are taken by position.
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
    # Among equal values of a row the joined order is already by index: the
    # state is (by value, then index), and every candidate's key comes after
    # the state's (keys arrive in ascending order), in ascending order.
    order = xp.argsort(-all_values, stable=True)
    order = xp.take(order, xp.argsort(xp.take(all_rows, order), stable=True))
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
    excluded keys count as -inf). Any entry below ``min(t, 1)`` is below
    ``k`` others after clipping too; at ``t <= -1`` clipping can tie
    everything at -1, so no floor is used (-inf).
    """
    ranked = xp.where(xp.isnan(similarity), xp.full_like(similarity, -math.inf), similarity)
    if excluded is not None:
        ranked = xp.where(excluded, xp.full_like(ranked, -math.inf), ranked)
    kth = kth_largest(xp, ranked, min(k, similarity.shape[1]))
    floor = xp.where(kth <= -1.0, xp.full_like(kth, -math.inf), xp.minimum(kth, xp.ones_like(kth)))
    return xp.reshape(floor, (-1, 1))


def update_eager(
    xp: ModuleType,
    mode: Mode,
    state: tuple[Array, Array],
    block: Block,
    excluded: Excluded | None,
) -> tuple[Array, Array]:
    """Merge one block of raw similarities into the state, reading values (pruning)."""
    k = state[0].shape[1]
    similarity = block.similarity
    rows_here = similarity.shape[0]
    # The masks in the namespace that computes them fastest (see mask_view).
    namespace, view = mask_view(xp, similarity)
    candidate = view > mask_view(xp, state[0][:, k - 1 : k])[1]
    count = count_true(namespace, candidate)
    if count == 0:
        return state
    if count > DENSE_FACTOR * k * rows_here:
        dense = None if excluded is None else excluded.dense(xp, block)
        dense = None if dense is None else mask_view(xp, dense)[1]
        candidate = candidate & (view >= _dense_floor(namespace, view, dense, k))
    flat, rows, columns = nonzero_2d(xp, namespace, candidate)
    dropped = None if excluded is None else excluded.among(xp, block, rows, columns)
    if dropped is not None:
        kept = nonzero_flat(xp, xp.logical_not(dropped))
        if kept.shape[0] == 0:
            return state
        flat, rows, columns = (xp.take(a, kept) for a in (flat, rows, columns))
    values = xp.take(xp.reshape(similarity, (-1,)), flat)
    values = clip_straight_through(xp, mode, values, -1.0, 1.0)
    return merge_candidates(xp, state, rows, values, columns + block.column)


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


def fill_empty(
    xp: ModuleType, state: tuple[Array, Array], sentinel: int, row_start: int, exclude_self: bool
) -> tuple[Array, Array]:
    """Give places the search left empty the smallest free key indices, with NaN.

    A place stays empty (index ``sentinel``, value -inf, at the end of its
    row) only where a query has fewer than ``k`` numeric similarities (it
    or keys hold NaN or inf). Those keys rank last, among themselves by
    index: the smallest indices not already chosen (and not the query's
    own index with ``exclude_self``). With the row's held indices sorted,
    ``h_0 < h_1 < ...``, the ``c``-th free index is ``c`` plus the number of
    ``j`` with ``h_j - j <= c``; that count is one ``searchsorted`` of all
    rows at once (each row shifted past the previous), so memory stays a
    few ``(rows, k)`` arrays whatever ``k``. Eager only (it reads whether
    any place is empty).
    """
    values, indices = state
    empty = indices == sentinel
    if not bool(xp.any(empty)):
        return state
    n, k = indices.shape
    dtype, device = indices.dtype, array_device(indices)
    # Empty places sort last and never count: past every free index.
    past = sentinel + 2 * k + 2
    held = xp.where(empty, xp.full_like(indices, past), indices)
    if exclude_self:
        own = xp.arange(row_start, row_start + n, dtype=dtype, device=device)
        held = xp.concat((held, xp.reshape(own, (n, 1))), axis=1)
    held = xp.sort(held, axis=1)
    width = held.shape[1]
    rank = xp.reshape(xp.arange(width, dtype=dtype, device=device), (1, width))
    key = xp.where(held >= past, xp.full_like(held, past), held - rank)
    stride = past + k + 1
    shift = xp.reshape(xp.arange(n, dtype=dtype, device=device) * stride, (n, 1))
    place = xp.reshape(xp.arange(k, dtype=dtype, device=device), (1, k))
    found = xp.searchsorted(
        xp.reshape(key + shift, (-1,)), xp.reshape(place + shift, (-1,)), side="right"
    )
    counted = xp.reshape(xp.astype(found, dtype), (n, k)) - xp.reshape(
        xp.arange(n, dtype=dtype, device=device) * width, (n, 1)
    )
    free = place + counted
    filled = k - xp.sum(xp.astype(empty, dtype), axis=1, keepdims=True)
    fill = take_2d(xp, free, xp.clip(place - filled, min=0))
    return (
        xp.where(empty, xp.full_like(values, math.nan), values),
        xp.where(empty, fill, indices),
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
    threshold = xp.min(take_2d(xp, values, candidates), axis=1, keepdims=True)
    info = xp.iinfo(indices.dtype)
    highest = xp.full_like(indices, info.max)
    lowest = xp.full_like(indices, info.min)
    rank = xp.where(values > threshold, highest, xp.where(values == threshold, -indices, lowest))
    chosen = top_k_positions(xp, rank, k)
    if indices.ndim == 1:
        index = xp.reshape(xp.take(indices, xp.reshape(chosen, (-1,))), tuple(chosen.shape))
    else:
        index = take_2d(xp, indices, chosen)
    value = take_2d(xp, values, chosen)
    # Indices are distinct in a row: sort by index, then stably by value.
    by_index = xp.argsort(index, axis=1)
    value, index = take_2d(xp, value, by_index), take_2d(xp, index, by_index)
    by_value = xp.argsort(-value, axis=1, stable=True)
    return take_2d(xp, value, by_value), take_2d(xp, index, by_value)


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
        return values, take_2d(xp, indices, positions)
    found = _select_ranked(xp, similarity, columns, k)
    if state is None:
        return found
    return _select_ranked(
        xp,
        xp.concat((state[0], found[0]), axis=1),
        xp.concat((state[1], found[1]), axis=1),
        k,
    )
