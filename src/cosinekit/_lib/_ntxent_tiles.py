"""NT-Xent tile by tile: per anchor, its negatives' log-sum-exp, then its positive pairs.

With logits ``L = scale * clip(a e^T, -1, 1)`` of anchor rows ``a`` against
every row ``e`` (see ``_tiles``): anchor ``i``'s negatives are the rows of
another label, its positives the other rows of its label.

* First sweep: ``N_i``, the log-sum-exp of its negatives (a running
  maximum, as in ``_tiles``; ``-inf``, the log of an empty sum, for a row
  without negatives, whose pairs then cost ``softplus(-inf) = 0``), and
  the counts. Whether a row has negatives is read from the labels, never
  from the values.
* Second sweep: ``T_i``, the sum over its positives ``j`` of
  ``softplus(N_i - L_ij)`` (the pair's ``-log(e^L_ij / (e^L_ij + sum_k
  e^L_ik))``), and ``w_i``, the sum of ``sigmoid(N_i - L_ij)``.
* Backward, one sweep: a positive entry's derivative is
  ``-sigmoid(N_i - L_ij)``, a negative's ``w_i exp(L_ik - N_i)``. ``N`` and
  ``w`` are outputs, so their own cotangents (present when the backward is
  differentiated) are handled too; ``w``'s needs ``sum_j s (1 - s)`` of
  the pairs' sigmoids, one more sweep only then.

The forward takes the rows as they are, so a row holding NaN makes every
value it takes part in NaN; the backward computes its tiles from rows
without NaN, with the coefficients of ``_tiles.live``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from types import ModuleType
from typing import Any

from ._strategy.inplace import times
from ._strategy.mode import Mode
from ._strategy.namespaces import index_dtype
from ._strategy.tiles import Rule, sweep
from ._tiles import (
    along,
    finite_rows,
    inner,
    live,
    running_start,
    safe,
    scaled_gradients,
    similarity,
    zeros,
)

Array = Any
Arrays = tuple[Array, ...]


def ntxent_rows(xp: ModuleType, mode: Mode, block: int, *, shared: bool) -> Rule:
    """``(a, e, scale, a_labels, e_labels, a_index, e_index) -> (total, count, N, w, kept)``.

    Anchor ``i`` (unit row ``a[i]``, label ``a_labels[i]``) is row
    ``a_index[i]`` of the unit rows ``e``. Per anchor: ``total`` is the sum
    of its positive pairs' losses, ``count`` the number of its positives
    (an integer array), ``negatives`` the log-sum-exp ``N_i``, ``w`` the
    sum of the pairs' ``sigmoid(N_i - L_ij)`` and ``kept`` the logits of the
    one tile (or shape ``(0, 0)`` when tiled); the last three for the
    backward. ``shared``: every row is an
    anchor, and the rule takes ``(e, scale, labels, index)``
    (``torch.compile`` refuses a tensor passed twice to a Function).
    """
    rule = Rule(partial(_compute, xp, mode, block), partial(_reverse, xp, mode, block), 2)
    if not shared:
        return rule

    def compute(e: Array, scale: Any, labels: Array, index: Array) -> Arrays:
        return rule.compute(e, e, scale, labels, labels, index, index)

    def reverse(
        cotangents: Sequence[Array | None], needed: Sequence[bool], args: Arrays, outputs: Arrays
    ) -> list[Array | None]:
        e, scale, labels, index = args
        both = (needed[0], needed[0], needed[1], False, False, False, False)
        full = (e, e, scale, labels, labels, index, index)
        grads = rule.reverse(cotangents, both, full, outputs)
        de = None if grads[0] is None or grads[1] is None else grads[0] + grads[1]
        return [de, grads[2], None, None]

    return Rule(compute, reverse, 2)


def _pairs(xp: ModuleType, rows: Arrays, cols: Arrays) -> tuple[Array, Array]:
    """``(positive, negative)`` masks of a tile: equal labels but not itself, other labels."""
    same = along(xp, rows[1], 1) == along(xp, cols[1], 0)
    itself = along(xp, rows[2], 1) == along(xp, cols[2], 0)
    return same & xp.logical_not(itself), xp.logical_not(same)


def _softplus_sigmoid(xp: ModuleType, d: Array) -> tuple[Array, Array]:
    """``softplus(d)`` and ``sigmoid(d) = exp(d - softplus(d))``; NaN stays NaN, quietly."""
    nan = xp.isnan(d)
    clean = xp.where(nan, xp.zeros_like(d), d)
    softplus = xp.logaddexp(clean, zeros(xp, d, ()))
    sigmoid = xp.exp(clean - softplus)
    return xp.where(nan, d, softplus), xp.where(nan, d, sigmoid)


def _logits(
    xp: ModuleType, mode: Mode, scale: Any, kept: Array | None, rows: Arrays, cols: Arrays
) -> Array:
    """The tile's logits: the kept one, or computed from the rows."""
    if kept is not None:
        return kept
    return times(xp, mode, similarity(xp, mode, rows[0], cols[0]), scale, owned=True)


