"""Row reductions: the sums along the feature axis, each in the fastest form per library.

``row_dot`` and ``row_norm``
    The row sums of the cosine, each the primitive that runs fastest there
    (measured by ``benchmarks/run.py``). JAX sums ``a * b``: XLA fuses that
    reduction with the scaling and normalizing around it into few loops,
    where ``vecdot`` (a ``dot_general``) stays a separate kernel behind
    materialized intermediates. PyTorch's ``linalg.vector_norm`` reads a row
    faster than a ``vecdot`` of it with itself, and its ``linalg.vecdot``
    beats array-api-compat's batched-matmul ``vecdot`` up to about a
    megabyte (per-call overhead), then loses. Everything else uses
    ``vecdot``. The results differ only by summation order.
``row_dot_and_norms``
    The three row sums of the fast path. NumPy runs them block by block
    (1024 rows, about 1 MB of each input): the second and third reads then
    come from cache.
``all_within``
    The eager fast path's one question, "is every norm in the safe range?",
    in the fewest dispatches (one ``aminmax`` on PyTorch).
``quiet_overflow``
    The fast path squares values that may overflow or be inf or NaN, by
    design: such rows are detected and recomputed. NumPy (and
    array-api-strict, which wraps it) would warn about it; nothing else does.
``log_softmax_parts``
    The standard has neither log-softmax nor log-sum-exp. PyTorch's
    ``log_softmax`` is one fused kernel each way (its ``logsumexp`` on the
    CPU is several passes), so there the entry is picked from it. Elsewhere
    the entry is picked from the logits and the row's log-sum-exp
    subtracted, so the ``(n, m)`` log-probabilities are never written, as
    optax's cross-entropy does. All of them shift by the maximum, so nothing
    overflows at any temperature, and a NaN in the row gives NaN.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import (
    is_array_api_strict_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

from .autodiff import stop_gradient
from .mode import Autodiff, Mode

Array = Any

# Up to this many elements PyTorch's linalg.vecdot beats the batched product.
TORCH_SMALL = 2**18
ROW_BLOCK = 1024


def row_dot(xp: ModuleType, mode: Mode, x1: Array, x2: Array, axis: int) -> Array:
    """``sum(x1 * x2)`` along ``axis`` (broadcast inputs), in the fastest form."""
    if is_jax_namespace(xp):
        return xp.sum(x1 * x2, axis=axis)
    if is_torch_namespace(xp):
        import torch

        # The batched product has no batching rule under torch.func.vmap;
        # linalg.vecdot has.
        if x1.numel() <= TORCH_SMALL or mode.autodiff is Autodiff.TORCH_FUNC:
            return torch.linalg.vecdot(x1, x2, dim=axis)
    return xp.vecdot(x1, x2, axis=axis)


def row_norm(xp: ModuleType, mode: Mode, x: Array, axis: int) -> Array:
    """``sqrt(sum(x * x))`` along ``axis``, unscaled: it overflows and underflows.

    Callers check the range of the result. At a zero row the gradient is 0.
    """
    if is_torch_namespace(xp):
        import torch

        # vector_norm's backward masks zero norms (gradient 0, never NaN).
        return torch.linalg.vector_norm(x, dim=axis)
    sumsq = row_dot(xp, mode, x, x, axis)
    return xp.where(sumsq == 0, sumsq, xp.sqrt(xp.where(sumsq == 0, xp.ones_like(sumsq), sumsq)))


def row_dot_and_norms(
    xp: ModuleType, mode: Mode, x1: Array, x2: Array, axis: int
) -> tuple[Array, Array, Array]:
    """``(x1 . x2, ||x1||, ||x2||)`` along ``axis``, unscaled (see `row_norm`)."""
    if is_numpy_namespace(xp) and x1.ndim == 2 and axis == -1 and x1.shape[0] > ROW_BLOCK:
        sums = np.empty((3, x1.shape[0]), dtype=x1.dtype)
        for start in range(0, x1.shape[0], ROW_BLOCK):
            rows = slice(start, start + ROW_BLOCK)
            block1, block2 = x1[rows], x2[rows]
            np.vecdot(block1, block2, out=sums[0, rows])
            np.vecdot(block1, block1, out=sums[1, rows])
            np.vecdot(block2, block2, out=sums[2, rows])
        return sums[0], np.sqrt(sums[1]), np.sqrt(sums[2])
    return (
        row_dot(xp, mode, x1, x2, axis),
        row_norm(xp, mode, x1, axis),
        row_norm(xp, mode, x2, axis),
    )


def all_within(xp: ModuleType, arrays: tuple[Array, ...], low: float, high: float) -> bool:
    """Whether every value of ``arrays`` (of one shape) lies in ``[low, high]``; False for NaN.

    Reads values: the eager fast path on the host only. PyTorch answers with
    one ``aminmax`` and two ``item()``: on small batches each operation is a
    dispatch of a few microseconds, a good part of the call.
    """
    if is_torch_namespace(xp):
        import torch

        values = arrays[0] if len(arrays) == 1 else torch.stack(arrays)
        smallest, largest = torch.aminmax(values)
        # item() and a Python comparison: comparing a tensor with a Python
        # number wraps the number in a tensor first.
        return bool(smallest.item() >= low and largest.item() <= high)
    # minimum and maximum propagate NaN, which fails both comparisons.
    smallest = largest = arrays[0]
    for array in arrays[1:]:
        smallest, largest = xp.minimum(smallest, array), xp.maximum(largest, array)
    return bool(xp.all((smallest >= low) & (largest <= high)))


def quiet_overflow(xp: ModuleType) -> contextlib.AbstractContextManager[Any]:
    """Silence NumPy's floating-point warnings for the fast path's sums."""
    if is_numpy_namespace(xp) or is_array_api_strict_namespace(xp):
        return np.errstate(over="ignore", invalid="ignore")
    return _NO_CONTEXT


_NO_CONTEXT = contextlib.nullcontext()  # reusable, and it costs nothing to enter


def log_softmax_parts(xp: ModuleType, x: Array, axis: int) -> tuple[Array, Array | None]:
    """``(matrix, normalizer)``: ``log_softmax(x)`` along ``axis`` is ``matrix - normalizer``.

    ``normalizer`` is the log-sum-exp per slice (``axis`` removed), shifted
    by the maximum (no overflow), or None where ``matrix`` is already the
    log-softmax. The caller picks its entries from ``matrix`` first.
    """
    if is_torch_namespace(xp):
        import torch

        return torch.nn.functional.log_softmax(x, dim=axis), None
    if is_jax_namespace(xp):
        import jax

        return x, jax.nn.logsumexp(x, axis=axis)
    shift = stop_gradient(xp, xp.max(x, axis=axis, keepdims=True))
    total = xp.sum(xp.exp(x - shift), axis=axis)
    return x, xp.squeeze(shift, axis=axis) + xp.log(total)
