"""Pairs at or above a threshold, block by block: range search, similar pairs, communities.

`Qualifying` is the block visitor of the searches whose result is every
pair with similarity ``>= threshold``: it keeps, per query block, the
qualifying pairs of each block (``nonzero`` of one compare), and at the end
orders them. Three rules live here, the same for all three searches:

* **Identical rows have similarity exactly 1.** A matrix product rounds the
  dot of two identical unit rows to ``1 - a few ulps`` (measured: 0.9999999999999998
  in float64), so ``threshold=1.0`` would miss exact duplicates, even a row
  with itself. Each such dot is at least ``1 - (d + 4) eps`` (`duplicate_floor`):
  the norm and the dot each round by at most ``d`` units (``eps`` the
  compute dtype's machine epsilon, ``d`` the features), and their
  quotient by a few more. Pairs at or above that floor are compared row by
  row on their unit vectors, and where these are equal bit for bit (the
  same row, or rows that differ by a power-of-two factor) the similarity is
  1, as ``pairwise_cosine_similarity`` gives on its diagonal. Other pairs
  keep their computed value: the comparison only ever concerns the few
  pairs within ``(d + 4) eps`` of 1.
* **Order within bounded memory.** A query block's pairs are ordered in
  groups of rows of at most as many pairs as a block has similarities
  (the groups' bounds read once per block), so that sorting never needs
  more than a block's worth of temporaries beside the pairs themselves.
* **Above the diagonal.** For a collection against itself (``triangle``)
  only pairs ``i < j`` are kept, and the loop visits only the blocks that
  hold some.
"""

from __future__ import annotations

import itertools
import math
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import device as array_device

from ._blocks import Block, chunk_blocks, join_parts, search_blocks
from ._select import meets_diagonal, nonzero_2d
from ._strategy.autodiff import clip_straight_through
from ._strategy.loops import to_host
from ._strategy.mode import Mode, execution_mode
from ._strategy.namespaces import index_dtype
from ._strategy.select import mask_view, nonzero_flat

Array = Any
Parts = list[tuple[Array, ...]]
Slice = tuple[int, int]

ORDERS = ("rows", "pairs", "none")


def duplicate_floor(xp: ModuleType, dtype: Any, features: int) -> float:
    """The lowest similarity two bit-identical unit rows of ``features`` values can compute to."""
    return 1.0 - (features + 4) * float(xp.finfo(dtype).eps)


def same_rows(xp: ModuleType, left: Array, right: Array) -> Array:
    """Whether each row of ``left`` equals the row of ``right`` at the same place, bit for bit."""
    return xp.all(left == right, axis=1)


