"""Selection primitives the standard lacks: top-k, and the searches' choice of path.

``top_k_positions``
    The standard has no top-k selection, and sorting a whole block of
    similarities to keep ``k`` of them costs ``log m`` times more. NumPy and
    CuPy use ``argpartition``, PyTorch ``topk``, JAX ``lax.top_k`` and Dask
    ``argtopk`` (a lazy tree reduction over chunks); anything else sorts.
    Which of several equal values is chosen is left open: the searches
    impose their tie rule on top, the same way on every backend.
``top_k_lower_index_first``
    A top-k that documents its tie order: JAX's ``lax.top_k`` returns the
    lower index first among equal values, so under ``jax.jit`` one top-k
    per block and one per merge give the exact tie rule, where the portable
    fixed-shape selection needs two top-k and two sorts.
``search_prunes``
    Whether a search selects by reading values (threshold pruning): where
    reads are free, except on JAX, where every new candidate count is a new
    shape that compiles each operation again, while ``lax.top_k`` makes the
    fixed-shape path exact and fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import (
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

from .mode import Mode

Array = Any


def search_prunes(xp: ModuleType, mode: Mode) -> bool:
    """Whether a search may select by reading values (threshold pruning)."""
    return mode.host_reads_free and not is_jax_namespace(xp)


def top_k_lower_index_first(xp: ModuleType) -> Callable[[Array, int], tuple[Array, Array]] | None:
    """A top-k whose equal values come out by lower position, or None.

    The callable returns ``(values, positions)`` of the ``k`` largest along
    the last axis, descending; None where no library top-k promises the order.
    """
    if is_jax_namespace(xp):
        import jax

        top_k: Callable[[Array, int], tuple[Array, Array]] = jax.lax.top_k
        return top_k
    return None


def top_k_positions(xp: ModuleType, x: Array, k: int) -> Array:
    """Positions of the ``k`` largest values along the last axis of 2-D ``x``.

    In no particular order, and where equal values straddle the k-th place
    any of them may be chosen. ``x`` must hold no NaN (each library orders
    NaN its own way), and ``1 <= k <= x.shape[-1]``.
    """
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        native = np if is_numpy_namespace(xp) else importlib.import_module("cupy")
        split = x.shape[-1] - k
        return native.argpartition(x, split, axis=-1)[:, split:]
    if is_torch_namespace(xp):
        import torch

        return torch.topk(x, k, dim=-1, sorted=False).indices
    if is_jax_namespace(xp):
        import jax

        return jax.lax.top_k(x, k)[1]
    if is_dask_namespace(xp):
        import dask.array as da

        if min(x.chunks[-1]) < k:
            # argtopk fails on chunks narrower than k; a block is small anyway.
            x = x.rechunk({x.ndim - 1: -1})
        return da.argtopk(x, k, axis=-1)
    return xp.argsort(x, axis=-1, descending=True)[:, :k]
