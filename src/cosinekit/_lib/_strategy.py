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
    A conditional that runs inside a trace. Under ``jax.jit`` and
    ``torch.compile`` the fast path runs first and ``lax.cond`` /
    ``torch.cond`` switches to the rescaled path only when some row needs
    it, so the common case is one fused pass. Everything else that cannot
    read values (Dask, ``torch.func``, eager accelerators) has none and
    always takes the rescaled path, which is exact everywhere.

``all_within``
    The eager fast path's one question, "is every norm in the safe range?",
    in the fewest dispatches (one ``aminmax`` on PyTorch).

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

``closed_form_backward``
    Attaches a hand-written backward to a value computed outside the
    gradient. Eager PyTorch autograd records and replays each of the dozen
    small operations of the fast path; the closed form of the cosine's
    gradient costs a few passes (a training step on 32 x 768 went from 1.8x
    to 1.5x the time of ``(1 - F.cosine_similarity).mean()``). The same
    ``autograd.Function`` is traced by ``torch.compile``.

``closed_form_jvp``
    The same closed form under JAX transformations, as a ``jax.custom_jvp``:
    XLA would otherwise keep the intermediates of the differentiated forward
    and of both ``lax.cond`` branches (3 to 7x optax's ``jit(grad)`` time
    before, about 1x with it).

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
    of the time of a ``vecdot`` of it with itself, and its ``linalg.vecdot``
    beats array-api-compat's batched-matmul ``vecdot`` up to about a
    megabyte (per-call overhead), then loses. Everything else uses
    ``vecdot``. The results differ only by summation order.

``row_dot_and_norms``
    The three row sums of the fast path. NumPy runs them block by block
    (1024 rows, about 1 MB of each input): the second and third reads then
    come from cache, 1.7x the time of one ``vecdot`` instead of 2.3x.

``log_softmax_parts``
    The standard has neither log-softmax nor log-sum-exp. The cross-entropy
    needs the log-probability at one entry per row only. PyTorch's
    ``log_softmax`` is one fused kernel each way (``logsumexp`` on the CPU is
    five separate passes: fwd+bwd 1.45x slower at 2048 x 2048), so there the
    entry is picked from it. Elsewhere the entry is picked from the logits
    and the row's log-sum-exp subtracted, so the ``(n, m)`` log-probabilities
    are never written: under ``jax.jit(jax.grad)`` 1.2x faster than picking
    from ``nn.log_softmax`` at 2048 x 2048 x 256, as optax's cross-entropy
    does. JAX uses ``nn.logsumexp``; the portable form shifts by
    the (constant) maximum. All of them shift by the maximum, so nothing
    overflows at any temperature, and a NaN in the row gives NaN.

``top_k_positions``
    The standard has no top-k selection, and sorting a whole block of
    similarities to keep ``k`` of them costs ``log m`` times more. NumPy and
    CuPy use ``argpartition``, PyTorch ``topk``, JAX ``lax.top_k`` and Dask
    ``argtopk`` (a lazy tree reduction over chunks); anything else sorts.
    Which of several equal values is chosen is left open: ``cosine_topk``
    imposes its tie rule on top, the same way on every backend.

``top_k_lower_index_first``
    A top-k that documents its tie order: JAX's ``lax.top_k`` returns the
    lower index first among equal values, so under ``jax.jit`` one top-k
    per block and one per merge give the exact tie rule, where the portable
    traced selection needs two top-k and two sorts (33x faiss before, see
    ``benchmarks/search.py``).

``dask_search_chunks``
    On Dask the searches run one task per (query chunk, key chunk) pair, on
    the worker that holds the key chunk, with the eager kernel of the chunk's
    own library (threshold pruning needs values, which a task has); the
    per-task ``(n, k)`` results are merged in a tree. The portable traced
    path would build one small task per operation per block and select
    every block in full.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import device as array_device
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
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    # is_cpu, not device.type: building the device object costs a microsecond.
    return all(x.is_cpu and not wrapped(x) for x in arrays)


def may_write_caches() -> bool:
    """Whether module-level caches may be written now.

    Not while ``torch.compile`` traces: Dynamo would have to replay the write
    after the graph, and it cannot rebuild a module object it got from a
    traced call (``fullgraph=True`` fails when a process's first cosinekit
    call is compiled). The caches fill on the next eager call.
    """
    torch = sys.modules.get("torch")
    return torch is None or not torch.compiler.is_compiling()


