"""The contrastive losses tile by tile: each formula once, its backward beside it.

Both losses reduce the logits ``L = scale * clip(U V^T, -1, 1)`` of unit
rows ``U`` ``(n, d)`` and ``V`` ``(m, d)``. The matrix is never formed when
it exceeds one ``block x block`` tile: the forward folds each tile into
running per-row (and per-column) values, and the backward recomputes each
tile from those values (`_strategy.tiles.sweep` runs the loop,
`_strategy.tiles.with_reverse` attaches the backward). Beyond the inputs
and their gradients that takes ``O((n + m) d + block**2)`` memory. One tile
is the dense computation: the same code, run once, and the tile is kept
for the backward instead of recomputed.

``log_sum_exp`` (InfoNCE)
    Per row, and per column for the symmetric loss, the log-sum-exp of
    ``L``: a running maximum and a sum of exponentials shifted by it (the
    online log-sum-exp). Its derivative in the direction of the row values'
    cotangents ``a`` (columns: ``b``) is ``G = a_i P_ij + b_j Q_ij`` with
    ``P = exp(L - lse_row)`` and ``Q = exp(L - lse_col)``, so
    ``dU = scale G V``, ``dV = scale G^T U`` and ``dscale = sum(G * S)``.
``ntxent_rows`` (NT-Xent)
    Per anchor row ``i``: the log-sum-exp ``N_i`` of its negatives (other
    labels; ``-inf``, the log of an empty sum, without any), then the sum
    ``T_i`` over its positives ``j`` (equal labels, itself excluded) of
    ``softplus(N_i - L_ij)`` and ``w_i``, the sum of ``sigmoid(N_i -
    L_ij)``. A positive entry's derivative is ``-sigmoid(N_i - L_ij)``, a
    negative's ``w_i exp(L_ik - N_i)``.

NaN: a row holding NaN (a unit row of a vector with NaN or inf) makes every
value it takes part in NaN. The backward computes each tile from the rows
with NaN replaced by 0 and from per-row values with NaN replaced by
``scale`` (at least every logit, so no exponential overflows); a row whose
value is NaN and whose cotangent is not 0 gets a NaN coefficient. So a
reduction of the finite per-row losses only has finite gradients, and one
that includes a NaN loss has NaN gradients, never a silent 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from ._strategy.autodiff import clip_straight_through
from ._strategy.mode import Mode
from ._strategy.namespaces import index_dtype
from ._strategy.tiles import Rule, sweep

Array = Any
Arrays = tuple[Array, ...]

#: ``block_size=None`` computes a logit matrix of up to this many elements as
#: one tile (dense), and a larger one in tiles of ``AUTO_BLOCK`` rows and
#: columns. Chosen by ``benchmarks/topics/contrastive.py`` (the dense form
#: writes its matrix several times; tiles stay in cache).
AUTO_DENSE = 2**23
AUTO_BLOCK = 2048


def block_for(n: int, m: int, block_size: int | None) -> int:
    """The tile size for an ``(n, m)`` logit matrix: ``max(n, m)`` means one tile."""
    if block_size is None:
        return max(n, m, 1) if n * m <= AUTO_DENSE else AUTO_BLOCK
    return block_size


def _similarity(xp: ModuleType, mode: Mode, u: Array, v: Array) -> Array:
    """One tile of ``clip(u v^T, -1, 1)``, the clip straight through."""
    return clip_straight_through(xp, mode, u @ xp.matrix_transpose(v), -1.0, 1.0, owned=True)


def _rows_of(xp: ModuleType, x: Array, axis: int) -> Array:
    """A per-row value (``axis=1``) or per-column value (``axis=0``) as a column or row."""
    return xp.expand_dims(x, axis=axis)


def finite_rows(xp: ModuleType, x: Array) -> tuple[Array, Array]:
    """``x`` with NaN entries replaced by 0, and per row 0 or NaN (where it held a NaN)."""
    bad = xp.isnan(x)
    clean = xp.where(bad, xp.zeros_like(x), x)
    zero = xp.zeros(x.shape[:1], dtype=x.dtype, device=_device(x))
    flag = xp.where(xp.any(bad, axis=1), xp.full_like(zero, float("nan")), zero)
    return clean, flag


def _device(x: Array) -> Any:
    from array_api_compat import device

    return device(x)


def _live(xp: ModuleType, cotangent: Array, value: Array) -> Array:
    """The cotangent of a row, 0 where it is 0, NaN where it is not and the value is NaN."""
    zero = xp.zeros_like(cotangent)
    return xp.where(cotangent == 0, zero, xp.where(xp.isnan(value), value, cotangent))


def _safe(xp: ModuleType, value: Array, scale: Any) -> Array:
    """A per-row log-sum-exp with NaN replaced by ``scale``, the largest possible logit."""
    return xp.where(xp.isnan(value), xp.zeros_like(value) + scale, value)


# --- InfoNCE: the log-sum-exp per row and per column ----------------------------


def _merge(xp: ModuleType, state: Arrays, logits: Array, axis: int) -> Arrays:
    """Fold a tile into the running ``(maximum, sum of exp(x - maximum))`` along ``axis``."""
    top, total = state
    new = xp.maximum(top, xp.max(logits, axis=axis))
    shifted = xp.exp(logits - _rows_of(xp, new, axis))
    return new, total * xp.exp(top - new) + xp.sum(shifted, axis=axis)


def _start(xp: ModuleType, like: Array, scale: Any) -> Arrays:
    """The running log-sum-exp of no logits: maximum ``-scale`` (every logit is above), sum 0."""
    zero = xp.zeros(like.shape[:1], dtype=like.dtype, device=_device(like))
    return zero - scale, zero


def log_sum_exp(
    xp: ModuleType, mode: Mode, block: int, *, columns: bool
) -> Rule:
    """``(u, v, scale, row_nan, col_nan) -> (row_lse, col_lse, kept)`` and its backward.

    ``u`` ``(n, d)`` and ``v`` ``(m, d)`` are finite unit rows; ``row_nan``
    and ``col_nan`` are 0 or NaN per row, the rows that held NaN before they
    were zeroed (constants). ``row_lse`` is the log-sum-exp of each row of
    ``scale * clip(u v^T)``, NaN where the row or any column is;
    ``col_lse`` the same per column where ``columns`` (else shape ``(0,)``);
    ``kept`` the one tile ``clip(u v^T)``, or shape ``(0, 0)`` when tiled.
    """

    def forward(u: Array, v: Array, scale: Any, row_nan: Array, col_nan: Array) -> Arrays:
        n, m = u.shape[0], v.shape[0]
        one = n <= block and m <= block

        def tile(rows: Arrays, cols: Arrays, row: Arrays, col: Arrays, kept: Arrays) -> Any:
            s = _similarity(xp, mode, rows[0], cols[0])
            logits = s * scale
            row = _merge(xp, row, logits, 1)
            if columns:
                col = _merge(xp, col, logits, 0)
            return row, col, (s,) if one else kept

        empty = xp.zeros((0, 0), dtype=u.dtype, device=_device(u))
        (row_top, row_sum), col, (kept,) = sweep(
            xp,
            block,
            (u,),
            (v,),
            tile,
            lambda rows: _start(xp, rows[0], scale),
            lambda cols: _start(xp, cols[0], scale) if columns else (),
            (empty,),
        )
        any_row, any_col = xp.sum(row_nan), xp.sum(col_nan)
        row_lse = row_top + xp.log(row_sum) + row_nan + any_col
        if not columns:
            return row_lse, xp.zeros((0,), dtype=u.dtype, device=_device(u)), kept
        col_lse = col[0] + xp.log(col[1]) + col_nan + any_row
        return row_lse, col_lse, kept

    def backward(
        cotangents: Sequence[Array | None], needed: Sequence[bool], args: Arrays, outputs: Arrays
    ) -> list[Array | None]:
        u, v, scale, _, _ = args
        row_lse, col_lse, kept = outputs
        g_row, g_col, g_kept = cotangents
        grads: list[Array | None] = [None] * 5
        need_u, need_v, need_scale = needed[0], needed[1], needed[2]
        if not columns:
            g_col = None
        if g_row is None and g_col is None and g_kept is None:
            return grads
        one = kept.shape[0] != 0
        # Per row: (u, coefficient, safe lse); per column: (v, coefficient, safe lse).
        rows = (u,) if g_row is None else (u, _live(xp, g_row, row_lse), _safe(xp, row_lse, scale))
        cols = (v,) if g_col is None else (v, _live(xp, g_col, col_lse), _safe(xp, col_lse, scale))

        def tile(rows_i: Arrays, cols_j: Arrays, du: Arrays, dv: Arrays, sums: Arrays) -> Any:
            s = kept if one else _similarity(xp, mode, rows_i[0], cols_j[0])
            logits = s * scale
            g = None
            if len(rows_i) > 1:
                g = _rows_of(xp, rows_i[1], 1) * xp.exp(logits - _rows_of(xp, rows_i[2], 1))
            if len(cols_j) > 1:
                q = _rows_of(xp, cols_j[1], 0) * xp.exp(logits - _rows_of(xp, cols_j[2], 0))
                g = q if g is None else g + q
            if g is None:
                return du, dv, sums
            if need_scale:
                sums = (sums[0] + xp.sum(g * s),)
            if need_u:
                du = (du[0] + g @ cols_j[0],)
            if need_v:
                dv = (dv[0] + xp.matrix_transpose(g) @ rows_i[0],)
            return du, dv, sums

        zero = xp.zeros((), dtype=u.dtype, device=_device(u))
        du, dv, (dscale,) = sweep(
            xp,
            block,
            rows,
            cols,
            tile,
            lambda r: (xp.zeros_like(r[0]),) if need_u else (),
            lambda c: (xp.zeros_like(c[0]),) if need_v else (),
            (zero,),
        )
        if need_u:
            grads[0] = du[0] * scale if g_kept is None else du[0] * scale + g_kept @ v
        if need_v:
            grads[1] = dv[0] * scale
            if g_kept is not None:
                grads[1] = grads[1] + xp.matrix_transpose(g_kept) @ u
        if need_scale:
            grads[2] = dscale
        return grads

    return Rule(forward, backward)


# --- NT-Xent: per anchor, its negatives' log-sum-exp, then its positive pairs ------


def _pairs(xp: ModuleType, rows: Arrays, cols: Arrays) -> tuple[Array, Array]:
    """``(positive, negative)`` masks of a tile: equal labels but not itself, other labels."""
    same = _rows_of(xp, rows[1], 1) == _rows_of(xp, cols[1], 0)
    itself = _rows_of(xp, rows[2], 1) == _rows_of(xp, cols[2], 0)
    return same & xp.logical_not(itself), xp.logical_not(same)


def _softplus_sigmoid(xp: ModuleType, d: Array) -> tuple[Array, Array]:
    """``softplus(d)`` and ``sigmoid(d) = exp(d - softplus(d))``; NaN stays NaN, quietly."""
    nan = xp.isnan(d)
    clean = xp.where(nan, xp.zeros_like(d), d)
    softplus = xp.logaddexp(clean, xp.zeros((), dtype=d.dtype, device=_device(d)))
    sigmoid = xp.exp(clean - softplus)
    return xp.where(nan, d, softplus), xp.where(nan, d, sigmoid)


def ntxent_rows(xp: ModuleType, mode: Mode, block: int, *, shared: bool) -> Rule:
    """``(a, e, scale, a_labels, e_labels, a_index, e_index) -> (total, negatives, w, count)``.

    Anchor ``i`` (unit row ``a[i]``, label ``a_labels[i]``) is row
    ``a_index[i]`` of the unit rows ``e``; per anchor: ``total`` is the sum
    of its positive pairs' losses, ``negatives`` the log-sum-exp ``N_i``,
    ``w`` the sum of the pairs' ``sigmoid(N_i - L_ij)`` and ``count`` the
    number of its positives (an integer array). Rows holding NaN are taken
    as they are: the values they take part in are NaN. ``shared``: every
    row is an anchor, and the rule takes ``(e, scale, labels, index)``
    (``torch.compile`` refuses a tensor passed twice to a Function).
    """
    rule = _ntxent_rule(xp, mode, block)
    if not shared:
        return rule

    def compute(e: Array, scale: Any, labels: Array, index: Array) -> Arrays:
        return rule.compute(e, e, scale, labels, labels, index, index)

    def reverse(
        cotangents: Sequence[Array | None], needed: Sequence[bool], args: Arrays, outputs: Arrays
    ) -> list[Array | None]:
        e, scale, labels, index = args
        both = (needed[0], needed[0], needed[1], False, False, False, False)
        grads = rule.reverse(cotangents, both, (e, e, scale, labels, labels, index, index), outputs)
        de = None if grads[0] is None or grads[1] is None else grads[0] + grads[1]
        return [de, grads[2], None, None]

    return Rule(compute, reverse)


def _ntxent_rule(xp: ModuleType, mode: Mode, block: int) -> Rule:

    def forward(
        a: Array, e: Array, scale: Any, a_labels: Array, e_labels: Array, a_index: Array,
        e_index: Array,
    ) -> Arrays:
        low = xp.zeros((), dtype=a.dtype, device=_device(a)) - scale
        zero = xp.zeros((), dtype=a.dtype, device=_device(a))
        count_dtype = index_dtype(xp)

        def first(rows: Arrays, cols: Arrays, row: Arrays, col: Arrays, sums: Arrays) -> Any:
            positive, negative = _pairs(xp, rows, cols)
            logits = _similarity(xp, mode, rows[0], cols[0]) * scale
            masked = xp.where(negative, logits, low)
            top, total, positives, negatives = row
            new = xp.maximum(top, xp.max(masked, axis=1))
            shifted = xp.where(negative, xp.exp(masked - _rows_of(xp, new, 1)), zero)
            return (
                (
                    new,
                    total * xp.exp(top - new) + xp.sum(shifted, axis=1),
                    positives + xp.sum(xp.astype(positive, count_dtype), axis=1),
                    negatives + xp.sum(xp.astype(negative, count_dtype), axis=1),
                ),
                col,
                sums,
            )

        def first_start(rows: Arrays) -> Arrays:
            top, total = _start(xp, rows[0], scale)
            count = xp.zeros(rows[0].shape[:1], dtype=count_dtype, device=_device(a))
            return top, total, count, count

        rows, cols = (a, a_labels, a_index), (e, e_labels, e_index)
        (top, total, count, negatives), _, _ = sweep(
            xp, block, rows, cols, first, first_start, lambda c: (), ()
        )
        some = negatives > 0
        # The log of an empty sum is -inf: softplus(-inf) = 0 for a row without negatives.
        neg_lse = xp.where(
            some,
            top + xp.log(xp.where(some, total, xp.ones_like(total))),
            xp.full_like(total, -float("inf")),
        )

        def second(rows: Arrays, cols: Arrays, row: Arrays, col: Arrays, sums: Arrays) -> Any:
            positive, _ = _pairs(xp, rows, cols)
            logits = _similarity(xp, mode, rows[0], cols[0]) * scale
            loss, sigmoid = _softplus_sigmoid(xp, _rows_of(xp, rows[3], 1) - logits)
            total, weight = row
            total = total + xp.sum(xp.where(positive, loss, zero), axis=1)
            weight = weight + xp.sum(xp.where(positive, sigmoid, zero), axis=1)
            return (total, weight), col, sums

        (loss, weight), _, _ = sweep(
            xp,
            block,
            (*rows, neg_lse),
            cols,
            second,
            lambda r: (xp.zeros_like(r[3]), xp.zeros_like(r[3])),
            lambda c: (),
            (),
        )
        return loss, neg_lse, weight, count

    def backward(
        cotangents: Sequence[Array | None], needed: Sequence[bool], args: Arrays, outputs: Arrays
    ) -> list[Array | None]:
        a, e, scale, a_labels, e_labels, a_index, e_index = args
        total, neg_lse, weight, _ = outputs
        g_total, g_neg, g_weight, _ = cotangents
        grads: list[Array | None] = [None] * 7
        need_a, need_e, need_scale = needed[0], needed[1], needed[2]
        if (g_total is None and g_neg is None and g_weight is None) or not (
            need_a or need_e or need_scale
        ):
            return grads
        a_clean, e_clean = finite_rows(xp, a)[0], finite_rows(xp, e)[0]
        safe = _safe(xp, neg_lse, scale)
        zero = xp.zeros_like(safe)
        nil = xp.zeros((), dtype=a.dtype, device=_device(a))
        cols = (e_clean, e_labels, e_index)

        def pair_terms(rows: Arrays, cols_j: Arrays) -> tuple[Array, Array, Array, Array, Array]:
            positive, negative = _pairs(xp, rows, cols_j)
            s = _similarity(xp, mode, rows[0], cols_j[0])
            logits = s * scale
            sigmoid = _softplus_sigmoid(xp, _rows_of(xp, rows[3], 1) - logits)[1]
            return positive, negative, s, logits, sigmoid

        rows = (a_clean, a_labels, a_index, safe)
        # The negatives' coefficient: d(total)/dN = w, d(N)/dN = 1, d(w)/dN = sum s(1 - s).
        on_negatives = zero
        on_positives: list[tuple[Array, bool]] = []
        if g_total is not None:
            live = _live(xp, g_total, total)
            on_negatives = on_negatives + live * xp.where(xp.isnan(weight), zero, weight)
            on_positives.append((live, False))
        if g_neg is not None:
            on_negatives = on_negatives + _live(xp, g_neg, neg_lse)
        if g_weight is not None:
            live = _live(xp, g_weight, weight)

            def spread(r: Arrays, c: Arrays, row: Arrays, col: Arrays, sums: Arrays) -> Any:
                positive, _, _, _, sigmoid = pair_terms(r, c)
                slope = xp.where(positive, sigmoid * (1 - sigmoid), nil)
                return (row[0] + xp.sum(slope, axis=1),), col, sums

            (slopes,), _, _ = sweep(
                xp, block, rows, cols, spread, lambda r: (xp.zeros_like(r[3]),), lambda c: (), ()
            )
            on_negatives = on_negatives + live * slopes
            on_positives.append((live, True))

        def tile(r: Arrays, c: Arrays, da: Arrays, de: Arrays, sums: Arrays) -> Any:
            positive, negative, s, logits, sigmoid = pair_terms(r, c)
            slope = None
            g_pos = None
            for k, (_, curved) in enumerate(on_positives):
                factor = sigmoid
                if curved:
                    slope = sigmoid * (1 - sigmoid) if slope is None else slope
                    factor = slope
                term = _rows_of(xp, r[5 + k], 1) * factor
                g_pos = term if g_pos is None else g_pos + term
            shift = xp.where(negative, logits - _rows_of(xp, r[3], 1), nil)
            g = xp.where(negative, _rows_of(xp, r[4], 1) * xp.exp(shift), nil)
            if g_pos is not None:
                g = xp.where(positive, -g_pos, g)
            if need_scale:
                sums = (sums[0] + xp.sum(g * s),)
            if need_a:
                da = (da[0] + g @ c[0],)
            if need_e:
                de = (de[0] + xp.matrix_transpose(g) @ r[0],)
            return da, de, sums

        da, de, (dscale,) = sweep(
            xp,
            block,
            (*rows, on_negatives, *(c for c, _ in on_positives)),
            cols,
            tile,
            lambda r: (xp.zeros_like(r[0]),) if need_a else (),
            lambda c: (xp.zeros_like(c[0]),) if need_e else (),
            (xp.zeros((), dtype=a.dtype, device=_device(a)),),
        )
        if need_a:
            grads[0] = da[0] * scale
        if need_e:
            grads[1] = de[0] * scale
        if need_scale:
            grads[2] = dscale
        return grads

    return Rule(forward, backward)
