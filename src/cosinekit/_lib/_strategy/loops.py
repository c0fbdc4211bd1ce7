"""Loops over blocks that a compiler keeps as loops, and host copies for sequential steps.

``block_loops``
    A traced search on JAX (``jit``, ``grad``, ``vmap``) would unroll a
    Python loop over blocks into one copy of the block's program per block:
    the program, and its compile time, would grow with the number of
    blocks. There the searches loop with ``lax.map`` over query blocks and
    ``lax.scan`` over key blocks (both differentiable, and ``vmap``-able),
    slicing blocks with ``lax.dynamic_slice_in_dim``. Elsewhere (eager
    libraries, and ``torch.compile``, which unrolls any loop it traces)
    the searches loop in Python and this returns None.
``compiled_on_jax``
    Eager JAX runs a search operation by operation, and compiles each
    operation again for every new shape: a blocked search of a few dozen
    rows took seconds. A fixed-shape search (top-k, hard negatives) called
    eagerly on JAX runs instead as one ``jax.jit`` of the public function,
    compiled once per shape and static argument and cached, with the
    compiled loops above.
``host_namespace``
    The value-dependent searches (range search, similar pairs,
    communities) cannot be compiled (their result sizes depend on the
    values), and eager JAX recompiles every operation of every block for
    the new shapes that ``nonzero`` makes. Where JAX arrays live on the
    host those searches run in NumPy on a view of the same memory, and
    return JAX arrays.
``to_host`` and ``from_host``
    A few steps are sequential decisions over scalars (the community
    detection's greedy visit, group boundaries read once per block): they
    run in NumPy on the host, as sentence-transformers' own loop does, on a
    copy that costs nothing on the CPU and one transfer on a GPU. The
    standard has no "copy to the host", so each library's own is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import (
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

from .mode import Mode

Array = Any
State = Any


@dataclass(frozen=True)
class BlockLoops:
    """Compiled loops over blocks.

    ``map(fn, count)`` stacks ``fn(i)`` for ``i < count``; ``fold(fn, init,
    count)`` is ``fn(... fn(fn(init, 0), 1) ..., count - 1)``; ``rows(x,
    start, size)`` is ``x[start : start + size]`` for a traced ``start``.
    """

    map: Callable[[Callable[[Array], Any], int], Any]
    fold: Callable[[Callable[[State, Array], State], State, int], State]
    rows: Callable[[Array, Array, int], Array]


def block_loops(xp: ModuleType, mode: Mode) -> BlockLoops | None:
    """The compiled loops for a traced JAX search, or None (loop in Python)."""
    if not is_jax_namespace(xp) or mode.eager:
        return None
    import jax

    def map_blocks(fn: Callable[[Array], Any], count: int) -> Any:
        return jax.lax.map(fn, xp.arange(count))

    def fold(fn: Callable[[State, Array], State], init: State, count: int) -> State:
        def step(state: State, i: Array) -> tuple[State, None]:
            return fn(state, i), None

        return jax.lax.scan(step, init, xp.arange(count))[0]

    def rows(x: Array, start: Array, size: int) -> Array:
        return jax.lax.dynamic_slice_in_dim(x, start, size, axis=0)

    return BlockLoops(map_blocks, fold, rows)


_COMPILED: dict[tuple[Callable[..., Any], tuple[str, ...]], Callable[..., Any]] = {}


def compiled_on_jax(
    xp: ModuleType, mode: Mode, function: Callable[..., Any], static: tuple[str, ...]
) -> Callable[..., Any] | None:
    """``jax.jit(function)`` (``static`` argument names) for an eager JAX call, or None."""
    if not is_jax_namespace(xp) or not mode.eager:
        return None
    key = (function, static)
    if key not in _COMPILED:
        import jax

        _COMPILED[key] = jax.jit(function, static_argnames=static)
    return _COMPILED[key]


def host_namespace(xp: ModuleType, mode: Mode) -> ModuleType | None:
    """NumPy's namespace where an eager JAX search on the host should run there, or None."""
    if is_jax_namespace(xp) and mode.eager and mode.host_reads_free:
        import array_api_compat.numpy

        namespace: ModuleType = array_api_compat.numpy
        return namespace
    return None


def to_host(xp: ModuleType, x: Array) -> np.ndarray:
    """A NumPy copy of ``x`` (a view where it already lives on the host)."""
    if is_numpy_namespace(xp):
        return np.asarray(x)
    if is_torch_namespace(xp):
        return np.asarray(x.detach().cpu().numpy())
    if is_cupy_namespace(xp):
        return np.asarray(x.get())
    if is_jax_namespace(xp):
        return np.asarray(x)
    return np.from_dlpack(x)


def from_host(xp: ModuleType, x: np.ndarray, device: Any) -> Array:
    """``x`` as an array of ``xp`` on ``device``."""
    if is_numpy_namespace(xp):
        return x
    return xp.asarray(x, device=device)