def all_within(xp: ModuleType, arrays: tuple[Array, ...], low: float, high: float) -> bool:
    """Whether every value of ``arrays`` (of one shape) lies in ``[low, high]``; False for NaN.

    The eager fast path asks this once per call. PyTorch answers it with one
    ``aminmax`` and two ``item()`` (5 us at 32 rows, where the portable
    comparisons take 24 us): on small batches each operation is a dispatch
    of a few microseconds, a good part of the call.
    """
    if is_torch_namespace(xp):
        import torch

        values = arrays[0] if len(arrays) == 1 else torch.stack(arrays)
        smallest, largest = torch.aminmax(values)
        # item() and a Python comparison: comparing a tensor with a Python
        # number wraps the number in a tensor first, ten times the cost.
        return bool(smallest.item() >= low and largest.item() <= high)
    # minimum and maximum propagate NaN, which fails both comparisons.
    smallest = largest = arrays[0]
    for array in arrays[1:]:
        smallest, largest = xp.minimum(smallest, array), xp.maximum(largest, array)
    return bool(xp.all((smallest >= low) & (largest <= high)))


def traced_branch(xp: ModuleType) -> Callable[..., Any] | None:
    """``cond(predicate, if_true, if_false)`` that works under a trace, or None.

    JAX's ``lax.cond`` runs just the chosen branch, and under ``vmap`` turns
    into a select of both, which is still correct. Under ``torch.compile``,
    ``torch.cond``: its branches must compute what they return (no aliases
    of their inputs, no None).
    """
    if is_jax_namespace(xp):
        import jax

        cond: Callable[..., Any] = jax.lax.cond
        return cond
    if is_torch_namespace(xp):
        import torch

        if torch.compiler.is_compiling():
            return _torch_cond
    return None


def _torch_cond(predicate: Array, if_true: Callable[[], Any], if_false: Callable[[], Any]) -> Any:
    import torch

    # The branches close over their tensors; the compiler lifts them.
    return torch.cond(predicate, if_true, if_false, ())


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
    if x.requires_grad and torch.is_grad_enabled():
        from ._torch_autograd import StraightThroughClamp

        return StraightThroughClamp.apply(x, low, high)
    if owned and not _inside_torch_func(x):  # vmap has no rule for clamp_
        return x.clamp_(low, high)
    return torch.clamp(x, low, high)


def closed_form_backward(xp: ModuleType, *inputs: Array) -> Callable[..., Array] | None:
    """``attach(value, backward, *inputs)``, where a hand-written backward pays; else None.

    ``attach`` returns ``value`` (computed outside the gradient) with
    ``backward(grad, needed, recorded, *inputs)`` as its gradient with
    respect to ``inputs``; ``needed`` says per input whether its gradient is
    wanted (the others may be None), and ``recorded`` that the backward
    itself is being differentiated (``create_graph=True``), so that it must
    recompute from ``inputs`` what it would otherwise take from the forward.
    Eager PyTorch recording a gradient gets it: autograd would otherwise
    record and replay every small operation of the forward, several times the
    cost of the closed form (see ``benchmarks/``). Under ``torch.compile``
    the Function is traced into the graph (compiled fwd+bwd 1.47x to 0.86x
    the compiled peer); under ``torch.func`` it is never asked for.
    """
    if not is_torch_namespace(xp):
        return None
    import torch

    if not torch.is_grad_enabled() or not any(x.requires_grad for x in inputs):
        return None
    from ._torch_autograd import ClosedFormBackward

    def attach(value: Array, backward: Callable[..., Any], *arrays: Array) -> Array:
        return ClosedFormBackward.apply(value, backward, *arrays)

    return attach


def closed_form_jvp(xp: ModuleType) -> Callable[..., Callable[..., Array]] | None:
    """``define(parts, value, tangent)``: a traced function with a hand-written derivative.

    The function of ``inputs`` is ``value(parts(*inputs))``; its derivative
    in the direction of ``tangents`` is ``tangent(parts(*inputs), tangents,
    *inputs)``, where a tangent that is known to be zero is None. Only JAX
    (``jax.custom_jvp``), and only under a trace: XLA fuses the closed form
    into two passes over the data where the differentiated program takes
    several with materialized intermediates, and a ``lax.cond`` inside
    ``parts`` keeps only per-row residuals (a differentiated ``lax.cond``
    keeps the residuals of both branches). A jvp rule, not a vjp, so that
    forward mode (``jvp``, ``jacfwd``) and higher orders keep working.
    """
    if not is_jax_namespace(xp):
        return None
    return _jax_closed_form_jvp


