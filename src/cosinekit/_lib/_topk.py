"""The running top-k as a block visitor, and the top-k search built on it.

`PrunedTopK` reads values (threshold pruning, where reads are free);
`FixedTopK` selects every block with fixed shapes (traced code and
accelerators). Both keep, per query block, the best ``k`` so far by
``(-similarity, key index)`` (see ``_select``), and both skip the keys an
`Excluded` rule names: the query itself (``exclude_self``), a mining
search's positives and keys above its cap, and the padding of a compiled
loop's last block.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._blocks import Block, Progress, search_blocks
from ._select import (
    NAN_RANK,
    Excluded,
    SelfExcluded,
    empty_state,
    fill_empty,
    select_traced,
    update_eager,
)
from ._strategy.mode import Mode
from ._strategy.namespaces import index_dtype
from ._strategy.select import search_prunes

Array = Any
TopK = tuple[Array, Array]


class PrunedTopK:
    """The eager top-k: only similarities above a query's current k-th best are looked at.

    Places left empty (fewer than ``k`` numeric similarities) keep index
    ``sentinel`` and value -inf; with ``fill`` they get the smallest free
    key indices and NaN at the end (`fill_empty`).
    """

    def __init__(
        self,
        xp: ModuleType,
        mode: Mode,
        k: int,
        *,
        sentinel: int,
        excluded: Excluded | None,
        fill: bool,
        like: Array,
    ) -> None:
        self.xp, self.mode, self.k, self.sentinel = xp, mode, k, sentinel
        self.excluded, self.fill, self.like = excluded, fill, like

    def start(self, rows: int) -> TopK:
        return empty_state(self.xp, rows, self.k, self.sentinel, self.like)

    def visit(self, state: TopK, block: Block) -> TopK:
        return update_eager(self.xp, self.mode, state, block, self.excluded)

    def finish(self, state: TopK, row: Any, rows: int) -> TopK:
        if not self.fill:
            return state
        own = isinstance(self.excluded, SelfExcluded)
        return fill_empty(self.xp, state, self.sentinel, row, own)


class FixedTopK:
    """The fixed-shape top-k: every block selected in full, no value read.

    NaN similarities rank as ``NAN_RANK`` (after every number) and come
    back as NaN; excluded keys rank as -inf.
    """

    def __init__(
        self, xp: ModuleType, mode: Mode, k: int, *, excluded: Excluded | None, like: Array
    ) -> None:
        self.xp, self.mode, self.k, self.excluded, self.like = xp, mode, k, excluded, like
        self.index_dtype = index_dtype(xp)

    def start(self, rows: int) -> TopK:
        # No key precedes the first block: -inf ranks below every key, so
        # these places are all taken by the first keys.
        return empty_state(self.xp, rows, self.k, 0, self.like)

    def excluded_in(self, block: Block) -> Array | None:
        """The block's excluded keys, padding included (None: no key is)."""
        found = None if self.excluded is None else self.excluded.dense(self.xp, block)
        if block.padded is None:
            return found
        return block.padded if found is None else found | block.padded

    def visit(self, state: TopK, block: Block) -> TopK:
        xp = self.xp
        width = block.similarity.shape[1]
        columns = xp.arange(width, dtype=self.index_dtype, device=array_device(self.like))
        columns = columns + block.column
        excluded = self.excluded_in(block)
        return select_traced(xp, self.mode, state, block.similarity, columns, excluded, self.k)

    def finish(self, state: TopK, row: Any, rows: int) -> TopK:
        values, indices = state
        values = self.xp.where(values == NAN_RANK, self.xp.full_like(values, math.nan), values)
        return values, indices


def topk_visitor(
    xp: ModuleType,
    mode: Mode,
    k: int,
    *,
    excluded: Excluded | None,
    sentinel: int,
    fill: bool,
    like: Array,
) -> PrunedTopK | FixedTopK:
    """The visitor of a blocked top-``k``: pruned where reads are free, fixed shapes elsewhere."""
    if search_prunes(xp, mode):
        return PrunedTopK(xp, mode, k, sentinel=sentinel, excluded=excluded, fill=fill, like=like)
    return FixedTopK(xp, mode, k, excluded=excluded, like=like)


def topk_blocks(
    xp: ModuleType,
    mode: Mode,
    queries: Array,
    keys: Array,
    k: int,
    *,
    blocks: tuple[int, int],
    exclude_self: bool,
    fill: bool = True,
    offsets: tuple[int, int] = (0, 0),
    sentinel: int,
    progress: Progress | None = None,
) -> TopK:
    """The top-``k`` of every query among ``keys``, in the compute dtype.

    Pruned where reads are free, fixed shapes elsewhere. ``offsets`` and
    ``sentinel`` (an index past every key) place the rows in a larger
    search (a Dask chunk); ``fill=False`` leaves empty places empty there,
    for the merge with the other chunks.
    """
    excluded = SelfExcluded() if exclude_self else None
    visitor = topk_visitor(
        xp, mode, k, excluded=excluded, sentinel=sentinel, fill=fill, like=queries
    )
    values, indices = search_blocks(
        xp, mode, queries, keys, visitor, blocks=blocks, offsets=offsets, progress=progress
    )
    return values, indices
