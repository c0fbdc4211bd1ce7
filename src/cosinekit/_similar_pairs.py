"""Similar pairs within one collection: deduplication and paraphrase mining."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ._lib._blocks import SearchInputs, join_parts
from ._lib._qualify import chunk_triangle_search, ordered_pairs, triangle_pairs
from ._lib._strategy.dask import dask_search_pairs
from ._lib._strategy.loops import from_host, host_namespace, to_host
from ._lib._strategy.mode import eager_under_compile

Array = Any
Pairs = tuple[Array, Array, Array]

__all__ = ["cosine_similar_pairs"]


def by_similarity(xp: ModuleType, found: list[Array]) -> Pairs:
    """Pairs in ``(i, j)`` order put in descending similarity, then ``i``, then ``j``.

    One stable sort of the similarities; ``found`` (``[i, j, values]``) is
    emptied array by array as the ordered copies are made, so that the
    inputs and the result are never both whole.
    """
    order = xp.argsort(-found[2], stable=True)
    ordered = [xp.take(found.pop(0), order) for _ in range(3)]
    return ordered[0], ordered[1], ordered[2]


def _dask_similar_pairs(inputs: SearchInputs, threshold: float) -> Pairs:
    search = chunk_triangle_search(inputs.chunk_size, threshold, order="pairs")

    def combine(chunk_xp: ModuleType, parts: list[tuple[Array, ...]]) -> tuple[Array, ...]:
        found = ordered_pairs(chunk_xp, list(join_parts(chunk_xp, list(parts))), "pairs")
        return by_similarity(chunk_xp, list(found))

    def finish(chunk_xp: ModuleType, parts: list[tuple[Array, ...]]) -> tuple[Array, ...]:
        # Each query chunk is in order and holds smaller i than the next.
        return by_similarity(chunk_xp, list(join_parts(chunk_xp, list(parts))))

    dtypes = (inputs.index_dtype, inputs.index_dtype, inputs.queries.dtype)
    first, second, values = dask_search_pairs(
        inputs.queries, None, search, combine, dtypes, finish=finish
    )
    return first, second, values


@eager_under_compile
def cosine_similar_pairs(
    x: Array,
    threshold: float | Array,
    /,
    *,
    chunk_size: int | None = None,
    xp: ModuleType | None = None,
) -> tuple[Array, Array, Array]:
    """Every pair of rows of ``x`` whose cosine similarity is at least ``threshold``.

    Deduplication and paraphrase mining within one collection: each
    unordered pair ``i < j`` once, never a row with itself. Only the blocks
    on or above the diagonal are computed, about half the work of
    ``cosine_range_search(x, x, threshold)``, and memory is the blocks plus
    the result, never ``n * n``. The exact counterpart of
    sentence-transformers' ``paraphrase_mining_embeddings`` (which keeps at
    most ``top_k`` neighbours per row and ``max_pairs`` pairs) and of
    faiss's ``range_search`` of a collection against itself.

    Parameters
    ----------
    x : array
        Shape ``(n, d)``.
    threshold : float or array
        The smallest similarity kept (inclusive): a real number, or a 0-d
        real array read once. Similarities are clipped to ``[-1, 1]``
        first; rows that are identical (bit for bit, after normalization)
        have similarity exactly 1, so ``threshold=1.0`` finds exact
        duplicates (see Notes).
    chunk_size : int, optional
        The most rows in one block (by default 1,024 rows against 4,096 in
        float32: 16 MiB of similarities). On Dask the blocks are the
        chunks of ``x``, one task per pair of chunks on or above the
        diagonal, and ``chunk_size`` sets the blocks inside a task.
    xp : namespace, optional
        The array namespace; inferred from ``x`` by default.

    Returns
    -------
    first, second : array
        1-D, the rows ``i < j`` of each pair, in the namespace's default
        index dtype.
    similarities : array
        1-D, the pairs' similarities, in ``x``'s floating dtype (float16
        and bfloat16 computed in float32).

    The pairs are ordered by descending similarity, then by ``i``, then by
    ``j`` (similarities as computed: see `cosine_topk` on ties). A pair
    whose similarity is NaN (a row holding NaN or inf) never qualifies; a
    zero row has similarity 0 with everything.

    Raises
    ------
    TypeError
        Under ``jax.jit``, ``torch.func`` and array-api-strict without
        data-dependent shapes (the number of pairs depends on the values);
        use `cosine_topk` with ``exclude_self=True`` there. Also for a
        ``threshold`` that is not a real number.
    ValueError
        For a NaN ``threshold``, an ``x`` that is not 2-D, or a
        ``chunk_size`` that is not positive.

    Notes
    -----
    *Duplicates.* A matrix product rounds the similarity of two identical
    unit vectors to a little below 1 (0.9999999999999998 in float64,
    0.99999994 in float32), so that a threshold of 1 would miss exact
    duplicates. Every pair within ``(d + 4) * eps`` of 1 (``eps`` the
    machine epsilon of the compute dtype), the most that rounding can take
    from an identical pair, is compared row by row: where the two unit
    vectors are equal, the similarity is exactly 1. Pairs that are merely
    close keep their computed value.

    Eager libraries return the arrays directly, on any device (on a GPU
    each block's count of pairs is read). Under ``torch.compile`` the call
    is a graph break. On Dask the result is three lazy arrays of unknown
    length: one task per pair of chunks, and one last task that orders the
    pairs by similarity (it holds the whole result).

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.1], [1.0, 0.0], [0.0, 3.0]])
    >>> first, second, similarities = ck.cosine_similar_pairs(x, 0.99)
    >>> first, second
    (array([0, 1, 0, 2]), array([3, 4, 2, 3]))
    >>> similarities.round(4)
    array([1.    , 1.    , 0.9988, 0.9988])

    """
    inputs = SearchInputs(x, None, xp, chunk_size, False, names=("x",))
    xp = inputs.xp
    value = inputs.threshold(threshold)
    inputs.require_value_dependent_shapes("cosine_similar_pairs")
    if host_namespace(xp, inputs.mode) is not None:
        found = cosine_similar_pairs(to_host(xp, inputs.queries), value, chunk_size=chunk_size)
        dtypes = (inputs.index_dtype, inputs.index_dtype, inputs.result_dtype)
        first, second, values = (
            xp.astype(from_host(xp, a, inputs.device), dtype)
            for a, dtype in zip(found, dtypes, strict=True)
        )
        return first, second, values
    if inputs.n < 2 or value > 1.0:
        first = xp.empty((0,), dtype=inputs.index_dtype, device=inputs.device)
        second = xp.empty((0,), dtype=inputs.index_dtype, device=inputs.device)
        values = xp.empty((0,), dtype=inputs.queries.dtype, device=inputs.device)
    elif inputs.lazy:
        first, second, values = _dask_similar_pairs(inputs, value)
    else:
        # No name holds the pairs in (i, j) order: by_similarity frees them
        # as it makes the ordered copies.
        first, second, values = by_similarity(
            xp,
            list(
                triangle_pairs(
                    xp,
                    inputs.mode,
                    inputs.queries,
                    value,
                    blocks=inputs.blocks(pairs=True),
                    order="pairs",
                )
            ),
        )
    return first, second, xp.astype(values, inputs.result_dtype, copy=False)