def _jax_closed_form_jvp(
    parts: Callable[..., Any], value: Callable[[Any], Array], tangent: Callable[..., Array]
) -> Callable[..., Array]:
    import jax
    from jax.custom_derivatives import SymbolicZero

    @jax.custom_jvp  # type: ignore[untyped-decorator]
    def function(*inputs: Array) -> Array:
        return value(parts(*inputs))

    def rule(primals: tuple[Array, ...], tangents: tuple[Any, ...]) -> tuple[Array, Array]:
        computed = parts(*primals)
        # symbolic_zeros: an input that is not differentiated costs nothing.
        live = tuple(None if isinstance(t, SymbolicZero) else t for t in tangents)
        return value(computed), tangent(computed, live, *primals)

    function.defjvp(rule, symbolic_zeros=True)
    return function  # type: ignore[no-any-return]


def stop_gradient(xp: ModuleType, x: Array) -> Array:
    """Return ``x`` with its gradient path cut (identity without autodiff)."""
    if is_torch_namespace(xp):
        return x.detach()
    if is_jax_namespace(xp):
        import jax

        return jax.lax.stop_gradient(x)
    return x


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


def quiet_overflow(xp: ModuleType) -> contextlib.AbstractContextManager[Any]:
    """Silence NumPy's floating-point warnings for the fast path's sums.

    Only NumPy (and array-api-strict, which wraps it) warns; elsewhere the
    context costs a few microseconds per call for nothing.
    """
    if is_numpy_namespace(xp) or is_array_api_strict_namespace(xp):
        return np.errstate(over="ignore", invalid="ignore")
    return _NO_CONTEXT


_NO_CONTEXT = contextlib.nullcontext()  # reusable, and it costs nothing to enter


def row_dot(xp: ModuleType, x1: Array, x2: Array, axis: int) -> Array:
    """``sum(x1 * x2)`` along ``axis`` (broadcast inputs), in the fastest form."""
    if is_jax_namespace(xp):
        return xp.sum(x1 * x2, axis=axis)
    if is_torch_namespace(xp):
        import torch

        # linalg.vecdot multiplies, then sums: 3-8x faster than
        # array-api-compat's vecdot (a batched matrix product after moveaxis)
        # up to about a megabyte, 4x slower on 200,000 x 256 where the product
        # no longer fits in cache. The batched product has no batching rule
        # under torch.func.vmap; linalg.vecdot has.
        if x1.numel() <= TORCH_SMALL or _inside_torch_func(x1) or _inside_torch_func(x2):
            return torch.linalg.vecdot(x1, x2, dim=axis)
    return xp.vecdot(x1, x2, axis=axis)


TORCH_SMALL = 2**18


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


def prunes_by_value(xp: ModuleType, x: Array) -> bool:
    """Whether a search may select by reading values (threshold pruning).

    Where values are readable, except JAX: there every new candidate count
    is a new shape and compiles each operation again, while ``lax.top_k``
    makes the fixed-shape path exact with two top-k per block.
    """
    return values_are_readable(xp, x) and not is_jax_namespace(xp)


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


def dask_search_chunks(
    queries: Array,
    keys: Array,
    search: Callable[[Array, Array, int, int], Array],
    merge: Callable[[Array], Array],
    finish: Callable[[Array, int], Array],
    width: int,
) -> Array:
    """Search every key chunk where it lives, then merge the results in a tree.

    ``search(query_chunk, key_chunk, query_start, key_start)`` returns a
    ``(rows, width)`` block; ``merge`` turns ``(rows, 2 * width)`` (two
    neighbours side by side) into ``(rows, width)``; ``finish(block,
    query_start)`` runs once on the merged result. Never more than two
    partial results meet in one task, so no task holds ``n x m`` values.
    """
    import dask.array as da

    queries = queries.rechunk({1: -1})
    keys = keys.rechunk({1: -1})

    def starts(chunks: tuple[int, ...]) -> Array:
        return da.from_array(np.cumsum((0, *chunks[:-1])), chunks=1)

    def search_block(query: Array, key: Array, query_start: Array, key_start: Array) -> Array:
        return search(query, key, int(query_start[0]), int(key_start[0]))

    partial = da.blockwise(
        search_block,
        "qj",
        queries,
        "qd",
        keys,
        "jd",
        starts(queries.chunks[0]),
        "q",
        starts(keys.chunks[0]),
        "j",
        dtype=np.float64,
        adjust_chunks={"j": lambda _: width},
        concatenate=True,
        align_arrays=False,
        meta=da.utils.meta_from_array(queries, ndim=2, dtype=np.float64),
    )
    while partial.numblocks[1] > 1:
        pairs = partial.rechunk({1: 2 * width})
        partial = pairs.map_blocks(
            merge, chunks=(pairs.chunks[0], (width,) * pairs.numblocks[1]), dtype=np.float64
        )

    def finish_block(block: Array, query_start: Array) -> Array:
        return finish(block, int(query_start[0]))

    return da.blockwise(
        finish_block,
        "qj",
        partial,
        "qj",
        starts(queries.chunks[0]),
        "q",
        dtype=np.float64,
        align_arrays=False,
    )


