"""The one strategy point: everything that depends on which array library runs.

The rest of cosinekit is written against the array API standard only. The
standard lacks what exact and fast cosine needs below, so it lives here,
each covered by the same tests on every backend:

``values_are_readable``
    Whether the code may look at array values (``bool(xp.all(...))``) and pick
    data-dependent shapes (``nonzero``), judged on every array argument at
    once. Where it may (NumPy, eager PyTorch and JAX on the CPU,
    array-api-strict with data-dependent shapes allowed) cosinekit takes a
    fast one-pass path and repairs only the rows that need rescaling. Where it
    may not, it takes the traced path (see ``traced_branch``), which is
    equally exact, never forces a computation and never synchronizes: when
    any argument is lazy (Dask) or traced (any JAX transformation in
    progress, ``torch.compile``, a ``torch.func`` transform), and when any
    argument lives on an accelerator (PyTorch off the CPU, CuPy, JAX on a
    GPU), where reading a value is a device-to-host synchronization.

``traced_branch``
    A conditional that runs inside a trace. Under ``jax.jit`` the fast path
    runs first and ``lax.cond`` switches to the rescaled path only when some
    row needs it (NaN in the fast result flags those rows), so the common
    case is one fused pass. Everything else that cannot read values (Dask,
    compiled or transformed torch) has none and always takes the rescaled
    path, which is exact everywhere.

``stop_gradient``
    Straight-through clipping and constant scale factors need it; the standard
    has no autodiff. Libraries without autodiff get the identity.

``clip_straight_through``
    Bounds clipping whose gradient is the identity. The portable form
    ``x + stop_gradient(clip(x) - x)`` reads and writes the result three
    times, which on a pairwise ``(n, m)`` matrix costs more than half the
    matmul on NumPy and PyTorch. Libraries without autodiff clip once;
    PyTorch clamps once and, when a gradient is recorded, passes it through
    an ``autograd.Function``; JAX and ``torch.compile`` keep the portable
    form, which their compilers fuse into one pass.

``quiet_overflow``
    The fast path squares values that may overflow or be inf or NaN, by
    design: such rows are detected and recomputed. NumPy (and
    array-api-strict, which wraps it) would warn about it; nothing else does.

``row_dot`` and ``row_norm``
    The row sums of the cosine, each the primitive that runs fastest there
    (measured by ``benchmarks/run.py``, 200,000 x 256 float32). JAX sums
    ``a * b``: XLA fuses that reduction with the scaling and normalizing
    around it into few loops, where ``vecdot`` (a ``dot_general``) stays a
    separate kernel behind materialized intermediates (7x slower in the
    rescaled path). PyTorch's ``linalg.vector_norm`` reads a row in a third
    of the time of a ``vecdot`` of it with itself. Everything else uses
    ``vecdot``. The results differ only by summation order.

``row_dot_and_norms``
    The three row sums of the fast path. NumPy runs them block by block
    (1024 rows, about 1 MB of each input): the second and third reads then
    come from cache, 1.7x the time of one ``vecdot`` instead of 2.3x.

``log_softmax``
    The standard has neither log-softmax nor log-sum-exp. PyTorch's
    ``log_softmax`` is one fused kernel each way (``logsumexp`` on the CPU is
    five separate passes), and JAX's ``nn.log_softmax`` is what XLA fuses
    best; elsewhere the portable form shifts by the (constant) maximum. All
    of them shift by the maximum, so nothing overflows at any temperature,
    and a NaN in the row gives NaN.

``top_k_positions``
    The standard has no top-k selection, and sorting a whole block of
    similarities to keep ``k`` of them costs ``log m`` times more. NumPy and
    CuPy use ``argpartition``, PyTorch ``topk``, JAX ``lax.top_k`` and Dask
    ``argtopk`` (a lazy tree reduction over chunks); anything else sorts.
    Which of several equal values is chosen is left open: ``cosine_topk``
    imposes its tie rule on top, the same way on every backend.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import (
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_lazy_array,
    is_numpy_namespace,
    is_torch_namespace,
)

Array = Any


def values_are_readable(xp: ModuleType, *arrays: Array) -> bool:
    """Return True where reading values of every one of ``arrays`` is allowed and cheap.

    Every array argument counts: one traced, lazy or transformed argument
    among concrete ones makes the whole computation traced. Reading a value
    on an accelerator is a device-to-host synchronization (it stalls the
    stream and breaks CUDA-graph capture), so arrays off the CPU are never
    read either.
    """
    if is_jax_namespace(xp):
        return _jax_values_are_readable(arrays)
    if is_torch_namespace(xp):
        return _torch_values_are_readable(arrays)
    if is_cupy_namespace(xp):
        # CuPy arrays live on a GPU: reading one synchronizes.
        return False
    if any(is_lazy_array(x) for x in arrays):
        # Dask would compute the graph.
        return False
    if is_array_api_strict_namespace(xp):
        import array_api_strict

        return bool(array_api_strict.get_array_api_strict_flags()["data_dependent_shapes"])
    return True


def _jax_values_are_readable(arrays: tuple[Array, ...]) -> bool:
    import jax
    from jax._src.core import trace_state_clean

    # Under jit even an operation on concrete (closed-over) arrays yields a
    # tracer, so the question is whether any transformation is running at
    # all; JAX has no public spelling of it. Concrete arrays outside a trace
    # are eager (one dispatch per operation, nothing compiled per call).
    return trace_state_clean() and all(
        not isinstance(x, jax.core.Tracer) and all(d.platform == "cpu" for d in x.devices())
        for x in arrays
    )


def _torch_values_are_readable(arrays: tuple[Array, ...]) -> bool:
    import torch

    # A data-dependent branch breaks a torch.compile(fullgraph=True) graph
    # and is refused inside torch.func transforms; "meta" and accelerator
    # tensors cannot be read without a device synchronization.
    if torch.compiler.is_compiling():
        return False
    return all(
        x.device.type == "cpu" and not torch._C._functorch.is_functorch_wrapped_tensor(x)
        for x in arrays
    )


def traced_branch(xp: ModuleType) -> Callable[..., Any] | None:
    """``cond(predicate, if_true, if_false)`` that works under a trace, or None.

    Only JAX has one that pays: ``lax.cond`` runs just the chosen branch, and
    under ``vmap`` turns into a select of both, which is still correct.
    """
    if is_jax_namespace(xp):
        import jax

        cond: Callable[..., Any] = jax.lax.cond
        return cond
    return None


def clip_straight_through(
    xp: ModuleType, x: Array, low: float, high: float, *, owned: bool = False
) -> Array:
    """Clip values to ``[low, high]`` but pass the gradient through unchanged.

    ``owned=True`` says that ``x`` is a fresh intermediate nobody else holds,
    so NumPy and PyTorch (without autograd) may clip it in place and spare
    the allocation of a second result as large as a pairwise matrix.
    """
    if is_jax_namespace(xp):
        return x + stop_gradient(xp, xp.clip(x, low, high) - x)
    if is_torch_namespace(xp):
        return _torch_clip_straight_through(x, low, high, owned=owned)
    if owned and is_numpy_namespace(xp) and isinstance(x, np.ndarray):
        return np.clip(x, low, high, out=x)
    return xp.clip(x, low, high)


def _torch_clip_straight_through(x: Array, low: float, high: float, *, owned: bool) -> Array:
    import torch

    if torch.compiler.is_compiling():
        # The compiler fuses the portable form into one pass anyway.
        return x + (torch.clamp(x, low, high) - x).detach()
    if torch.is_grad_enabled() and x.requires_grad:
        return _torch_straight_through_clamp().apply(x, low, high)
    if owned and not _inside_torch_func(x):  # vmap has no rule for clamp_
        return x.clamp_(low, high)
    return torch.clamp(x, low, high)


@functools.cache
def _torch_straight_through_clamp() -> Any:
    """A clamp whose backward is the identity (built on first use: torch is optional)."""
    import torch

    class StraightThroughClamp(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x: Any, low: float, high: float) -> Any:
            return torch.clamp(x, low, high)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            pass

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            return grad, None, None

        @staticmethod
        def jvp(ctx: Any, tangent: Any, *_: Any) -> Any:
            return tangent

    return StraightThroughClamp


def stop_gradient(xp: ModuleType, x: Array) -> Array:
    """Return ``x`` with its gradient path cut (identity without autodiff)."""
    if is_torch_namespace(xp):
        return x.detach()
    if is_jax_namespace(xp):
        import jax

        return jax.lax.stop_gradient(x)
    return x


def log_softmax(xp: ModuleType, x: Array, axis: int) -> Array:
    """``x - log(sum(exp(x)))`` along ``axis``, shifted by the maximum (no overflow)."""
    if is_torch_namespace(xp):
        import torch

        return torch.nn.functional.log_softmax(x, dim=axis)
    if is_jax_namespace(xp):
        import jax

        return jax.nn.log_softmax(x, axis=axis)
    shifted = x - stop_gradient(xp, xp.max(x, axis=axis, keepdims=True))
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


@contextlib.contextmanager
def quiet_overflow() -> Iterator[None]:
    """Silence NumPy's floating-point warnings for the fast path's sums."""
    with np.errstate(over="ignore", invalid="ignore"):
        yield


def row_dot(xp: ModuleType, x1: Array, x2: Array, axis: int) -> Array:
    """``sum(x1 * x2)`` along ``axis`` (broadcast inputs), in the fastest form."""
    if is_jax_namespace(xp):
        return xp.sum(x1 * x2, axis=axis)
    if is_torch_namespace(xp) and (_inside_torch_func(x1) or _inside_torch_func(x2)):
        import torch

        # array-api-compat's vecdot (a batched matmul after moveaxis) has no
        # batching rule under torch.func.vmap; linalg.vecdot has.
        return torch.linalg.vecdot(x1, x2, dim=axis)
    return xp.vecdot(x1, x2, axis=axis)


def _inside_torch_func(x: Array) -> bool:
    """Whether ``x`` is wrapped by a torch.func transform (vmap, grad).

    Dynamo cannot trace the check itself, and under ``torch.compile`` the
    compiled graph handles the plain path anyway, so it is skipped there.
    """
    import torch

    return not torch.compiler.is_compiling() and bool(
        torch._C._functorch.is_functorch_wrapped_tensor(x)
    )


ROW_BLOCK = 1024


def row_dot_and_norms(
    xp: ModuleType, x1: Array, x2: Array, axis: int
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
    return row_dot(xp, x1, x2, axis), row_norm(xp, x1, axis), row_norm(xp, x2, axis)


def row_norm(xp: ModuleType, x: Array, axis: int) -> Array:
    """``sqrt(sum(x * x))`` along ``axis``, unscaled: it overflows and underflows.

    Callers check the range of the result. At a zero row the gradient is 0.
    """
    if is_torch_namespace(xp):
        import torch

        # vector_norm's backward masks zero norms (gradient 0, never NaN).
        return torch.linalg.vector_norm(x, dim=axis)
    sumsq = row_dot(xp, x, x, axis)
    return xp.where(sumsq == 0, sumsq, xp.sqrt(xp.where(sumsq == 0, xp.ones_like(sumsq), sumsq)))


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
