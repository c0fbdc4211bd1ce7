"""The one path driver of the cosine kernels: fast with repairs, traced, or rescaled.

Which path runs is read from the call's `Mode` (see ``_strategy.mode``):

* reads free (eager on the host): the one-pass fast path on every row, and
  the rescaled path again on the rows outside its safe range only;
* under a trace with a traced conditional (JAX, ``torch.compile``): the
  fast path, and one conditional that recomputes the whole batch on the
  rescaled path when some row needs it;
* everywhere else (Dask, ``torch.func``, eager accelerators, where a read
  would synchronize): the rescaled path on everything, branch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

from ._rescale import in_safe_range, norm_range
from ._strategy.autodiff import traced_branch
from ._strategy.mode import Mode
from ._strategy.rows import all_within

Array = Any


class UnitRows(NamedTuple):
    """Vectors scaled to unit length, and the ``eps`` clamp as a separate factor.

    ``unit`` is ``x / ||x||`` (zero vectors stay zero, vectors holding NaN or
    inf are NaN); ``factor`` is ``min(1, ||x|| / eps)`` with ``axis``
    removed, or None without ``eps``. Kept apart because angles and the
    pairwise diagonal need the unclamped direction.
    """

    unit: Array
    factor: Array | None

    def clamped(self, xp: ModuleType, axis: int) -> Array:
        """``x / max(||x||, eps)``: the one place this quotient is formed."""
        if self.factor is None:
            return self.unit
        return self.unit * xp.expand_dims(self.factor, axis=axis)


class Cosine(NamedTuple):
    """A row-wise cosine, as the one field of a row result."""

    cosine: Array


Rows = TypeVar("Rows", UnitRows, Cosine)


# The one-pass path's result: the norms it divided by (its result is exact
# where they all lie in the safe range), and ``finish(ok)`` that builds the
# result. ``ok`` is None when every row is in range; otherwise it says which
# are, and ``finish`` first makes the others finite, so that no NaN leaks
# into the gradient through the ``where`` that later replaces them.
FastRows = tuple[tuple[Array, ...], Callable[[Array | None], Rows]]


def by_path(
    xp: ModuleType,
    mode: Mode,
    arrays: tuple[Array, ...],
    axis: int,
    *,
    empty: Callable[[], Rows],
    fast: Callable[[], FastRows[Rows]],
    traced: Callable[[Callable[..., Any]], Rows],
    rescaled: Callable[..., Rows],
) -> Rows:
    """The one path choice of the kernels, read from the call's ``mode``.

    * No data (a size-0 axis): ``empty()``, from shapes alone.
    * Reads free (``mode.host_reads_free``): the one-pass ``fast()`` on all
      rows, and ``rescaled`` again on the rows outside its safe range only.
    * Otherwise, with a traced conditional ``branch`` (JAX, ``torch.compile``):
      ``traced(branch)``, which runs the fast path and branches to the
      rescaled one for the whole batch when some row needs it (see
      ``_kernels``).
    * Otherwise (Dask, ``torch.func``, eager accelerators): ``rescaled`` on
      everything, branch-free.

    ``rescaled(*arrays, axis)`` is exact on every row.
    """
    if 0 in arrays[0].shape:
        return empty()
    if not mode.host_reads_free:
        branch = traced_branch(xp, mode)
        if branch is None:
            return rescaled(*arrays, axis)
        return traced(branch)
    norms, finish = fast()
    low, high = norm_range(xp, norms[0].dtype)
    if all_within(xp, norms, low, high):
        return finish(None)
    ok = in_safe_range(xp, norms[0])
    for norm in norms[1:]:
        ok = ok & in_safe_range(xp, norm)
    return _repair_rows(xp, finish(ok), ok, lambda *rows: rescaled(*rows, -1), arrays, axis)


def _repair_rows(
    xp: ModuleType,
    fast: Rows,
    fast_ok: Array,
    rescaled: Callable[..., Rows],
    arrays: tuple[Array, ...],
    axis: int,
) -> Rows:
    """Replace each field of ``fast`` where ``fast_ok`` is False by ``rescaled`` of those rows.

    ``fast_ok`` has the batch shape (``axis`` removed); each field has either
    that shape or the full shape of ``arrays`` (or is None). Only the rows
    that need it are gathered (``nonzero`` and ``take``) and recomputed, so
    the cost is in proportion to the bad rows. The results are spread back
    without a scatter: the position of a bad row in the compact result is
    the running count of bad rows, a ``cumulative_sum``.
    """
    moved = [xp.moveaxis(a, axis, -1) for a in arrays]
    rows = [xp.reshape(m, (-1, m.shape[-1])) for m in moved]
    bad = xp.reshape(xp.logical_not(fast_ok), (-1,))
    (bad_index,) = xp.nonzero(bad)
    repaired = rescaled(*(xp.take(r, bad_index, axis=0) for r in rows))
    position = xp.clip(xp.cumulative_sum(xp.astype(bad, bad_index.dtype)) - 1, min=0)
    merged: list[Array | None] = []
    for fast_value, repaired_value in zip(fast, repaired, strict=True):
        if fast_value is None:
            merged.append(None)
            continue
        spread = xp.take(repaired_value, position, axis=0)
        if spread.ndim == 2:
            spread = xp.moveaxis(xp.reshape(spread, moved[0].shape), -1, axis)
            merged.append(xp.where(xp.expand_dims(fast_ok, axis=axis), fast_value, spread))
        else:
            merged.append(xp.where(fast_ok, fast_value, xp.reshape(spread, fast_ok.shape)))
    return type(fast)(*merged)
