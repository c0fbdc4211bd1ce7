"""The cores of InfoNCE and NT-Xent: unit rows, rows holding NaN, positives, then the tiles.

Shared by the public losses (``cosinekit._contrastive``) and by the PyTorch
modules that gather rows from every process (``cosinekit.torch``): local
queries or anchors are scored against rows of the whole batch, so the
cores take them apart (``positive_offset``, ``anchor_offset``).
"""

from __future__ import annotations

import numbers
from types import ModuleType
from typing import Any, NamedTuple

from array_api_compat import device as array_device

from ._kernels import unit_rows
from ._ntxent_tiles import ntxent_rows
from ._strategy.autodiff import clip_straight_through
from ._strategy.mode import Mode
from ._strategy.tiles import with_reverse
from ._tiles import block_for, finite_rows, log_sum_exp
from ._validation import floating_dtypes, positive_eps, rows_of

Array = Any


class Positives(NamedTuple):
    """The key position of each query's positive, and which rows have a valid one.

    ``columns`` is None for key ``offset + i`` with a Python int ``offset``;
    otherwise an integer array ``(n,)``. ``valid`` is None where every
    position was checked (values readable, or fixed by shapes); otherwise
    rows whose position lies outside ``[0, m)`` get NaN, never another
    column's value.
    """

    columns: Array | None
    valid: Array | None
    offset: int = 0


def unit_matrix_rows(
    xp: ModuleType,
    mode: Mode,
    x: Array,
    y: Array | None,
    eps: object,
    names: tuple[str, str],
) -> tuple[Array, Array, Any]:
    """``(unit x, unit y, result dtype)``: rows ``x / max(||x||, eps)`` in the compute dtype.

    ``y=None`` gives ``x``'s rows twice (the same array). Both must be 2-D
    with the same number of features (errors name ``names``).
    """
    arrays = (x,) if y is None else (x, y)
    for name, array in zip(names, arrays, strict=False):
        rows_of(array, name)
    if y is not None and x.shape[1] != y.shape[1]:
        msg = (
            f"{names[0]} and {names[1]} must have the same number of features, got "
            f"shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
        raise ValueError(msg)
    result_dtype, compute_dtype = floating_dtypes(xp, *arrays)
    checked = positive_eps(eps, xp=xp, dtype=compute_dtype)

    def unit(a: Array) -> Array:
        return unit_rows(xp, mode, xp.astype(a, compute_dtype, copy=False), -1, checked).clamped(
            xp, -1
        )

    ux = unit(x)
    return ux, ux if y is None else unit(y), result_dtype


def info_nce_rows(
    xp: ModuleType,
    mode: Mode,
    queries: Array,
    keys: Array,
    scale: Any,
    positives: Positives,
    *,
    symmetric: bool,
    block_size: int | None,
) -> Array:
    """Per-query InfoNCE losses ``(n,)`` of unit rows; with ``symmetric``, of both directions.

    ``scale`` is ``1 / temperature`` (a Python number or a 0-d array).
    Row ``i``'s loss is ``lse_j(L_ij) - L_{i, p_i}`` with ``L = scale *
    clip(q k^T)``; symmetric adds the column's log-sum-exp. A query holding
    NaN makes its row NaN; a key holding NaN every row (it is a negative of
    every query). Of no queries: an empty array, connected to every input.
    """
    n, m = queries.shape[0], keys.shape[0]
    if n == 0 or m == 0:
        return xp.sum(queries @ xp.matrix_transpose(keys), axis=1) * scale
    q, q_nan = finite_rows(xp, mode, queries)
    k, k_nan = finite_rows(xp, mode, keys)
    columns, valid, offset = positives
    if columns is None:
        partner = k[offset : offset + n, :]
    else:
        safe = columns if valid is None else xp.where(valid, columns, xp.zeros_like(columns))
        partner = xp.take(k, safe, axis=0)
    # A product and a sum: their backward is two products, where a batched
    # vecdot's is two batched matrix products of degenerate shapes (slower).
    cosine = clip_straight_through(xp, mode, xp.sum(q * partner, axis=1), -1.0, 1.0)
    block = block_for(xp, mode, q, n, m, block_size)
    row, col, _ = with_reverse(
        xp,
        mode,
        log_sum_exp(xp, mode, block, columns=symmetric),
        q,
        k,
        scale,
        q_nan,
        k_nan,
        cosine,
    )
    loss = (row + col) / 2 if symmetric else row
    if valid is None:
        return loss
    return xp.where(valid, loss, xp.full_like(loss, float("nan")))


def ntxent_sums(
    xp: ModuleType,
    mode: Mode,
    anchors: Array,
    anchor_labels: Array,
    embeddings: Array,
    labels: Array,
    anchor_offset: int | Array,
    temperature: Any,
    block_size: int | None,
    eps: float | None = None,
) -> tuple[Array, Array]:
    """``(total, count)``: the sum of the NT-Xent pair losses of ``anchors``, and their number.

    Anchor ``i`` is row ``anchor_offset + i`` of ``embeddings`` ``(N, d)``
    (its pair with itself is excluded); its positives are the other rows
    with its label, its negatives the rows with another label, among all
    of ``embeddings``. ``total`` is a 0-d array in the compute dtype
    (float32 for half precision), ``count`` the number of positive pairs as
    a 0-d array of the same dtype. NT-Xent is ``total / count`` with
    ``anchors = embeddings`` (pass the same array: it is normalized once).
    ``temperature`` is positive (checked by the caller): a Python number or
    a 0-d array. No anchors or no embeddings: ``(0, 0)``, connected to the
    inputs. Labels are compared with ``==``; ``anchor_offset`` is a Python
    int or a 0-d integer array.
    """
    same = anchors is embeddings
    e, a, _ = unit_matrix_rows(
        xp, mode, embeddings, None if same else anchors, eps, ("embeddings", "anchors")
    )
    scale = 1 / temperature
    n, total_rows = a.shape[0], e.shape[0]
    if n == 0 or total_rows == 0:
        total = xp.sum(a @ xp.matrix_transpose(e)) * scale
        return total, xp.zeros_like(total)
    device = array_device(a)
    index = xp.arange(n, device=device)
    if isinstance(anchor_offset, numbers.Integral):
        anchor_index = index + int(anchor_offset)
    else:
        anchor_index = index + xp.astype(anchor_offset, index.dtype)
    block = block_for(xp, mode, e, n, total_rows, block_size)
    if (
        same
        and anchor_labels is labels
        and isinstance(anchor_offset, numbers.Integral)
        and int(anchor_offset) == 0
    ):
        rule = ntxent_rows(xp, mode, block, shared=True)
        per_row, count, *_ = with_reverse(xp, mode, rule, e, scale, labels, index)
    else:
        rule = ntxent_rows(xp, mode, block, shared=False)
        per_row, count, *_ = with_reverse(
            xp,
            mode,
            rule,
            a,
            e,
            scale,
            anchor_labels,
            labels,
            anchor_index,
            xp.arange(total_rows, device=device),
        )
    return xp.sum(per_row), xp.astype(xp.sum(count), per_row.dtype)