def _compute(
    xp: ModuleType,
    mode: Mode,
    block: int,
    a: Array,
    e: Array,
    scale: Any,
    a_labels: Array,
    e_labels: Array,
    a_index: Array,
    e_index: Array,
) -> Arrays:
    rows, cols = (a, a_labels, a_index), (e, e_labels, e_index)
    count = index_dtype(xp)
    # One tile: its logits are computed once, for both sweeps and the backward.
    one = a.shape[0] <= block and e.shape[0] <= block
    kept = _logits(xp, mode, scale, None, rows, cols) if one else None

    def start(r: Arrays) -> Arrays:
        number = xp.zeros_like(r[2], dtype=count)
        return (*running_start(xp, r[0], scale), number, number)

    (top, total, positives, negatives), _, _ = sweep(
        xp, mode, block, rows, cols, partial(_negatives_tile, xp, mode, scale, count, kept),
        start, lambda c: (), (),
    )  # fmt: skip
    some = negatives > 0
    # The log of an empty sum is -inf: softplus(-inf) = 0 for a row without negatives.
    neg_lse = xp.where(
        some,
        top + xp.log(xp.where(some, total, xp.ones_like(total))),
        xp.full_like(total, -float("inf")),
    )
    (loss, weight), _, _ = sweep(
        xp, mode, block, (*rows, neg_lse), cols, partial(_positives_tile, xp, mode, scale, kept),
        lambda r: (xp.zeros_like(r[3]), xp.zeros_like(r[3])), lambda c: (), (),
    )  # fmt: skip
    return loss, positives, neg_lse, weight, zeros(xp, a, (0, 0)) if kept is None else kept


def _negatives_tile(
    xp: ModuleType, mode: Mode, scale: Any, count: Any, kept: Array | None,
    rows: Arrays, cols: Arrays, row: Arrays, col: Arrays, sums: Arrays,
) -> tuple[Arrays, Arrays, Arrays]:  # fmt: skip
    positive, negative = _pairs(xp, rows, cols)
    logits = _logits(xp, mode, scale, kept, rows, cols)
    masked = xp.where(negative, logits, zeros(xp, logits, ()) - scale)
    top, total, positives, negatives = row
    new = xp.maximum(top, xp.max(masked, axis=1))
    shifted = xp.where(negative, xp.exp(masked - along(xp, new, 1)), zeros(xp, logits, ()))
    row = (
        new,
        total * xp.exp(top - new) + xp.sum(shifted, axis=1),
        positives + xp.sum(xp.astype(positive, count), axis=1),
        negatives + xp.sum(xp.astype(negative, count), axis=1),
    )
    return row, col, sums


def _positives_tile(
    xp: ModuleType, mode: Mode, scale: Any, kept: Array | None,
    rows: Arrays, cols: Arrays, row: Arrays, col: Arrays, sums: Arrays,
) -> tuple[Arrays, Arrays, Arrays]:  # fmt: skip
    positive, _ = _pairs(xp, rows, cols)
    logits = _logits(xp, mode, scale, kept, rows, cols)
    loss, sigmoid = _softplus_sigmoid(xp, along(xp, rows[3], 1) - logits)
    zero = zeros(xp, logits, ())
    total, weight = row
    total = total + xp.sum(xp.where(positive, loss, zero), axis=1)
    weight = weight + xp.sum(xp.where(positive, sigmoid, zero), axis=1)
    return (total, weight), col, sums


def _reverse(
    xp: ModuleType,
    mode: Mode,
    block: int,
    cotangents: Sequence[Array | None],
    needed: Sequence[bool],
    args: Arrays,
    outputs: Arrays,
) -> list[Array | None]:
    a, e, scale, a_labels, e_labels, a_index, e_index = args
    _, _, neg_lse, _, kept = outputs
    g_total, _, g_neg, g_weight, g_kept = cotangents
    need = (needed[0], needed[1], needed[2] and not isinstance(scale, (int, float)))
    grads: list[Array | None] = [None] * 7
    live_terms = (g_total, g_neg, g_weight, g_kept)
    if not any(need) or all(g is None for g in live_terms):
        return grads
    (a_clean, a_nan), (e_clean, e_nan) = finite_rows(xp, mode, a), finite_rows(xp, mode, e)
    tile = None
    if kept.shape[0] != 0:
        # The kept logits without NaN: those of the rows with NaN replaced by 0.
        tile = (
            kept
            if a_nan is None and e_nan is None
            else xp.where(xp.isnan(kept), xp.zeros_like(kept), kept)
        )
    rows = (a_clean, a_labels, a_index, safe(xp, neg_lse, scale))
    cols = (e_clean, e_labels, e_index)
    coefficients = _coefficients(xp, mode, block, scale, tile, rows, cols, outputs, cotangents)
    da, de, (dscale,) = sweep(
        xp,
        mode,
        block,
        (*rows, *coefficients[0]),
        cols,
        partial(_gradient_tile, xp, mode, scale, tile, need, coefficients[1]),
        lambda r: (xp.zeros_like(r[0]),) if need[0] else (),
        lambda c: (xp.zeros_like(c[0]),) if need[1] else (),
        (zeros(xp, a, ()),),
    )
    first = (da[0] if need[0] else None, de[0] if need[1] else None, dscale)
    scaled_gradients(xp, need, scale, grads, first, (a_clean, e_clean), g_kept, tile)
    return grads


