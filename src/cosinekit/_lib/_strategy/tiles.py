"""Tiles: the loop over tiles of a matrix that is never formed, and a hand-written reverse rule.

The tiled losses (``_lib/_tiles.py``) write their formula once, per tile,
against the array API. What the standard lacks is here:

``sweep``
    Runs a tile function over every ``(row block, column block)`` tile of
    an ``(n, m)`` matrix, row blocks outside, column blocks inside, with
    per-row accumulators (finished at the end of each row block), per-column
    accumulators (carried across row blocks) and totals. A Python loop on
    eager libraries (eager JAX included: each operation is dispatched
    from a cache, where a loop would compile anew on every call) and Dask;
    under a JAX trace a ``lax.fori_loop`` over the full blocks plus one
    call for the ragged last block, so that the program holds at most four
    copies of the tile whatever the number of tiles (an unrolled loop
    compiles for minutes at a million rows).
``auto_block``
    The tile size that ``block_size=None`` picks, per library and device:
    where tiles are as fast as the dense form, or faster (they stay in
    cache; the dense form writes its matrix several times), and where the
    matrix would be too large. Measured by ``benchmarks/topics/contrastive.py``.
``with_reverse``
    A function whose reverse-mode derivative is given by hand: the tiles are
    recomputed in the backward from a few per-row values instead of being
    kept by autodiff (which would keep every tile: ``n * m`` memory). A
    ``jax.custom_vjp`` on JAX and an ``autograd.Function`` on PyTorch (eager
    autograd, ``torch.compile``, ``torch.func``); elsewhere (no autodiff)
    the forward alone. The backward is written in differentiable operations
    of the forward's inputs and outputs, so differentiating it again
    (``create_graph=True``, ``grad`` of ``grad``) is exact.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NamedTuple

from array_api_compat import (
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

from .mode import Autodiff, Mode

Array = Any
Arrays = tuple[Array, ...]
# tile(rows_i, cols_j, row_acc, col_acc_j, totals) -> (row_acc, col_acc_j, totals)
Tile = Callable[[Arrays, Arrays, Arrays, Arrays, Arrays], tuple[Arrays, Arrays, Arrays]]


#: Above this many entries the logit matrix is always tiled (1 GiB in float32;
#: autograd of the dense form keeps about three such matrices).
MEMORY_ENTRIES = 2**28
#: From this many entries (2048 x 2048) tiles are faster where they are used.
FAST_ENTRIES = 2**22
#: Elsewhere (accelerators, torch.compile, which fuses the dense form and
#: unrolls the tiles' loop) the dense form runs up to this many entries.
DENSE_ENTRIES = 2**26


def auto_block(xp: ModuleType, mode: Mode, like: Array, n: int, m: int, features: int) -> int:
    """The tile side for ``block_size=None``; ``max(n, m)`` or more means one tile (dense).

    On the CPU (measured, see the module docstring): JAX under a trace
    with at most 128 features takes tiles of 512 from ``FAST_ENTRIES``:
    XLA fuses the dense form's passes but still writes its matrix. NumPy
    (a forward only) and eager PyTorch with at most 256 features take
    tiles of 1024. With more features the tiles' second matrix product
    costs more than the cache saves, so JAX and PyTorch stay dense up to
    ``MEMORY_ENTRIES``. Dask stays one
    tile: its chunks already bound the memory of the dense form.
    """
    entries = n * m
    dense = max(n, m, 1)
    if is_dask_namespace(xp):
        return dense
    tile = _cpu_tile(xp, mode, like, features)
    if entries > MEMORY_ENTRIES:
        return tile or 2048
    if tile is None:
        return dense if entries <= DENSE_ENTRIES else 2048
    return tile if tile and entries >= FAST_ENTRIES else dense


def _cpu_tile(xp: ModuleType, mode: Mode, like: Array, features: int) -> int | None:
    """The tile that beats the dense form on the CPU (0: none does); None off the CPU."""
    if is_jax_namespace(xp):
        import jax

        if jax.default_backend() != "cpu":
            return None
        return 512 if features <= 128 else 0
    if is_torch_namespace(xp):
        if mode.autodiff is Autodiff.TORCH_COMPILE or not like.is_cpu:
            return None
        return 1024 if features <= 256 else 0
    return 1024 if is_numpy_namespace(xp) else None


def sweep(
    xp: ModuleType,
    mode: Mode,
    block: int,
    rows: Arrays,
    cols: Arrays,
    tile: Tile,
    row_start: Callable[[Arrays], Arrays],
    col_start: Callable[[Arrays], Arrays],
    totals: Arrays,
) -> tuple[Arrays, Arrays, Arrays]:
    """Fold ``tile`` over every tile; returns ``(row results, column results, totals)``.

    ``rows`` are arrays whose leading axis is the ``n`` rows (sliced per row
    block), ``cols`` those of the ``m`` columns. ``row_start(rows_i)`` gives
    the accumulators of a row block, leading axis its rows; after its last
    tile they become that block's rows of the row results.
    ``col_start(cols)`` gives the column accumulators of all ``m`` columns
    (each tile sees its block's slice). Accumulators keep their shapes and
    dtypes through ``tile``; an accumulator may be None (one tile: the
    tile sets it). With no rows or no columns no tile runs.
    """
    if is_jax_namespace(xp) and mode.autodiff is Autodiff.JAX:
        return _jax_sweep(block, rows, cols, tile, row_start, col_start, totals)
    return _python_sweep(xp, block, rows, cols, tile, row_start, col_start, totals)


def _python_sweep(
    xp: ModuleType,
    block: int,
    rows: Arrays,
    cols: Arrays,
    tile: Tile,
    row_start: Callable[[Arrays], Arrays],
    col_start: Callable[[Arrays], Arrays],
    totals: Arrays,
) -> tuple[Arrays, Arrays, Arrays]:
    n, m = rows[0].shape[0], cols[0].shape[0]

    def blocks(arrays: Arrays, count: int) -> list[Arrays]:
        if count <= block:
            return [arrays] if count else []
        return [
            tuple(None if a is None else a[s : min(s + block, count), ...] for a in arrays)
            for s in range(0, count, block)
        ]

    col_blocks = blocks(cols, m)
    col_accs = blocks(col_start(cols), m)
    row_results = []
    for rows_i in blocks(rows, n):
        acc = row_start(rows_i)
        for j, cols_j in enumerate(col_blocks):
            acc, col_accs[j], totals = tile(rows_i, cols_j, acc, col_accs[j], totals)
        row_results.append(acc)
    row_out = _joined(xp, row_results, row_start, rows)
    return row_out, _joined(xp, col_accs, col_start, cols), totals


def _joined(
    xp: ModuleType, parts: list[Arrays], start: Callable[[Arrays], Arrays], arrays: Arrays
) -> Arrays:
    if not parts:
        return start(arrays)
    if len(parts) == 1:
        return parts[0]
    return tuple(
        None if pieces[0] is None else xp.concat(list(pieces), axis=0)
        for pieces in zip(*parts, strict=True)
    )


def _jax_sweep(
    block: int,
    rows: Arrays,
    cols: Arrays,
    tile: Tile,
    row_start: Callable[[Arrays], Arrays],
    col_start: Callable[[Arrays], Arrays],
    totals: Arrays,
) -> tuple[Arrays, Arrays, Arrays]:
    from jax import lax

    n, m = rows[0].shape[0], cols[0].shape[0]

    # None stands for an accumulator that is not kept (see `sweep`).
    def take(arrays: Arrays, start: Any, size: int, count: int) -> Arrays:
        if size == count:
            return arrays
        return tuple(
            None if a is None else lax.dynamic_slice_in_dim(a, start, size, axis=0) for a in arrays
        )

    def put(full: Arrays, part: Arrays, start: Any) -> Arrays:
        return tuple(
            p
            if f is None or f.shape == p.shape
            else lax.dynamic_update_slice_in_dim(f, p, start, axis=0)
            for f, p in zip(full, part, strict=True)
        )

    def row_block(start: Any, size: int, carry: tuple[Arrays, Arrays, Arrays]) -> Any:
        row_out, col_acc, sums = carry
        rows_i = take(rows, start, size, n)
        acc = row_start(rows_i)

        def col_block(c_start: Any, c_size: int, inner: tuple[Arrays, Arrays, Arrays]) -> Any:
            acc, col_acc, sums = inner
            part = take(col_acc, c_start, c_size, m)
            acc, part, sums = tile(rows_i, take(cols, c_start, c_size, m), acc, part, sums)
            return acc, put(col_acc, part, c_start), sums

        acc, col_acc, sums = _jax_blocks(m, block, col_block, (acc, col_acc, sums))
        return put(row_out, acc, start), col_acc, sums

    row_out, col_acc, sums = _jax_blocks(
        n, block, row_block, (row_start(rows), col_start(cols), totals)
    )
    return row_out, col_acc, sums


def _jax_blocks(count: int, block: int, body: Callable[..., Any], carry: Any) -> Any:
    """``body(start, size, carry)`` over the blocks of ``count`` rows: a loop, then the rest."""
    from jax import lax

    full, rest = divmod(count, block)
    if full == 1:
        carry = body(0, block, carry)
    elif full > 1:
        carry = lax.fori_loop(0, full, lambda b, c: body(b * block, block, c), carry)
    if rest:
        carry = body(full * block, rest, carry)
    return carry


class Rule(NamedTuple):
    """A function of some arrays with its reverse-mode derivative written by hand.

    ``compute(*args)`` returns a tuple of arrays. ``reverse(cotangents,
    needed, args, outputs)`` returns one gradient (or None) per argument:
    ``cotangents`` has one entry per output, None where it is known to be
    zero; ``needed`` says per argument whether its gradient is wanted. Both
    see the arguments as given, Python numbers included (constants: never
    differentiated).
    """

    # Not named forward and backward: Dynamo would take them for the
    # autograd.Function's own methods while it traces one.
    compute: Callable[..., Arrays]
    reverse: Callable[[Sequence[Array | None], Sequence[bool], Arrays, Arrays], Sequence[Any]]
    # The outputs past the first `primary` are what the backward reads back
    # (per-row values, a kept tile): their cotangents are zero unless the
    # backward itself is differentiated.
    primary: int


def with_reverse(xp: ModuleType, mode: Mode, rule: Rule, *args: Any) -> Arrays:
    """``rule.compute(*args)``, differentiated by ``rule.reverse`` where gradients are taken."""
    if is_jax_namespace(xp):
        return _jax_with_reverse(rule, args)
    if is_torch_namespace(xp) and _torch_records(mode, args):
        from ._torch_autograd import HandWrittenReverse

        outputs: Arrays = HandWrittenReverse.apply(rule, *args)
        return outputs
    return rule.compute(*args)


def _torch_records(mode: Mode, args: tuple[Any, ...]) -> bool:
    if mode.autodiff is Autodiff.TORCH_FUNC:
        return True
    # Under torch.compile too: Dynamo traces a setup_context-style Function
    # that records nothing as an old-style one (forward(ctx, ...)).
    if mode.autodiff not in (Autodiff.TORCH_AUTOGRAD, Autodiff.TORCH_COMPILE):
        return False
    import torch

    return torch.is_grad_enabled() and any(
        isinstance(a, torch.Tensor) and a.requires_grad for a in args
    )


def _jax_with_reverse(rule: Rule, args: tuple[Any, ...]) -> Arrays:
    import jax
    from jax.custom_derivatives import SymbolicZero

    # Python numbers (and None) stay constants, closed over; arrays are the arguments.
    where = [i for i, a in enumerate(args) if a is not None and not isinstance(a, numbers.Number)]

    def full(arrays: Sequence[Any]) -> tuple[Any, ...]:
        merged = list(args)
        for i, a in zip(where, arrays, strict=True):
            merged[i] = a
        return tuple(merged)

    # Which arguments are differentiated: known when fwd is traced, before bwd.
    perturbed: list[bool] = []

    @jax.custom_vjp  # type: ignore[untyped-decorator]
    def function(*arrays: Any) -> Arrays:
        return rule.compute(*full(arrays))

    def fwd(*primals: Any) -> tuple[Arrays, tuple[Arrays, Arrays]]:
        values = tuple(p.value for p in primals)
        perturbed[:] = [bool(p.perturbed) for p in primals]
        outputs = rule.compute(*full(values))
        return outputs, (values, outputs)

    def bwd(residuals: tuple[Arrays, Arrays], cotangents: Arrays) -> tuple[Any, ...]:
        values, outputs = residuals
        live = [None if isinstance(c, SymbolicZero) else c for c in cotangents]
        needed = [False] * len(args)
        for i, p in zip(where, perturbed, strict=True):
            needed[i] = p
        grads = rule.reverse(live, needed, full(values), outputs)
        return tuple(grads[i] for i in where)

    function.defvjp(fwd, bwd, symbolic_zeros=True)
    result: Arrays = function(*_varying_alike([args[i] for i in where]))
    return result


def _varying_alike(arrays: list[Any]) -> list[Any]:
    """``arrays``, each made varying over every manual mesh axis any of them varies over.

    Inside ``jax.shard_map`` a replicated argument (a learned temperature)
    meets rows that vary over the mesh: the hand-written backward gives it
    a varying cotangent, which JAX refuses for an input that does not vary.
    Made varying first (``pcast(..., to="varying")``, older JAX ``pvary``),
    its cotangent is summed over the devices by the cast's transpose, as
    JAX's own derivatives do. Outside ``shard_map`` nothing varies.
    """
    import jax

    def varying(x: Any) -> frozenset[str]:
        aval = jax.typeof(x)
        manual = getattr(aval, "manual_axis_type", None)
        return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))

    axes = frozenset().union(*(varying(a) for a in arrays))
    if not axes:
        return arrays

    def cast(x: Any) -> Any:
        missing = tuple(sorted(axes - varying(x)))
        if not missing:
            return x
        if hasattr(jax.lax, "pcast"):
            return jax.lax.pcast(x, missing, to="varying")
        return jax.lax.pvary(x, missing)

    return [cast(a) for a in arrays]
