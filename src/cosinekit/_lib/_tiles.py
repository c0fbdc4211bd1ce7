"""The contrastive losses tile by tile: each formula once, its backward beside it.

Both losses reduce the logits ``L = scale * clip(U V^T, -1, 1)`` of unit
rows ``U`` ``(n, d)`` and ``V`` ``(m, d)``. The matrix is never formed when
it exceeds one ``block x block`` tile: the forward folds each tile into
running per-row (and per-column) values, and the backward recomputes each
tile from those values (`_strategy.tiles.sweep` runs the loop,
`_strategy.tiles.with_reverse` attaches the backward). Beyond the inputs
and their gradients that takes ``O((n + m) d + block**2)`` memory. One tile
is the dense computation: the same code, run once, and its logits are kept
for the backward instead of recomputed.

``log_sum_exp`` (InfoNCE, here)
    Per row, and per column for the symmetric loss, the log-sum-exp of
    ``L``: a running maximum and a sum of exponentials shifted by it (the
    online log-sum-exp). Its derivative for the row values' cotangents
    ``a`` (columns: ``b``) is ``G = a_i P_ij + b_j Q_ij`` with
    ``P = exp(L - lse_row)`` and ``Q = exp(L - lse_col)``, so
    ``dU = scale G V``, ``dV = scale G^T U`` and ``dscale = sum(G L) / scale``.
``ntxent_rows`` (NT-Xent, ``_ntxent_tiles``)
    Per anchor: the log-sum-exp of its negatives, then its positive pairs.

NaN: a row holding NaN (the unit row of a vector with NaN or inf) makes
every value it takes part in NaN. The backward computes each tile from rows
without NaN and from per-row values with NaN replaced by ``scale`` (no
smaller than any logit, so no exponential overflows); a row whose value is
NaN and whose cotangent is not 0 gets a NaN coefficient (`live`). So a
reduction of the finite per-row losses only has finite gradients, and one
that includes a NaN loss has NaN gradients, never a silent 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from types import ModuleType
from typing import Any

from array_api_compat import device as array_device

from ._strategy.autodiff import clip_straight_through
from ._strategy.inplace import exp_minus, plus, times
from ._strategy.mode import Mode
from ._strategy.tiles import Rule, auto_block, sweep

Array = Any
Arrays = tuple[Array, ...]


def block_for(
    xp: ModuleType, mode: Mode, like: Array, n: int, m: int, block_size: int | None
) -> int:
    """The tile side for an ``(n, m)`` logit matrix of ``like``'s rows: ``max(n, m)`` is one tile.

    ``block_size=None`` picks one (`_strategy.tiles.auto_block`); so does a
    lazy (Dask) size that is not known yet (one tile).
    """
    if not (isinstance(n, int) and isinstance(m, int)):
        return 1 << 62
    if block_size is None:
        return auto_block(xp, mode, like, n, m, like.shape[-1])
    return block_size


def similarity(xp: ModuleType, mode: Mode, u: Array, v: Array) -> Array:
    """One tile of ``clip(u v^T, -1, 1)``, the clip straight through; a fresh array."""
    return clip_straight_through(xp, mode, u @ xp.matrix_transpose(v), -1.0, 1.0, owned=True)


def along(xp: ModuleType, x: Array, axis: int) -> Array:
    """A per-row value (``axis=1``) as a column, or a per-column value (``axis=0``) as a row."""
    return xp.expand_dims(x, axis=axis)


def zeros(xp: ModuleType, like: Array, shape: tuple[int, ...]) -> Array:
    return xp.zeros(shape, dtype=like.dtype, device=array_device(like))


def finite_rows(xp: ModuleType, mode: Mode, x: Array) -> tuple[Array, Array | None]:
    """``x`` with NaN entries replaced by 0, and per row 0 or NaN where it held one.

    None instead of the flags where values are free to read and every row
    is finite (``x`` comes back unchanged).
    """
    # A row sum is NaN where the row holds a NaN (a unit row holds no inf).
    bad = xp.isnan(xp.sum(x, axis=1))
    if mode.host_reads_free and not bool(xp.any(bad)):
        return x, None
    clean = xp.where(xp.expand_dims(bad, axis=1), xp.zeros_like(x), x)
    zero = zeros(xp, x, x.shape[:1])
    return clean, xp.where(bad, xp.full_like(zero, float("nan")), zero)


def live(xp: ModuleType, cotangent: Array, value: Array) -> Array:
    """A row's cotangent: 0 where it is 0, NaN where it is not and the row's value is NaN."""
    zero = xp.zeros_like(cotangent)
    return xp.where(cotangent == 0, zero, xp.where(xp.isnan(value), value, cotangent))


def safe(xp: ModuleType, value: Array, scale: Any) -> Array:
    """A per-row log-sum-exp with NaN replaced by ``scale``, no smaller than any logit."""
    return xp.where(xp.isnan(value), xp.zeros_like(value) + scale, value)


def running_start(xp: ModuleType, like: Array, scale: Any) -> Arrays:
    """The running log-sum-exp of no logits: maximum ``-scale`` (no logit is below), sum 0."""
    zero = zeros(xp, like, like.shape[:1])
    return zero - scale, zero


def _merge(
    xp: ModuleType, mode: Mode, state: Arrays, logits: Array, axis: int, *, owned: bool
) -> Arrays:
    """Fold a tile into the running ``(maximum, sum of exp(x - maximum))`` along ``axis``.

    ``owned``: ``logits`` is not needed afterwards and may be overwritten.
    """
    top, total = state
    new = xp.maximum(top, xp.max(logits, axis=axis))
    shifted = exp_minus(xp, mode, logits, along(xp, new, axis), owned=owned)
    return new, total * xp.exp(top - new) + xp.sum(shifted, axis=axis)


def log_sum_exp(xp: ModuleType, mode: Mode, block: int, *, columns: bool) -> Rule:
    """``(u, v, scale, row_nan, col_nan, positive) -> (row, col, kept)`` and its backward.

    ``u`` ``(n, d)`` and ``v`` ``(m, d)`` are unit rows without NaN;
    ``row_nan`` and ``col_nan`` are 0 or NaN per row (the rows that held NaN
    before, constants), or None for none; ``positive`` ``(n,)`` is each
    row's positive cosine (with ``columns``, ``n == m`` and it is also each
    column's). ``row`` is each row's loss, the log-sum-exp of its row of
    ``L = scale * clip(u v^T)`` less ``scale * positive``, NaN where the row
    or any column held NaN; ``col`` the same per column where ``columns``
    (else shape ``(0,)``); ``kept`` the logits of the one tile, or shape
    ``(0, 0)`` when tiled. ``scale`` is a Python number or a 0-d array.

    The positive is inside the rule for the scale's gradient: ``sum_j
    P_ij (c_ij - positive_i)`` entry by entry. Summed apart, ``sum_j P_ij
    c_ij`` and ``positive_i`` are both near 1 where positives are close
    (a learned temperature at its bound), and their difference lost digits.
    """
    return Rule(
        partial(_lse_compute, xp, mode, block, columns),
        partial(_lse_reverse, xp, mode, block, columns),
        2,
    )


def _lse_compute(
    xp: ModuleType,
    mode: Mode,
    block: int,
    columns: bool,
    u: Array,
    v: Array,
    scale: Any,
    row_nan: Array | None,
    col_nan: Array | None,
    positive: Array,
) -> Arrays:
    one = u.shape[0] <= block and v.shape[0] <= block

    def tile(rows: Arrays, cols: Arrays, row: Arrays, col: Arrays, kept: Arrays) -> Any:
        logits = times(xp, mode, similarity(xp, mode, rows[0], cols[0]), scale, owned=True)
        if columns:
            col = _merge(xp, mode, col, logits, 0, owned=False)
        row = _merge(xp, mode, row, logits, 1, owned=not one)
        return row, col, (logits,) if one else kept

    (row_top, row_sum), col, (kept,) = sweep(
        xp,
        mode,
        block,
        (u,),
        (v,),
        tile,
        lambda rows: running_start(xp, rows[0], scale),
        lambda cols: running_start(xp, cols[0], scale) if columns else (),
        (zeros(xp, u, (0, 0)),),
    )
    row_lse = row_top + xp.log(row_sum)
    col_lse = col[0] + xp.log(col[1]) if columns else zeros(xp, u, (0,))
    # NaN rows: in their own row, and (as a negative) in every row of the other side.
    if row_nan is not None:
        row_lse = row_lse + row_nan
        if columns:
            col_lse = col_lse + xp.sum(row_nan)
    if col_nan is not None:
        row_lse = row_lse + xp.sum(col_nan)
        if columns:
            col_lse = col_lse + col_nan
    shift = positive * scale
    return row_lse - shift, col_lse - shift if columns else col_lse, kept


def _lse_reverse(
    xp: ModuleType,
    mode: Mode,
    block: int,
    columns: bool,
    cotangents: Sequence[Array | None],
    needed: Sequence[bool],
    args: Arrays,
    outputs: Arrays,
) -> list[Array | None]:
    u, v, scale, _, _, positive = args
    row, col, kept = outputs
    g_row, g_col, g_kept = cotangents
    if not columns:
        g_col = None
    need = (needed[0], needed[1], needed[2] and not isinstance(scale, (int, float)))
    grads: list[Array | None] = [None] * 6
    if not (any(need) or needed[5]) or (g_row is None and g_col is None and g_kept is None):
        return grads
    # The log-sum-exp, again: the rule returns it less the positive logit.
    shift = positive * scale
    rows: Arrays = (u,)
    cols: Arrays = (v,)
    if g_row is not None:
        row_lse = row + shift
        rows = (u, live(xp, g_row, row_lse), safe(xp, row_lse, scale), shift)
    if g_col is not None:
        col_lse = col + shift
        cols = (v, live(xp, g_col, col_lse), safe(xp, col_lse, scale), shift)
    if needed[5]:
        coefficients = [side[1] for side in (rows, cols) if len(side) > 1]
        if coefficients:
            grads[5] = -sum(coefficients[1:], coefficients[0]) * scale
    if not any(need):
        return grads
    one = kept.shape[0] != 0
    du, dv, (dscale,) = sweep(
        xp,
        mode,
        block,
        rows,
        cols,
        partial(_lse_tile_gradient, xp, mode, scale, kept if one else None, need),
        partial(_accumulator, xp, need[0] and not one),
        partial(_accumulator, xp, need[1] and not one),
        (zeros(xp, u, ()),),
    )
    scaled_gradients(
        xp, need, scale, grads, (du[0], dv[0], dscale), (u, v), g_kept, kept if one else None
    )
    return grads


def scaled_gradients(
    xp: ModuleType,
    need: tuple[bool, bool, bool],
    scale: Any,
    grads: list[Array | None],
    sums: tuple[Array | None, Array | None, Array],
    clean: tuple[Array, Array],
    g_kept: Array | None,
    kept: Array | None,
) -> None:
    """Sets ``grads[0:3]`` from the sweep's sums of the logits' cotangent ``G``.

    ``sums`` are ``G v``, ``G^T u`` and ``sum(G L)``; the kept tile's own
    cotangent (present when the backward is differentiated) adds to them,
    the clip straight through. The logits are ``scale`` times the cosines,
    whence the final factors.
    """
    du, dv, dscale = sums
    u, v = clean
    if g_kept is not None and kept is not None:
        du = _add(du, g_kept @ v) if need[0] else du
        dv = _add(dv, xp.matrix_transpose(g_kept) @ u) if need[1] else dv
        if need[2]:
            dscale = dscale + inner(xp, g_kept, kept)
    if need[0] and du is not None:
        grads[0] = du * scale
    if need[1] and dv is not None:
        grads[1] = dv * scale
    if need[2]:
        grads[2] = dscale / scale


def _accumulator(xp: ModuleType, zeroed: bool, arrays: Arrays) -> Arrays:
    """A gradient's accumulator for the rows of ``arrays[0]``: zeros, or None for one tile.

    With one tile the first (and only) term is the gradient: no zeros to
    write and add to. Several tiles need arrays (a JAX loop's carry).
    """
    return (xp.zeros_like(arrays[0]),) if zeroed else (None,)


def _add(total: Array | None, term: Array) -> Array:
    return term if total is None else total + term


def inner(xp: ModuleType, x: Array, y: Array) -> Array:
    """``sum(x * y)`` of two matrices, without writing their product."""
    return xp.vecdot(xp.reshape(x, (-1,)), xp.reshape(y, (-1,)))


def _lse_tile_gradient(
    xp: ModuleType,
    mode: Mode,
    scale: Any,
    kept: Array | None,
    need: tuple[bool, bool, bool],
    rows: Arrays,
    cols: Arrays,
    du: Arrays,
    dv: Arrays,
    sums: Arrays,
) -> tuple[Arrays, Arrays, Arrays]:
    """One tile of ``G = a P + b Q``: adds ``G v``, ``G^T u`` and the scale's term.

    The scale's term is ``sum(a P (L - S_row)) + sum(b Q (L - S_col))``,
    entry by entry, with ``S`` the positive logits (``rows[3]``, ``cols[3]``).
    """
    fresh = kept is None
    logits = (
        times(xp, mode, similarity(xp, mode, rows[0], cols[0]), scale, owned=True)
        if kept is None
        else kept
    )
    by_rows, by_cols = len(rows) > 1, len(cols) > 1
    g = None
    if by_rows:
        # Overwrite the logits when nothing reads them after this.
        last = fresh and not (by_cols or need[2])
        g = times(xp, mode, exp_minus(xp, mode, logits, along(xp, rows[2], 1), owned=last),
                  along(xp, rows[1], 1), owned=True)  # fmt: skip
        if need[2]:
            sums = (sums[0] + inner(xp, g, logits - along(xp, rows[3], 1)),)
    if by_cols:
        last = fresh and not need[2]
        q = times(xp, mode, exp_minus(xp, mode, logits, along(xp, cols[2], 0), owned=last),
                  along(xp, cols[1], 0), owned=True)  # fmt: skip
        if need[2]:
            sums = (sums[0] + inner(xp, q, logits - along(xp, cols[3], 0)),)
        g = q if g is None else plus(xp, mode, g, q, owned=True)
    if g is None:
        return du, dv, sums
    if need[0]:
        du = (_add(du[0], g @ cols[0]),)
    if need[1]:
        dv = (_add(dv[0], xp.matrix_transpose(g) @ rows[0]),)
    return du, dv, sums
