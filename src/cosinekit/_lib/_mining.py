"""Hard-negative mining as a block visitor: exclusions, the count above the cap, the window.

`Negatives` excludes a query's positives and the keys above its cap (its
largest allowed similarity: ``max_similarity`` and the margins), `Mining`
wraps the running top-k of `_topk` with the count of non-positive keys
above the cap, and `in_window` cuts the ``k`` negatives of the rank window out
of the top ``lo + k`` candidates.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._blocks import Block
from ._select import take_2d
from ._strategy.mode import Mode
from ._strategy.namespaces import index_dtype
from ._topk import FixedTopK, PrunedTopK, topk_visitor

Array = Any
State = tuple[tuple[Array, Array], Array | None]


class Negatives:
    """Excluded keys of a query: its positives, and keys above its cap (or NaN).

    The block's ``extras`` are the positives ``(rows, p)`` and, with a cap,
    the caps ``(rows,)``: a key is a candidate only where ``similarity <=
    cap``, so NaN similarities and NaN caps exclude.
    """

    def __init__(self, capped: bool) -> None:
        self.capped = capped

    def positive(self, xp: ModuleType, block: Block) -> Array | None:
        positives = block.extras[0]
        width = block.similarity.shape[1]
        columns = xp.arange(width, dtype=positives.dtype, device=array_device(positives))
        columns = xp.reshape(columns + block.column, (1, width))
        found = None
        for p in range(positives.shape[1]):
            hit = positives[:, p : p + 1] == columns
            found = hit if found is None else found | hit
        return found

    def dense(self, xp: ModuleType, block: Block) -> Array | None:
        found = self.positive(xp, block)
        if self.capped:
            cap = xp.reshape(block.extras[1], (-1, 1))
            above = xp.logical_not(block.similarity <= cap)
            found = above if found is None else found | above
        return found

    def among(self, xp: ModuleType, block: Block, rows: Array, columns: Array) -> Array | None:
        positives = xp.take(block.extras[0], rows, axis=0)
        keys = xp.reshape(xp.astype(columns, positives.dtype) + block.column, (-1, 1))
        found = xp.any(positives == keys, axis=1)
        if self.capped:
            width = block.similarity.shape[1]
            values = xp.take(xp.reshape(block.similarity, (-1,)), rows * width + columns)
            found = found | xp.logical_not(values <= xp.take(block.extras[1], rows))
        return found


class Mining:
    """The top ``lo + k`` candidates per query, and how many keys lie above the cap.

    ``count`` is kept where a rank window and a cap meet: the candidates
    under the cap start at rank ``count`` among the non-positive keys.
    """

    def __init__(self, inner: PrunedTopK | FixedTopK, negatives: Negatives, count: bool) -> None:
        self.inner, self.negatives, self.count = inner, negatives, count
        self.xp = inner.xp

    def start(self, rows: int) -> State:
        counted = None
        if self.count:
            like = self.inner.like
            counted = self.xp.zeros((rows,), dtype=index_dtype(self.xp), device=array_device(like))
        return self.inner.start(rows), counted

    def visit(self, state: State, block: Block) -> State:
        top = self.inner.visit(state[0], block)
        counted = state[1]
        if counted is not None:
            xp = self.xp
            above = block.similarity > xp.reshape(block.extras[1], (-1, 1))
            positive = self.negatives.positive(xp, block)
            if positive is not None:
                above = above & xp.logical_not(positive)
            if block.padded is not None:
                above = above & xp.logical_not(block.padded)
            counted = counted + xp.sum(xp.astype(above, counted.dtype), axis=1)
        return top, counted

    def finish(self, state: State, row: Any, rows: int) -> tuple[Array, ...]:
        (values, indices), counted = state
        # The counts as one column (none where not kept), joined like the rest.
        column = values[:, :0] if counted is None else self.xp.reshape(counted, (-1, 1))
        return values, indices, column


def in_window(
    xp: ModuleType,
    values: Array,
    indices: Array,
    counted: Array | None,
    k: int,
    low: int,
    high: int | None,
) -> tuple[Array, Array]:
    """The ``k`` negatives from the top candidates: from rank ``low`` on, below ``high``.

    ``values`` are descending, -inf or ``NAN_RANK`` past the last
    candidate. The candidates are the non-positive keys under the cap,
    which start at rank ``counted`` among all non-positive keys: the window
    starts at candidate ``max(low - counted, 0)``.
    """
    rows, width = values.shape
    dtype = indices.dtype
    device = array_device(indices)
    above = xp.zeros((rows,), dtype=dtype, device=device) if counted is None else counted
    above = xp.astype(above, dtype)
    first = xp.clip(low - above, min=0, max=low)
    place = xp.reshape(first, (rows, 1)) + xp.reshape(
        xp.arange(k, dtype=dtype, device=device), (1, k)
    )
    inside = place < width
    place = xp.clip(place, max=width - 1)
    picked = take_2d(xp, values, place)
    found = inside & (picked >= -1.0)
    if high is not None:
        found = found & (xp.reshape(above, (rows, 1)) + place < high)
    return (
        xp.where(found, take_2d(xp, indices, place), xp.full_like(place, -1)),
        xp.where(found, picked, xp.full_like(picked, math.nan)),
    )


def mining_visitor(
    xp: ModuleType, mode: Mode, size: int, capped: bool, count: bool, sentinel: int, like: Array
) -> Mining:
    """The visitor of a mining search: the top-``size`` of the non-positive keys."""
    negatives = Negatives(capped)
    inner = topk_visitor(
        xp, mode, size, excluded=negatives, sentinel=sentinel, fill=False, like=like
    )
    return Mining(inner, negatives, count)
