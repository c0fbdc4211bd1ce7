"""The searches' blocks: validated inputs, block sizes, and the one loop over blocks.

Every search (top-k, range search, similar pairs, communities, hard
negatives) works through queries and keys in blocks, so that memory is
bounded by the blocks plus the result, never ``n x m``. This module holds
what they share: the validated inputs with the call's `Mode`
(`SearchInputs`), the block sizes, and `search_blocks`, the one loop over
blocks. Each search supplies a `Visitor` that says what it keeps per query
block (a running top-k, the qualifying pairs) and what it does with each
block of similarities; the loop normalizes the rows, multiplies the blocks
and hands them over.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeVar

from array_api_compat import device as array_device
from array_api_compat import is_array_api_obj

from ._kernels import unit_rows
from ._strategy.loops import BlockLoops, block_loops
from ._strategy.mode import Mode
from ._strategy.namespaces import index_dtype
from ._strategy.select import search_prunes
from ._validation import (
    flag,
    floating_dtypes,
    known_size,
    namespace_of,
    positive_integer,
    real_number,
    resolve,
    rows_of,
)

Array = Any
Progress = Callable[[int, int], object]
State = TypeVar("State")

# Default blocks: one block of similarities holds at most BLOCK_BYTES (1,024
# queries against 2,048 keys in float32) in a top-k, PAIR_BLOCK_BYTES (1,024
# against 4,096) in the searches for pairs, whose blocks need fewer
# temporaries (a mask, no partitioned copy); a block of unit keys at most
# KEY_BLOCK_BYTES, and the unit
# queries are kept for the whole search when they fit in UNIT_QUERY_BYTES
# (else normalized per block). With the temporaries of one block the blocks
# stay within 64 MiB whatever n, m and the values (measured by
# benchmarks/search.py and the memory tests).
BLOCK_BYTES = 2**23
PAIR_BLOCK_BYTES = 2**24
QUERY_ROWS = 1024
# A top-k keeps (query rows, k) per query block and merges candidates into
# it by sorting a few times that: fewer query rows for a large k.
STATE_VALUES = 2**18
KEY_BLOCK_BYTES = 2**24
UNIT_QUERY_BYTES = 2**24


def block_rows(
    n: int,
    m: int,
    d: int,
    itemsize: int,
    chunk_size: int | None,
    *,
    pairs: bool = False,
    k: int = 1,
) -> tuple[int, int]:
    """``(query rows, key rows)`` per block: ``chunk_size`` for both, or the defaults.

    ``pairs``: the blocks of a search for pairs above a threshold (the same
    for a collection against itself: square blocks, which waste less on
    the diagonal, multiplied no faster). ``k`` is the size of a top-k kept
    per query.
    """
    if chunk_size is not None:
        return chunk_size, chunk_size
    values = (PAIR_BLOCK_BYTES if pairs else BLOCK_BYTES) // itemsize
    most_rows = max(1, KEY_BLOCK_BYTES // max(1, d * itemsize))
    query_rows = max(1, min(n, QUERY_ROWS, most_rows, max(16, STATE_VALUES // k)))
    key_rows = min(max(1, values // query_rows), most_rows)
    return query_rows, max(1, min(m, key_rows))


def chunk_blocks(
    xp: ModuleType,
    queries: Array,
    keys: Array,
    chunk_size: int | None,
    *,
    pairs: bool = False,
    k: int = 1,
) -> tuple[int, int]:
    """The block sizes inside one Dask task, for its concrete chunks."""
    itemsize = dtype_bytes(xp, queries.dtype)
    n, m, d = queries.shape[0], keys.shape[0], queries.shape[1]
    return block_rows(n, m, d, itemsize, chunk_size, pairs=pairs, k=k)


def unit_vectors(xp: ModuleType, mode: Mode, x: Array) -> Array:
    """The rows of ``x`` scaled to unit length (zero rows stay zero, NaN rows are NaN)."""
    return unit_rows(xp, mode, x, -1, None).unit


def block_starts(size: int, step: int) -> range:
    """The first row of every block of ``step`` rows."""
    return range(0, size, step)


def row_block(x: Array, start: int, step: int) -> Array:
    """Rows ``start`` to ``start + step`` of ``x`` (fewer at the end)."""
    # Stops past the end are not portable (array-api-strict rejects them).
    return x[start : min(start + step, x.shape[0]), ...]


def dtype_bytes(xp: ModuleType, dtype: Any) -> int:
    """The size in bytes of one element of floating ``dtype``."""
    return int(xp.finfo(dtype).bits) // 8


@dataclass(frozen=True)
class Block:
    """One block of a search: the similarities of some queries with some keys.

    ``similarity`` holds the raw dot products of the unit rows (not yet
    clipped), ``row`` and ``column`` are the first query and key of the
    block in the whole search (Python integers, or traced ones inside a
    compiled loop). ``padded`` marks the columns past the last key, where a
    compiled loop pads its last block (None: no such column). ``extras``
    are the per-query arrays of the search, cut to the block's rows.
    """

    similarity: Array
    row: Any
    column: Any
    unit_queries: Array
    unit_keys: Array
    padded: Array | None = None
    extras: tuple[Array, ...] = ()


class Visitor(Protocol[State]):
    """What one search does: its state per query block, each block, and the end."""

    def start(self, rows: int) -> State:
        """The state of a query block of ``rows`` rows before any key."""

    def visit(self, state: State, block: Block) -> State:
        """The state after one more block of keys (keys come in ascending order)."""

    def finish(self, state: State, row: Any, rows: int) -> tuple[Array, ...]:
        """The query block's results (joined along axis 0 with the other blocks')."""


def search_blocks(
    xp: ModuleType,
    mode: Mode,
    queries: Array,
    keys: Array | None,
    visitor: Visitor[Any],
    *,
    blocks: tuple[int, int],
    offsets: tuple[int, int] = (0, 0),
    triangle: bool = False,
    extras: tuple[Array, ...] = (),
    progress: Progress | None = None,
) -> tuple[Array, ...]:
    """Run ``visitor`` over every block of ``queries`` against ``keys``.

    ``keys=None`` searches ``queries`` against itself (one set of unit
    rows serves both). ``offsets`` place the rows in a larger search (a
    Dask chunk). With ``triangle`` only the blocks holding a pair ``i < j``
    are visited (a collection against itself). ``extras`` are per-query
    arrays handed to the visitor with each block's rows. ``progress`` is
    called after each block of keys. Returns the visitor's results of
    every query block, joined.

    Keys are the outer loop, so that each key block is normalized once.
    Under a JAX trace the loops are compiled loops instead (see
    ``_strategy.loops``), so that the program does not grow with the
    number of blocks.
    """
    if queries.shape[0] == 0:
        return visitor.finish(visitor.start(0), offsets[0], 0)
    loops = block_loops(xp, mode)
    if loops is not None and not triangle:
        return _compiled(xp, mode, loops, queries, keys, visitor, blocks, extras)
    n = queries.shape[0]
    m = n if keys is None else keys.shape[0]
    query_rows, key_rows = blocks
    row_offset, column_offset = offsets
    starts = list(block_starts(n, query_rows))
    itemsize = dtype_bytes(xp, queries.dtype)
    cached = (
        unit_vectors(xp, mode, queries)
        if n * queries.shape[1] * itemsize <= UNIT_QUERY_BYTES
        else None
    )

    def unit_block(source: Array | None, start: int, step: int) -> Array:
        if source is None and cached is not None:
            return row_block(cached, start, step)
        rows = row_block(queries if source is None else source, start, step)
        return unit_vectors(xp, mode, rows)

    states = [visitor.start(min(query_rows, n - row)) for row in starts]
    for column in block_starts(m, key_rows):
        unit_keys = unit_block(keys, column, key_rows)
        last = column_offset + column + unit_keys.shape[0] - 1
        transposed = xp.matrix_transpose(unit_keys)
        for i, row in enumerate(starts):
            if triangle and last <= row_offset + row:
                break  # no pair i < j in this block, nor in any later one
            unit_queries = unit_block(None, row, query_rows)
            block = Block(
                xp.matmul(unit_queries, transposed),
                row_offset + row,
                column_offset + column,
                unit_queries,
                unit_keys,
                None,
                tuple(row_block(extra, row, query_rows) for extra in extras),
            )
            states[i] = visitor.visit(states[i], block)
        if progress is not None:
            progress(min(column + key_rows, m), m)
    finished = []
    for i, row in enumerate(starts):
        finished.append(visitor.finish(states[i], row_offset + row, min(query_rows, n - row)))
        states[i] = None  # the block's state is no longer needed
    return join_parts(xp, finished)


def _padded(xp: ModuleType, x: Array, rows: int) -> Array:
    """``x`` with zero rows appended up to ``rows`` rows."""
    missing = rows - x.shape[0]
    if missing == 0:
        return x
    zeros = xp.zeros((missing, *x.shape[1:]), dtype=x.dtype, device=array_device(x))
    return xp.concat((x, zeros), axis=0)


def _compiled(
    xp: ModuleType,
    mode: Mode,
    loops: BlockLoops,
    queries: Array,
    keys: Array | None,
    visitor: Visitor[Any],
    blocks: tuple[int, int],
    extras: tuple[Array, ...],
) -> tuple[Array, ...]:
    """`search_blocks` as compiled loops: one copy of the block program, however many blocks.

    Queries and keys are normalized once and padded with zero rows to whole
    blocks; the padded keys are marked (``Block.padded``) and the padded
    queries' results cut off.
    """
    n = queries.shape[0]
    m = n if keys is None else keys.shape[0]
    query_rows, key_rows = blocks
    query_count, key_count = -(-n // query_rows), -(-m // key_rows)
    unit_queries = unit_vectors(xp, mode, queries)
    unit_keys = unit_queries if keys is None else unit_vectors(xp, mode, keys)
    unit_queries = _padded(xp, unit_queries, query_count * query_rows)
    unit_keys = _padded(xp, unit_keys, key_count * key_rows)
    extras = tuple(_padded(xp, extra, query_count * query_rows) for extra in extras)
    positions = xp.reshape(xp.arange(key_rows, device=array_device(queries)), (1, key_rows))

    def query_block(index: Array) -> tuple[Array, ...]:
        row = index * query_rows
        own = loops.rows(unit_queries, row, query_rows)
        own_extras = tuple(loops.rows(extra, row, query_rows) for extra in extras)

        def step(state: Any, key_index: Array) -> Any:
            column = key_index * key_rows
            block_keys = loops.rows(unit_keys, column, key_rows)
            padded = None if m % key_rows == 0 else positions + column >= m
            similarity = xp.matmul(own, xp.matrix_transpose(block_keys))
            block = Block(similarity, row, column, own, block_keys, padded, own_extras)
            return visitor.visit(state, block)

        state = loops.fold(step, visitor.start(query_rows), key_count)
        return visitor.finish(state, row, query_rows)

    stacked = loops.map(query_block, query_count)
    return tuple(
        xp.reshape(part, (query_count * query_rows, *part.shape[2:]))[:n, ...] for part in stacked
    )


def join_parts(xp: ModuleType, parts: list[tuple[Array, ...]]) -> tuple[Array, ...]:
    """Each field of ``parts`` joined along axis 0, dropping the pieces as each is joined.

    ``parts`` is emptied: its arrays are released field by field, so that
    joining needs the pieces of one field at most beside the result.
    """
    if len(parts) == 1:
        return parts.pop()
    fields = [list(field) for field in zip(*parts, strict=True)]
    parts.clear()
    joined = []
    for field in fields:
        joined.append(xp.concat(field, axis=0))
        field.clear()
    return tuple(joined)


class SearchInputs:
    """Validated search inputs: namespace, mode, dtypes, sizes, arrays in the compute dtype.

    ``keys=None`` is a collection searched against itself (``names`` then
    holds one name, used in every message). ``others`` are further array
    arguments (a mining search's positives), named after the inputs.
    """

    def __init__(
        self,
        queries: Array,
        keys: Array | None,
        xp: ModuleType | None,
        chunk_size: object,
        exclude_self: object,
        *,
        names: tuple[str, ...] = ("queries", "keys"),
        others: tuple[Array, ...] = (),
    ) -> None:
        arrays = (queries,) if keys is None else (queries, keys)
        # Every array argument decides the namespace and mode (``others``
        # are named after the inputs in ``names``).
        xp, mode = resolve(*arrays, *others, names=names, xp=xp)
        self.xp, self.mode, self.names = xp, mode, names
        self.result_dtype, compute_dtype = floating_dtypes(xp, *arrays)
        for array, name in zip(arrays, names, strict=False):
            rows_of(array, name)
        if keys is not None and queries.shape[1] != keys.shape[1]:
            msg = (
                f"{names[0]} and {names[1]} must have the same number of features, got shapes "
                f"{tuple(queries.shape)} and {tuple(keys.shape)}"
            )
            raise ValueError(msg)
        self.n = known_size(queries, 0, names[0])
        self.m = self.n if keys is None else known_size(keys, 0, names[1])
        self.chunk_size = (
            None if chunk_size is None else positive_integer(chunk_size, "chunk_size")
        )
        self.exclude_self = flag(exclude_self, "exclude_self")
        if self.exclude_self and self.n > self.m:
            msg = (
                "exclude_self=True needs queries and keys to index one collection "
                f"(n <= m), got {self.n} queries and {self.m} keys"
            )
            raise ValueError(msg)
        self.index_dtype = index_dtype(xp)
        self.device = array_device(queries)
        self.queries = xp.astype(queries, compute_dtype, copy=False)
        self.keys = None if keys is None else xp.astype(keys, compute_dtype, copy=False)
        self.lazy = mode.lazy
        self.eager = mode.eager
        self.prune = search_prunes(xp, mode)

    def blocks(self, *, pairs: bool = False, k: int = 1) -> tuple[int, int]:
        """``(query rows, key rows)`` per block of this search (see `block_rows`)."""
        d = int(self.queries.shape[1])
        itemsize = dtype_bytes(self.xp, self.queries.dtype)
        return block_rows(self.n, self.m, d, itemsize, self.chunk_size, pairs=pairs, k=k)

    def check_progress(self, progress: object) -> Progress | None:
        """``progress`` as a callable, where an eager search can call it between blocks."""
        if progress is None:
            return None
        if not callable(progress):
            msg = f"progress must be None or a callable, got {type(progress).__name__}"
            raise TypeError(msg)
        if not self.eager:
            where = (
                "Dask arrays report progress through Dask's diagnostics "
                "(dask.diagnostics.ProgressBar, or distributed's progress and dashboard)"
                if self.lazy
                else "a traced search (jax.jit, torch.func, array-api-strict without "
                "data-dependent shapes) has no moment to call it"
            )
            msg = f"progress is called between the blocks of an eager search; {where}"
            raise TypeError(msg)
        checked: Progress = progress
        return checked

    def require_value_dependent_shapes(self, name: str) -> None:
        """Refuse a traced call of a search whose result size depends on the values."""
        if not self.lazy and not self.eager:
            msg = (
                f"{name} returns a result whose size depends on the values, which traced "
                "code (jax.jit, torch.func, array-api-strict without data-dependent "
                "shapes) cannot have; under torch.compile the call is a graph break and "
                "runs eagerly. Use cosine_topk with a fixed k there (and mask "
                "similarities below the threshold)"
            )
            raise TypeError(msg)

    def threshold(self, threshold: object) -> float:
        """``threshold`` as a Python float: a real number, or a 0-d real array read once."""
        value = real_number(threshold)
        if value is None and is_array_api_obj(threshold) and self.eager:
            namespace_of(self.queries, threshold, names=(self.names[0], "threshold"), xp=None)
            array: Array = threshold
            if array.ndim == 0 and self.xp.isdtype(array.dtype, ("real floating", "integral")):
                value = float(array)
        if value is None:
            msg = (
                "threshold must be a real number, or a 0-d real array where values can be "
                f"read (eager), got {type(threshold).__name__}"
            )
            raise TypeError(msg)
        if math.isnan(value):
            msg = "threshold must not be NaN"
            raise ValueError(msg)
        return value
