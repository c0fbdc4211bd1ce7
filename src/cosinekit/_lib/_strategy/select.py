"""Selection primitives the standard lacks: top-k, and the searches' choice of path.

``top_k_positions``
    The standard has no top-k selection, and sorting a whole block of
    similarities to keep ``k`` of them costs ``log m`` times more. NumPy and
    CuPy use ``argpartition``, PyTorch ``topk``, JAX ``lax.top_k`` and Dask
    ``argtopk`` (a lazy tree reduction over chunks); anything else sorts.
    Which of several equal values is chosen is left open: the searches
    impose their tie rule on top, the same way on every backend.
``kth_largest``
    The ``k``-th largest value of each row, where only that value is
    needed (the floor below which no entry of a block can enter a top-k):
    NumPy and CuPy ``partition`` copy the block once, where positions
    (``argpartition``) would write twice its size in 64-bit integers.
``mask_view``, ``nonzero_flat``, ``count_true`` and ``from_view``
    An eager search compares each block with a threshold and finds the
    positions that pass: the one value-dependent step per block. On PyTorch
    CPU tensors those whole-block operations (a compare, ``nonzero``,
    ``count_nonzero``) took about as long as the block's matrix product
    (``benchmarks/topics/mining.py``: a third of ``cosine_communities``),
    where NumPy takes a fraction of it: there the masks are computed by
    NumPy on a view of the same memory (``mask_view``; a mask carries no
    gradient, and the values are then taken from the tensor itself), and
    only the positions come back as a tensor (``from_view``). Elsewhere the
    library's own operations.
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


def kth_largest(xp: ModuleType, x: Array, k: int) -> Array:
    """The ``k``-th largest value of each row of 2-D ``x`` (no NaN), ``1 <= k <= x.shape[-1]``."""
    width = x.shape[-1]
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        native = np if is_numpy_namespace(xp) else importlib.import_module("cupy")
        return native.partition(x, width - k, axis=-1)[:, width - k]
    if is_torch_namespace(xp):
        import torch

        return torch.topk(x, k, dim=-1, sorted=False).values.amin(dim=-1)
    if is_jax_namespace(xp):
        import jax

        return jax.lax.top_k(x, k)[0][:, k - 1]
    return xp.sort(x, axis=-1, descending=True)[:, k - 1]


def mask_view(xp: ModuleType, x: Array) -> tuple[ModuleType, Array]:
    """The namespace in which to compute masks of ``x``, and ``x`` in it (no copy)."""
    if is_torch_namespace(xp) and x.device.type == "cpu":
        import array_api_compat.numpy

        namespace: ModuleType = array_api_compat.numpy
        return namespace, x.detach().numpy()
    return xp, x


def from_view(xp: ModuleType, positions: Array) -> Array:
    """Positions found in a `mask_view` namespace, as an array of ``xp``."""
    if is_torch_namespace(xp) and isinstance(positions, np.ndarray):
        import torch

        return torch.from_numpy(positions)
    return positions


def nonzero_flat(xp: ModuleType, mask: Array) -> Array:
    """The positions of the True entries of boolean ``mask``, flattened, ascending."""
    if is_numpy_namespace(xp):
        return np.flatnonzero(mask)
    return xp.nonzero(xp.reshape(mask, (-1,)))[0]


def count_true(xp: ModuleType, mask: Array) -> int:
    """The number of True entries of boolean ``mask`` (read on the host)."""
    return int(xp.count_nonzero(mask))