def _coefficients(
    xp: ModuleType,
    mode: Mode,
    block: int,
    scale: Any,
    tile: Array | None,
    rows: Arrays,
    cols: Arrays,
    outputs: Arrays,
    cotangents: Sequence[Array | None],
) -> tuple[Arrays, tuple[bool, ...]]:
    """Per row: the negatives' coefficient, then the positives' (of ``s`` or ``s(1 - s)``).

    The negatives': ``d(total)/dN = w``, ``dN/dN = 1``, ``d(w)/dN = sum s(1 - s)``
    (a sweep of its own, only where ``w``'s cotangent is given).
    """
    total, _, neg_lse, weight, _ = outputs
    g_total, _, g_neg, g_weight, _ = cotangents
    on_negatives = xp.zeros_like(neg_lse)
    on_positives: list[Array] = []
    curved: list[bool] = []
    if g_total is not None:
        coefficient = live(xp, g_total, total)
        finite_weight = xp.where(xp.isnan(weight), xp.zeros_like(weight), weight)
        on_negatives = on_negatives + coefficient * finite_weight
        on_positives.append(coefficient)
        curved.append(False)
    if g_neg is not None:
        on_negatives = on_negatives + live(xp, g_neg, neg_lse)
    if g_weight is not None:
        coefficient = live(xp, g_weight, weight)
        (slopes,), _, _ = sweep(
            xp, mode, block, rows, cols, partial(_slopes_tile, xp, mode, scale, tile),
            lambda r: (xp.zeros_like(r[3]),), lambda c: (), (),
        )  # fmt: skip
        on_negatives = on_negatives + coefficient * slopes
        on_positives.append(coefficient)
        curved.append(True)
    return (on_negatives, *on_positives), tuple(curved)


def _pair_terms(
    xp: ModuleType, mode: Mode, scale: Any, tile: Array | None, rows: Arrays, cols: Arrays
) -> tuple[Array, Array, Array, Array]:
    """A tile's masks, logits and the pairs' ``sigmoid(N_i - L_ij)``."""
    positive, negative = _pairs(xp, rows, cols)
    logits = _logits(xp, mode, scale, tile, rows, cols)
    sigmoid = _softplus_sigmoid(xp, along(xp, rows[3], 1) - logits)[1]
    return positive, negative, logits, sigmoid


def _slopes_tile(
    xp: ModuleType, mode: Mode, scale: Any, tile: Array | None,
    rows: Arrays, cols: Arrays, row: Arrays, col: Arrays, sums: Arrays,
) -> tuple[Arrays, Arrays, Arrays]:  # fmt: skip
    positive, _, _, sigmoid = _pair_terms(xp, mode, scale, tile, rows, cols)
    slope = xp.where(positive, sigmoid * (1 - sigmoid), zeros(xp, sigmoid, ()))
    return (row[0] + xp.sum(slope, axis=1),), col, sums


def _gradient_tile(
    xp: ModuleType, mode: Mode, scale: Any, tile: Array | None, need: tuple[bool, bool, bool],
    curved: tuple[bool, ...],
    rows: Arrays, cols: Arrays, da: Arrays, de: Arrays, sums: Arrays,
) -> tuple[Arrays, Arrays, Arrays]:  # fmt: skip
    """One tile of ``dT/dL``: adds ``G e``, ``G^T a`` and ``sum(G L)``."""
    positive, negative, logits, sigmoid = _pair_terms(xp, mode, scale, tile, rows, cols)
    zero = zeros(xp, logits, ())
    on_positives = None
    for k, of_slope in enumerate(curved):
        factor = sigmoid * (1 - sigmoid) if of_slope else sigmoid
        term = along(xp, rows[5 + k], 1) * factor
        on_positives = term if on_positives is None else on_positives + term
    shift = xp.where(negative, logits - along(xp, rows[3], 1), zero)
    g = xp.where(negative, along(xp, rows[4], 1) * xp.exp(shift), zero)
    if on_positives is not None:
        g = xp.where(positive, -on_positives, g)
    if need[2]:
        sums = (sums[0] + inner(xp, g, logits),)
    if need[0]:
        da = (da[0] + g @ cols[0],)
    if need[1]:
        de = (de[0] + xp.matrix_transpose(g) @ rows[0],)
    return da, de, sums
