"""Communities: sentence-transformers' community detection, exact, as labels."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ._lib._blocks import SearchInputs, block_starts, join_parts, row_block
from ._lib._blocks import unit_vectors as _unit_vectors
from ._lib._qualify import chunk_triangle_search, duplicate_floor, triangle_pairs
from ._lib._strategy.dask import dask_search_pairs
from ._lib._strategy.loops import from_host, host_namespace, to_host
from ._lib._strategy.mode import Mode, eager_under_compile, execution_mode
from ._lib._validation import integer

Array = Any

__all__ = ["cosine_communities"]


def _in_own_community(xp: ModuleType, mode: Mode, x: Array, threshold: float, rows: int) -> Array:
    """Whether each row's similarity with itself is ``>= threshold``, block by block.

    That similarity is 1 for a nonzero finite row (its unit vector equals
    itself: see ``_qualify``), 0 for a zero row and NaN for a row holding
    NaN or inf.
    """
    near = duplicate_floor(xp, x.dtype, int(x.shape[1]))
    parts = []
    for start in block_starts(x.shape[0], rows):
        unit = _unit_vectors(xp, mode, row_block(x, start, rows))
        itself = xp.sum(unit * unit, axis=1)
        itself = xp.where(itself >= near, xp.ones_like(itself), itself)
        parts.append((itself >= threshold,))
    return join_parts(xp, parts)[0]


def greedy_communities(
    n: int, first: np.ndarray, second: np.ndarray, itself: np.ndarray, min_size: int
) -> np.ndarray:
    """Labels of sentence-transformers' greedy visit, from the pairs ``i < j`` that qualify.

    Each row's candidate is its neighbours (and itself where ``itself``).
    Candidates of at least ``min_size`` rows are visited largest first
    (ties: lower centre); a taken centre is skipped; otherwise the rows not
    yet taken form a community if still ``min_size`` or more. Communities
    are numbered by final size, largest first (ties: acceptance order).
    """
    itself = itself.astype(np.int64)
    neighbours_of = np.bincount(first, minlength=n) + np.bincount(second, minlength=n)
    counts = neighbours_of + itself
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(neighbours_of, out=starts[1:])
    sources = np.concatenate((first, second))
    neighbours = np.concatenate((second, first))[np.argsort(sources, kind="stable")]
    del sources
    visit = np.argsort(-counts, kind="stable")
    visit = visit[counts[visit] >= min_size]
    taken = np.zeros(n, dtype=bool)
    accepted = np.full(n, -1, dtype=np.int64)
    sizes: list[int] = []
    # A candidate of itself alone takes only itself: those (the last ones
    # visited) are accepted together, in order, where not taken.
    alone = neighbours_of[visit] == 0
    for centre in visit[~alone].tolist():
        if taken[centre]:
            continue
        members = neighbours[starts[centre] : starts[centre + 1]]
        free = members[~taken[members]]
        size = free.shape[0] + int(itself[centre])
        if size < min_size:
            continue
        taken[free] = True
        accepted[free] = len(sizes)
        if itself[centre]:
            taken[centre] = True
            accepted[centre] = len(sizes)
        sizes.append(size)
    singles = visit[alone]
    singles = singles[~taken[singles]]
    accepted[singles] = len(sizes) + np.arange(singles.shape[0])
    sizes.extend([1] * int(singles.shape[0]))
    if not sizes:
        return accepted
    rank = np.empty(len(sizes), dtype=np.int64)
    rank[np.argsort(-np.asarray(sizes, dtype=np.int64), kind="stable")] = np.arange(len(sizes))
    return np.where(accepted >= 0, rank[np.maximum(accepted, 0)], -1)


def _dask_labels(inputs: SearchInputs, threshold: float, min_size: int) -> Array:
    """The labels of a Dask collection: pairs and self-similarities computed, visit here."""
    import dask
    import dask.array as da

    search = chunk_triangle_search(inputs.chunk_size, threshold, order="none", values=False)

    def combine(chunk_xp: ModuleType, parts: list[tuple[Array, ...]]) -> tuple[Array, ...]:
        return join_parts(chunk_xp, list(parts))

    def own(block: Array) -> Array:
        chunk_xp = array_namespace(block)
        mode = execution_mode(chunk_xp, block)
        return _in_own_community(chunk_xp, mode, block, threshold, max(1, block.shape[0]))

    dtypes = (inputs.index_dtype, inputs.index_dtype)
    first, second = dask_search_pairs(inputs.queries, None, search, combine, dtypes)
    itself = inputs.queries.map_blocks(own, drop_axis=1, dtype=bool)
    first, second, itself = dask.compute(first, second, itself)
    labels = greedy_communities(
        inputs.n, np.asarray(first), np.asarray(second), np.asarray(itself), min_size
    )
    return da.from_array(labels, chunks=(inputs.queries.chunks[0],))


@eager_under_compile
def cosine_communities(
    x: Array,
    threshold: float | Array,
    /,
    *,
    min_size: int = 1,
    chunk_size: int | None = None,
    xp: ModuleType | None = None,
) -> Array:
    """Communities of rows of ``x``: sentence-transformers' ``community_detection``, exact.

    Each row's candidate community is every row with cosine similarity
    ``>= threshold`` to it, itself included. Candidates of at least
    ``min_size`` rows are visited largest first (ties: the lower centre
    index); a candidate whose centre is already in a community is skipped;
    otherwise it keeps the rows not yet taken and becomes a community if
    still at least ``min_size`` rows. The similarities come from the
    blocks of `cosine_similar_pairs` (half the matrix, never ``n * n``
    at once); the visit runs on the pairs found.

    Parameters
    ----------
    x : array
        Shape ``(n, d)``.
    threshold : float or array
        The smallest similarity that joins two rows (inclusive): a real
        number, or a 0-d real array read once. Identical rows have
        similarity exactly 1 (see `cosine_similar_pairs`).
    min_size : int, default 1
        The fewest rows of a community (sentence-transformers'
        ``min_community_size``, whose default is 10).
    chunk_size : int, optional
        The most rows in one block (see `cosine_similar_pairs`). On Dask
        one task per pair of chunks on or above the diagonal.
    xp : namespace, optional
        The array namespace; inferred from ``x`` by default.

    Returns
    -------
    labels : array
        Shape ``(n,)``, in the namespace's default index dtype: the
        community of each row, numbered ``0, 1, ...`` by size, largest first
        (ties: the order in which they were accepted), so that
        ``labels == c`` lists sentence-transformers' ``c``-th community; -1
        for a row in none.

    Raises
    ------
    TypeError
        Under ``jax.jit``, ``torch.func`` and array-api-strict without
        data-dependent shapes (the communities depend on the values); for a
        ``threshold`` that is not a real number, or a ``min_size`` that is
        not an integer.
    ValueError
        For a NaN ``threshold``, ``min_size < 1``, an ``x`` that is not 2-D
        or a ``chunk_size`` that is not positive.

    Notes
    -----
    Memory is the blocks, ``O(n)`` and the pairs found (each row's
    candidate community once), never ``n * n``. A row holding NaN or inf
    joins no community; a zero row has similarity 0 with everything, itself
    included. Eager libraries return the labels on the input's device (the
    pairs found are read on the host, as sentence-transformers'
    communities are); under ``torch.compile`` the call is a graph break. On
    Dask the pairs are computed on the workers, the visit runs here, and
    the labels come back as a Dask array.

    sentence-transformers rounds a row's similarity with itself and an
    exact duplicate's below 1 in float32, so at ``threshold=1.0`` it may
    leave them out where this function keeps them.

    Examples
    --------
    >>> import numpy as np
    >>> import cosinekit as ck
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0], [1.0, 0.05], [-1, 0]])
    >>> ck.cosine_communities(x, 0.9)
    array([0, 1, 0, 1, 0, 2])
    >>> ck.cosine_communities(x, 0.9, min_size=2)
    array([ 0,  1,  0,  1,  0, -1])

    """
    inputs = SearchInputs(x, None, xp, chunk_size, False, names=("x",))
    xp = inputs.xp
    value = inputs.threshold(threshold)
    inputs.require_value_dependent_shapes("cosine_communities")
    min_size = integer(min_size, "min_size")
    if min_size < 1:
        msg = f"min_size must be at least 1, got {min_size}"
        raise ValueError(msg)
    n = inputs.n
    if host_namespace(xp, inputs.mode) is not None:
        labels = cosine_communities(
            to_host(xp, inputs.queries), value, min_size=min_size, chunk_size=chunk_size
        )
        return xp.astype(from_host(xp, labels, inputs.device), inputs.index_dtype)
    if n == 0 or value > 1.0:
        return xp.full((n,), -1, dtype=inputs.index_dtype, device=inputs.device)
    if inputs.lazy:
        return xp.astype(_dask_labels(inputs, value, min_size), inputs.index_dtype)
    blocks = inputs.blocks(pairs=True)
    first, second = triangle_pairs(
        xp, inputs.mode, inputs.queries, value, blocks=blocks, order="none", values=False
    )
    itself = _in_own_community(xp, inputs.mode, inputs.queries, value, blocks[0])
    labels = greedy_communities(
        n, to_host(xp, first), to_host(xp, second), to_host(xp, itself), min_size
    )
    return xp.astype(from_host(xp, labels, inputs.device), inputs.index_dtype)
