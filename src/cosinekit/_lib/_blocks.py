"""The searches' blocks: validated inputs, block sizes, and unit-vector blocks.

Every search (top-k, range search) works through queries and keys in
blocks, so that memory is bounded by the blocks plus the result, never
``n x m``. This module holds what they share: the validated inputs with the
call's `Mode` (`SearchInputs`), the block sizes, and the row blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

from array_api_compat import device as array_device
from array_api_compat import is_array_api_obj

from ._kernels import unit_rows
from ._strategy.mode import Mode
from ._strategy.namespaces import index_dtype
from ._strategy.select import search_prunes
from ._validation import (
    flag,
    floating_dtypes,
    integer,
    known_size,
    namespace_of,
    real_number,
    resolve,
    rows_of,
)

Array = Any
Progress = Callable[[int, int], object]

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


def chunk_blocks(
    xp: ModuleType, queries: Array, keys: Array, chunk_size: int | None
) -> tuple[int, int]:
    """The block sizes inside one Dask task, for its concrete chunks."""
    itemsize = dtype_bytes(xp, queries.dtype)
    return block_rows(queries.shape[0], keys.shape[0], queries.shape[1], itemsize, chunk_size)


def unit_vectors(xp: ModuleType, mode: Mode, x: Array) -> Array:
    """The rows of ``x`` scaled to unit length (zero rows stay zero, NaN rows are NaN)."""
    return unit_rows(xp, mode, x, -1, None).unit


def block_starts(size: int, step: int) -> range:
    """The first row of every block of ``step`` rows."""
    return range(0, size, step)


def row_block(x: Array, start: int, step: int) -> Array:
    """Rows ``start`` to ``start + step`` of 2-D ``x`` (fewer at the end)."""
    # Stops past the end are not portable (array-api-strict rejects them).
    return x[start : min(start + step, x.shape[0]), :]


def dtype_bytes(xp: ModuleType, dtype: Any) -> int:
    """The size in bytes of one element of floating ``dtype``."""
    return int(xp.finfo(dtype).bits) // 8


class SearchInputs:
    """Validated search inputs: namespace, mode, dtypes, sizes, arrays in the compute dtype."""

    def __init__(
        self,
        queries: Array,
        keys: Array,
        xp: ModuleType | None,
        chunk_size: object,
        exclude_self: object,
    ) -> None:
        xp, mode = resolve(queries, keys, names=("queries", "keys"), xp=xp)
        self.xp, self.mode = xp, mode
        self.result_dtype, compute_dtype = floating_dtypes(xp, queries, keys)
        rows_of(queries, "queries")
        rows_of(keys, "keys")
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
        self.keys = xp.astype(keys, compute_dtype, copy=False)
        self.lazy = mode.lazy
        self.eager = mode.eager
        self.prune = search_prunes(xp, mode)

    def blocks(self) -> tuple[int, int]:
        """``(query rows, key rows)`` per block of this search."""
        d = int(self.queries.shape[1])
        itemsize = dtype_bytes(self.xp, self.queries.dtype)
        return block_rows(self.n, self.m, d, itemsize, self.chunk_size)

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
                f"{name} returns as many pairs as the data holds, a shape that depends on "
                "the values, which traced code (jax.jit, torch.func, array-api-strict "
                "without data-dependent shapes) cannot have; under torch.compile the call "
                "is a graph break and runs eagerly. Use cosine_topk with a fixed k there "
                "(and mask similarities below the threshold)"
            )
            raise TypeError(msg)

    def threshold(self, threshold: object) -> float:
        """``threshold`` as a Python float: a real number, or a 0-d real array read once."""
        value = real_number(threshold)
        if value is None and is_array_api_obj(threshold) and self.eager:
            namespace_of(self.queries, threshold, names=("queries", "threshold"), xp=None)
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