class Qualifying:
    """Every pair of a block with similarity ``>= threshold``, ordered at the end.

    ``order``: ``"rows"`` by query, then descending similarity, then key
    (range search); ``"pairs"`` by ``(i, j)`` (similar pairs, before their
    final order by similarity); ``"none"`` as found (communities). Pairs
    are sorted ``group`` at a time at most (a block's size). With
    ``values=False`` only the indices are kept.
    """

    def __init__(
        self,
        xp: ModuleType,
        mode: Mode,
        threshold: float,
        *,
        features: int,
        dtype: Any,
        index_dtype: Any,
        device: Any,
        order: str,
        group: int,
        exclude_self: bool = False,
        triangle: bool = False,
        values: bool = True,
    ) -> None:
        self.xp, self.mode, self.threshold = xp, mode, threshold
        self.index_dtype, self.dtype, self.device, self.order = index_dtype, dtype, device, order
        self.group = max(1, group)
        self.exclude_self, self.triangle, self.values = exclude_self, triangle, values
        self.near = duplicate_floor(xp, dtype, features)
        # Clipped to [-1, 1], a similarity s qualifies iff raw s >= threshold
        # (for -1 < threshold <= 1); pairs that may be duplicates are looked
        # at from `near` on, whatever the threshold.
        self.floor = -math.inf if threshold <= -1.0 else min(threshold, self.near)

    def start(self, rows: int) -> Parts:
        return []

    def _dropped(self, block: Block, rows: Array, columns: Array) -> Array | None:
        """Which candidates (block rows and columns) are below the diagonal or the row itself."""
        height, width = block.similarity.shape
        shift = block.row - block.column
        dropped = None
        if self.triangle and block.column <= block.row + height - 1:
            dropped = columns <= rows + shift  # keep j > i
        if self.exclude_self and meets_diagonal(height, width, block.row, block.column):
            own = columns == rows + shift
            dropped = own if dropped is None else dropped | own
        return dropped

    def visit(self, parts: Parts, block: Block) -> Parts:
        xp = self.xp
        similarity = block.similarity
        namespace, view = mask_view(xp, similarity)
        flat, rows, columns = nonzero_2d(xp, namespace, view >= self.floor)
        dropped = None if flat.shape[0] == 0 else self._dropped(block, rows, columns)
        if dropped is not None:
            kept = nonzero_flat(xp, xp.logical_not(dropped))
            flat, rows, columns = (xp.take(a, kept) for a in (flat, rows, columns))
        if flat.shape[0] == 0:
            return parts
        values = xp.take(xp.reshape(similarity, (-1,)), flat)
        del flat
        values = clip_straight_through(xp, self.mode, values, -1.0, 1.0)
        values = self._duplicates_at_one(values, rows, columns, block)
        if self.threshold > self.floor:
            kept = nonzero_flat(xp, values >= self.threshold)
            if kept.shape[0] == 0:
                return parts
            rows, columns, values = (xp.take(a, kept) for a in (rows, columns, values))
        found = (
            xp.astype(rows + block.row, self.index_dtype),
            xp.astype(columns + block.column, self.index_dtype),
        )
        parts.append((*found, values) if self.values else found)
        return parts

    def _duplicates_at_one(
        self, values: Array, rows: Array, columns: Array, block: Block
    ) -> Array:
        """``values`` with 1 where the pair's unit rows are identical (see the module doc)."""
        xp = self.xp
        near = values >= self.near
        which = nonzero_flat(xp, near)
        if which.shape[0] == 0:
            return values
        same = same_rows(
            xp,
            xp.take(block.unit_queries, xp.take(rows, which), axis=0),
            xp.take(block.unit_keys, xp.take(columns, which), axis=0),
        )
        # Spread back to every candidate: its place among the near ones.
        place = xp.cumulative_sum(xp.astype(near, self.index_dtype)) - 1
        spread = xp.take(same, xp.clip(place, min=0)) & near
        return xp.where(spread, xp.ones_like(values), values)

    def finish(self, parts: Parts, row: Any, rows: int) -> tuple[Array, ...]:
        xp = self.xp
        if not parts:
            return self.empty()
        if self.order == "none" or (self.order == "pairs" and len(parts) == 1):
            # nonzero finds pairs by row, then column: one block is in (i, j) order.
            return join_parts(xp, parts)
        groups = self._groups(parts, row, rows)
        if len(groups) == 1:
            # Joined, the parts are released (they are the state's only copy).
            return ordered_pairs(xp, list(join_parts(xp, parts)), self.order)
        ordered = []
        while groups:
            pieces = [tuple(p[a:b] for p in part) for part, (a, b) in groups.pop(0)]
            ordered.append(ordered_pairs(xp, list(join_parts(xp, pieces)), self.order))
        # Nothing refers to the parts now (the pieces were views of them).
        parts.clear()
        return join_parts(xp, ordered)

    def _groups(self, parts: Parts, row: int, rows: int) -> list[list[tuple[Any, Slice]]]:
        """Each part's slice per group of consecutive rows of at most ``group`` pairs."""
        xp = self.xp
        total = sum(int(part[0].shape[0]) for part in parts)
        if total <= self.group or rows == 1:
            return [[(part, (0, int(part[0].shape[0]))) for part in parts]]
        device = array_device(parts[0][0])
        wanted = xp.arange(row, row + rows + 1, dtype=self.index_dtype, device=device)
        bounds = [to_host(xp, xp.searchsorted(part[0], wanted)) for part in parts]
        per_row = np.sum([np.diff(b) for b in bounds], axis=0)
        edges, held = [0], 0
        for r, count in enumerate(per_row.tolist()):
            if held and held + count > self.group:
                edges.append(r)
                held = 0
            held += count
        edges.append(rows)
        return [
            [(part, (int(b[low]), int(b[high]))) for part, b in zip(parts, bounds, strict=True)]
            for low, high in itertools.pairwise(edges)
        ]

    def empty(self) -> tuple[Array, ...]:
        """No pairs: empty arrays of the result's dtypes."""
        xp, device = self.xp, self.device
        indices = xp.empty((0,), dtype=self.index_dtype, device=device)
        found = (indices, xp.empty((0,), dtype=self.index_dtype, device=device))
        if not self.values:
            return found
        return (*found, xp.empty((0,), dtype=self.dtype, device=device))


def ordered_pairs(xp: ModuleType, found: list[Array], order: str) -> tuple[Array, ...]:
    """Pairs found in key order (parts joined as the keys came) put in ``order``.

    ``"rows"``: by query, descending similarity, key; ``"pairs"``: by
    ``(i, j)``. Both are stable sorts of the fewest keys: pairs of one row
    with equal similarity are already in key order. ``found`` is emptied as
    the ordered copies are made.
    """
    rows = found[0]
    if order == "rows":
        sequence = xp.argsort(-found[2], stable=True)
        sequence = xp.take(sequence, xp.argsort(xp.take(rows, sequence), stable=True))
    else:
        sequence = xp.argsort(rows, stable=True)
    del rows
    return tuple(xp.take(found.pop(0), sequence) for _ in range(len(found)))


def triangle_pairs(
    xp: ModuleType,
    mode: Mode,
    x: Array,
    threshold: float,
    *,
    blocks: tuple[int, int],
    order: str,
    keys: Array | None = None,
    offsets: tuple[int, int] = (0, 0),
    values: bool = True,
) -> tuple[Array, ...]:
    """Every pair ``i < j`` of rows of ``x`` at or above ``threshold``, in ``order``.

    Only the blocks above the diagonal are computed. ``keys`` and
    ``offsets`` serve a Dask task: its query chunk ``x`` against the key
    chunk ``keys``, placed at ``offsets`` in the collection.
    """
    visitor = Qualifying(
        xp,
        mode,
        threshold,
        features=int(x.shape[1]),
        dtype=x.dtype,
        index_dtype=index_dtype(xp),
        device=array_device(x),
        order=order,
        group=blocks[0] * blocks[1],
        triangle=True,
        values=values,
    )
    return search_blocks(xp, mode, x, keys, visitor, blocks=blocks, offsets=offsets, triangle=True)


def chunk_triangle_search(
    chunk_size: int | None, threshold: float, *, order: str, values: bool = True
) -> Any:
    """The pairs of one Dask task: a query chunk against a key chunk at their offsets."""

    def search(
        chunk_xp: ModuleType, queries: Array, keys: Array, query_start: int, key_start: int
    ) -> tuple[Array, ...]:
        return triangle_pairs(
            chunk_xp,
            execution_mode(chunk_xp, queries, keys),
            queries,
            threshold,
            blocks=chunk_blocks(chunk_xp, queries, keys, chunk_size, pairs=True),
            order=order,
            keys=keys,
            offsets=(query_start, key_start),
            values=values,
        )

    return search
