"""Searches on Dask: one task per (query chunk, key chunk), with the chunk's own eager kernel.

The portable fixed-shape path would build one small task per operation per
block and select every block in full. Instead each task runs the eager
search of the chunk's own library on concrete blocks (threshold pruning
needs values, which a task has), where the key chunk lives, and the small
per-task results are combined: ``(n, k)`` top-k states merged in a tree,
pairs concatenated in order. Nothing is computed before the caller asks.

Kernels are called as ``kernel(chunk_xp, query_chunk, key_chunk,
query_start, key_start)``, where ``chunk_xp`` is the namespace of the
chunks (NumPy, or CuPy for a Dask array of CuPy chunks) and the starts
place the chunk's rows in the whole search.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import array_namespace

Array = Any
ChunkKernel = Callable[[ModuleType, Array, Array, int, int], Any]


def _starts(chunks: tuple[int, ...]) -> Array:
    import dask.array as da

    return da.from_array(np.cumsum((0, *chunks[:-1])), chunks=1)


def dask_search_chunks(
    queries: Array,
    keys: Array,
    kernel: ChunkKernel,
    merge: Callable[[ModuleType, Array], Array],
    finish: Callable[[ModuleType, Array, int], Array],
    width: int,
) -> Array:
    """Search every key chunk where it lives, then merge the results in a tree.

    ``kernel`` returns a ``(rows, width)`` float64 block; ``merge(chunk_xp,
    block)`` turns ``(rows, 2 * width)`` (two neighbours side by side) into
    ``(rows, width)``; ``finish(chunk_xp, block, query_start)`` runs once on
    the merged result. Never more than two partial results meet in one
    task, so no task holds ``n x m`` values.
    """
    import dask.array as da

    queries = queries.rechunk({1: -1})
    keys = keys.rechunk({1: -1})

    def search_block(query: Array, key: Array, query_start: Array, key_start: Array) -> Array:
        chunk_xp = array_namespace(query, key)
        return kernel(chunk_xp, query, key, int(query_start[0]), int(key_start[0]))

    partial = da.blockwise(
        search_block,
        "qj",
        queries,
        "qd",
        keys,
        "jd",
        _starts(queries.chunks[0]),
        "q",
        _starts(keys.chunks[0]),
        "j",
        dtype=np.float64,
        adjust_chunks={"j": lambda _: width},
        concatenate=True,
        align_arrays=False,
        meta=da.utils.meta_from_array(queries, ndim=2, dtype=np.float64),
    )
    while partial.numblocks[1] > 1:
        pairs = partial.rechunk({1: 2 * width})
        partial = pairs.map_blocks(
            lambda block: merge(array_namespace(block), block),
            chunks=(pairs.chunks[0], (width,) * pairs.numblocks[1]),
            dtype=np.float64,
        )

    def finish_block(block: Array, query_start: Array) -> Array:
        return finish(array_namespace(block), block, int(query_start[0]))

    return da.blockwise(
        finish_block,
        "qj",
        partial,
        "qj",
        _starts(queries.chunks[0]),
        "q",
        dtype=np.float64,
        align_arrays=False,
    )


def dask_search_pairs(
    queries: Array,
    keys: Array,
    kernel: ChunkKernel,
    combine: Callable[[ModuleType, list[tuple[Array, Array, Array]]], tuple[Array, Array, Array]],
    index_dtype: Any,
) -> tuple[Array, Array, Array]:
    """Lazy 1-D results of unknown length: one task per (query chunk, key chunk).

    ``kernel`` returns ``(query_indices, key_indices, values)`` of its pair
    of chunks; ``combine(chunk_xp, parts)`` orders the parts of one query
    chunk. The query chunks' results are concatenated in order.
    """
    import dask
    import dask.array as da

    queries = queries.rechunk({1: -1})
    keys = keys.rechunk({1: -1})
    query_starts = np.cumsum((0, *queries.chunks[0][:-1]))
    key_starts = np.cumsum((0, *keys.chunks[0][:-1]))
    key_chunks = keys.to_delayed()[:, 0]

    def search(query: Array, key: Array, query_start: int, key_start: int) -> Any:
        return kernel(array_namespace(query, key), query, key, query_start, key_start)

    def ordered(parts: list[tuple[Array, Array, Array]]) -> tuple[Array, Array, Array]:
        return combine(array_namespace(parts[0][2]), parts)

    outputs: tuple[list[Array], list[Array], list[Array]] = ([], [], [])
    for query_chunk, query_start in zip(queries.to_delayed()[:, 0], query_starts, strict=True):
        parts = [
            dask.delayed(search)(query_chunk, key_chunk, int(query_start), int(key_start))
            for key_chunk, key_start in zip(key_chunks, key_starts, strict=True)
        ]
        combined = dask.delayed(ordered, nout=3)(parts)
        for output, part, dtype in zip(
            outputs, combined, (index_dtype, index_dtype, queries.dtype), strict=True
        ):
            meta = da.utils.meta_from_array(queries, ndim=1, dtype=dtype)
            output.append(da.from_delayed(part, shape=(math.nan,), dtype=dtype, meta=meta))
    query_indices, key_indices, values = (da.concatenate(output) for output in outputs)
    return query_indices, key_indices, values
