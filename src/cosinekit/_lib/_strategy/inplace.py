"""In-place writes into fresh results, where the library and the `Mode` allow them.

A pairwise result is an ``(n, m)`` matrix: every extra array of its size (a
mask, a ``where``, ``1 - s``) doubles the peak memory, and the contract
bounds the peak at 1.3x the result. The standard has no in-place update
(``__setitem__`` aside), so the writes below happen only where the library
has one and nothing else holds the array: NumPy, and PyTorch when no
gradient is recorded through it and no compiler or ``torch.func`` transform
traces the call. JAX gets a functional ``.at[].set`` (in place under
``jit``), PyTorch with autograd ``diagonal_scatter``; everything else (Dask,
array-api-strict) a ``where`` against a mask broadcast from two ``arange``,
lazily and chunk by chunk on Dask.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import device as array_device
from array_api_compat import is_jax_namespace, is_numpy_namespace, is_torch_namespace

from .mode import Autodiff, Mode

Array = Any


def writable_in_place(xp: ModuleType, mode: Mode, x: Array) -> bool:
    """Whether results computed from ``x`` may be modified in place."""
    if is_numpy_namespace(xp):
        return isinstance(x, np.ndarray)
    if is_torch_namespace(xp):
        return mode.autodiff is Autodiff.NONE or (
            mode.autodiff is Autodiff.TORCH_AUTOGRAD and not x.requires_grad
        )
    return False


def one_minus(xp: ModuleType, mode: Mode, x: Array, *, owned: bool) -> Array:
    """``1 - x``, in place where ``x`` is ``owned`` (fresh) and writable."""
    if owned and writable_in_place(xp, mode, x):
        if is_numpy_namespace(xp):
            return np.subtract(1, x, out=x)
        # Negation is exact, so -x + 1 rounds as 1 - x does.
        return x.neg_().add_(1)
    return 1 - x


def set_diagonal(
    xp: ModuleType,
    mode: Mode,
    matrix: Array,
    values: Array | float,
    *,
    offset: int,
    owned: bool,
) -> Array:
    """``matrix[..., j, j + offset] = values[..., j]`` for every row ``j`` that has it.

    ``values`` is a Python float or an array ``(..., rows)`` aligned with the
    rows of ``matrix``; no ``(rows, cols)`` mask is built except on the
    portable path, where it is a lazy broadcast of two ``arange``.
    """
    rows, cols = matrix.shape[-2], matrix.shape[-1]
    count = max(0, min(rows, cols - offset))
    if not isinstance(values, float):
        values = values[..., :count]
    if owned and writable_in_place(xp, mode, matrix):
        if is_numpy_namespace(xp):
            index = np.arange(count)
            matrix[..., index, index + offset] = values
            return matrix
        import torch

        diagonal = torch.diagonal(matrix, offset=offset, dim1=-2, dim2=-1)
        if isinstance(values, float):
            diagonal.fill_(values)
        else:
            diagonal.copy_(values)
        return matrix
    if is_jax_namespace(xp):
        import jax.numpy as jnp

        index = jnp.arange(count)
        return matrix.at[..., index, index + offset].set(values)
    if is_torch_namespace(xp):
        import torch

        diagonal_shape = torch.diagonal(matrix, offset=offset, dim1=-2, dim2=-1).shape
        source = (
            torch.full(diagonal_shape, values, dtype=matrix.dtype, device=matrix.device)
            if isinstance(values, float)
            else values.expand(diagonal_shape)
        )
        return torch.diagonal_scatter(matrix, source, offset=offset, dim1=-2, dim2=-1)
    device = array_device(matrix)
    on_diagonal = xp.reshape(xp.arange(rows, device=device) + offset, (rows, 1)) == xp.reshape(
        xp.arange(cols, device=device), (1, cols)
    )
    if isinstance(values, float):
        fill = xp.asarray(values, dtype=matrix.dtype, device=device)
    else:
        fill = xp.expand_dims(values, axis=-1)
    return xp.where(on_diagonal, fill, matrix)