def dask_search_pairs(
    queries: Array,
    keys: Array,
    search: Callable[[Array, Array, int, int], tuple[Array, Array, Array]],
    combine: Callable[[list[tuple[Array, Array, Array]]], tuple[Array, Array, Array]],
    index_dtype: Any,
) -> tuple[Array, Array, Array]:
    """Lazy 1-D results of unknown length: one task per (query chunk, key chunk).

    ``search(query_chunk, key_chunk, query_start, key_start)`` returns
    ``(query_indices, key_indices, values)`` of that pair of chunks;
    ``combine`` orders the parts of one query chunk. The query chunks'
    results are concatenated in order.
    """
    import dask
    import dask.array as da

    queries = queries.rechunk({1: -1})
    keys = keys.rechunk({1: -1})
    query_starts = np.cumsum((0, *queries.chunks[0][:-1]))
    key_starts = np.cumsum((0, *keys.chunks[0][:-1]))
    key_chunks = keys.to_delayed()[:, 0]
    outputs: tuple[list[Array], list[Array], list[Array]] = ([], [], [])
    for query_chunk, query_start in zip(queries.to_delayed()[:, 0], query_starts, strict=True):
        parts = [
            dask.delayed(search)(query_chunk, key_chunk, int(query_start), int(key_start))
            for key_chunk, key_start in zip(key_chunks, key_starts, strict=True)
        ]
        ordered = dask.delayed(combine, nout=3)(parts)
        for output, part, dtype in zip(
            outputs, ordered, (index_dtype, index_dtype, queries.dtype), strict=True
        ):
            meta = da.utils.meta_from_array(queries, ndim=1, dtype=dtype)
            output.append(da.from_delayed(part, shape=(math.nan,), dtype=dtype, meta=meta))
    query_indices, key_indices, values = (da.concatenate(output) for output in outputs)
    return query_indices, key_indices, values


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


# In-place writes into fresh pairwise results
# -------------------------------------------
# A pairwise result is an (n, m) matrix: every extra array of its size (a
# mask, a ``where``, ``1 - s``) doubles the peak memory, and the contract
# bounds the peak at 1.3x the result. The standard has no in-place update
# (``__setitem__`` aside), so the writes below happen only where the library
# has one and nothing else holds the array: NumPy, and PyTorch when no
# gradient is recorded and no compiler or ``torch.func`` transform traces it.
# JAX gets a functional ``.at[].set`` (in place under ``jit``), PyTorch with
# autograd ``diagonal_scatter``; everything else (Dask, array-api-strict) a
# ``where`` against a mask broadcast from two ``arange``, lazily and chunk by
# chunk on Dask.


def writable_in_place(xp: ModuleType, x: Array) -> bool:
    """Whether results computed from ``x`` may be modified in place."""
    if is_numpy_namespace(xp):
        return isinstance(x, np.ndarray)
    if is_torch_namespace(xp):
        import torch

        return not (
            torch.compiler.is_compiling()
            or _inside_torch_func(x)
            or (torch.is_grad_enabled() and x.requires_grad)
        )
    return False


def one_minus(xp: ModuleType, x: Array, *, owned: bool) -> Array:
    """``1 - x``, in place where ``x`` is ``owned`` (fresh) and writable."""
    if owned and writable_in_place(xp, x):
        if is_numpy_namespace(xp):
            return np.subtract(1, x, out=x)
        # Negation is exact, so -x + 1 rounds as 1 - x does.
        return x.neg_().add_(1)
    return 1 - x


def set_diagonal(
    xp: ModuleType, matrix: Array, values: Array | float, *, offset: int, owned: bool
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
    if owned and writable_in_place(xp, matrix):
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


def gradient_may_flow(xp: ModuleType, x: Array) -> bool:
    """Whether a gradient may be taken through computations on ``x``.

    JAX tracers (``grad``, and ``jit``, which may sit inside a ``grad``),
    PyTorch tensors that record autograd, or that ``torch.compile`` or a
    ``torch.func`` transform traces. Libraries without autodiff: never.
    """
    if is_jax_namespace(xp):
        import jax

        return isinstance(x, jax.core.Tracer)
    if is_torch_namespace(xp):
        import torch

        return (
            torch.compiler.is_compiling()
            or _inside_torch_func(x)
            or (torch.is_grad_enabled() and x.requires_grad)
        )
    return False
