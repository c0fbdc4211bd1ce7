"""How a call may run, resolved once from all its array arguments.

Four questions decide every path in cosinekit, and they are answered here
only (see `Mode`): may a result's shape depend on values; is reading a value
free; is the computation lazy; and which automatic differentiation records
it. Everything else reads the answer.
"""

from __future__ import annotations

import enum
import functools
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

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


class Autodiff(enum.Enum):
    """Which automatic differentiation may record the call."""

    NONE = "none"
    JAX = "jax"  # a JAX transformation traces the call (jit, grad, vmap, ...)
    TORCH_AUTOGRAD = "torch autograd"  # eager PyTorch, recording a gradient
    TORCH_COMPILE = "torch.compile"  # Dynamo traces the call
    TORCH_FUNC = "torch.func"  # a torch.func transform (grad, vmap, jacrev, ...)


class Mode(NamedTuple):
    """How one call runs: resolved once, from every array argument, by `execution_mode`.

    ``eager``
        Operations run as they are called and a result's shape may depend on
        values (``nonzero``, a count of pairs): NumPy, CuPy, eager PyTorch
        and JAX on any device, array-api-strict with data-dependent shapes.
        Not under a trace (``jax.jit``, ``torch.compile``, ``torch.func``)
        and not on lazy (Dask) arrays.
    ``host_reads_free``
        Reading a value (``bool(xp.all(...))``) is free: eager, and every
        array on the host. On an accelerator a read is a device-to-host
        synchronization that stalls the stream and breaks CUDA-graph
        capture, so only the functions whose result size needs one read
        there (range search, similar pairs, communities, ``progress``).
    ``lazy``
        Dask: nothing may be computed before the caller asks.
    ``autodiff``
        Which differentiation may record the call (`Autodiff`).
    """

    eager: bool
    host_reads_free: bool
    lazy: bool
    autodiff: Autodiff

    @property
    def records_gradients(self) -> bool:
        """Whether a gradient may be taken through the call."""
        return self.autodiff is not Autodiff.NONE


EAGER_HOST = Mode(eager=True, host_reads_free=True, lazy=False, autodiff=Autodiff.NONE)
EAGER_DEVICE = Mode(eager=True, host_reads_free=False, lazy=False, autodiff=Autodiff.NONE)
LAZY = Mode(eager=False, host_reads_free=False, lazy=True, autodiff=Autodiff.NONE)
FIXED_SHAPES = Mode(eager=False, host_reads_free=False, lazy=False, autodiff=Autodiff.NONE)
_TORCH_AUTOGRAD_HOST = EAGER_HOST._replace(autodiff=Autodiff.TORCH_AUTOGRAD)
_TORCH_AUTOGRAD_DEVICE = EAGER_DEVICE._replace(autodiff=Autodiff.TORCH_AUTOGRAD)
_TORCH_COMPILE = FIXED_SHAPES._replace(autodiff=Autodiff.TORCH_COMPILE)
_TORCH_FUNC = FIXED_SHAPES._replace(autodiff=Autodiff.TORCH_FUNC)
_JAX_TRACED = FIXED_SHAPES._replace(autodiff=Autodiff.JAX)


def execution_mode(xp: ModuleType, *arrays: Array, names: Sequence[str] = ("inputs",)) -> Mode:
    """The `Mode` of a call on ``arrays`` of namespace ``xp``.

    Every array argument counts: one traced, lazy or transformed argument
    among concrete ones makes the whole call traced, and one on an
    accelerator makes reads costly. Arrays on different devices are a
    ``ValueError`` naming both devices (from ``names``), raised before any
    computation.
    """
    if is_numpy_namespace(xp):
        return EAGER_HOST
    if is_torch_namespace(xp):
        return _torch_mode(arrays, names)
    if is_jax_namespace(xp):
        return _jax_mode(arrays, names)
    if is_dask_namespace(xp) or any(is_lazy_array(x) for x in arrays):
        return LAZY
    _check_one_device(arrays, names)
    if is_cupy_namespace(xp):
        return EAGER_DEVICE
    return _strict_mode() if is_array_api_strict_namespace(xp) else EAGER_HOST


def _strict_mode() -> Mode:
    import array_api_strict

    if array_api_strict.get_array_api_strict_flags()["data_dependent_shapes"]:
        return EAGER_HOST
    # Values may be read, but nothing built on nonzero may run: the
    # fixed-shape paths serve, and value-dependent results refuse.
    return FIXED_SHAPES


def _torch_mode(arrays: tuple[Array, ...], names: Sequence[str]) -> Mode:
    import torch

    if torch.compiler.is_compiling():
        return _TORCH_COMPILE
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    # is_cpu, not device.type: building the device object costs a microsecond.
    on_host = all(x.is_cpu for x in arrays)
    if not on_host:
        _check_one_device(arrays, names)
    if any(wrapped(x) for x in arrays):
        return _TORCH_FUNC
    if torch.is_grad_enabled() and any(x.requires_grad for x in arrays):
        return _TORCH_AUTOGRAD_HOST if on_host else _TORCH_AUTOGRAD_DEVICE
    return EAGER_HOST if on_host else EAGER_DEVICE


def _jax_mode(arrays: tuple[Array, ...], names: Sequence[str]) -> Mode:
    import jax
    from jax._src.core import trace_state_clean

    # Under jit even an operation on concrete (closed-over) arrays yields a
    # tracer, so the question is whether any transformation is running at
    # all; JAX has no public spelling of it.
    if not trace_state_clean() or any(isinstance(x, jax.core.Tracer) for x in arrays):
        return _JAX_TRACED
    devices = [x.devices() for x in arrays]
    if any(d != devices[0] for d in devices[1:]):
        _raise_devices(arrays, names)
    on_host = all(d.platform == "cpu" for group in devices for d in group)
    return EAGER_HOST if on_host else EAGER_DEVICE


def _check_one_device(arrays: tuple[Array, ...], names: Sequence[str]) -> None:
    devices = [array_device(x) for x in arrays]
    if any(d != devices[0] for d in devices[1:]):
        _raise_devices(arrays, names)


def _raise_devices(arrays: tuple[Array, ...], names: Sequence[str]) -> None:
    labels = [*names, *(f"argument {i}" for i in range(len(names), len(arrays)))]
    described = ", ".join(
        f"{label} on {array_device(x)}" for label, x in zip(labels, arrays, strict=False)
    )
    msg = f"all arrays must be on one device, got {described}; move them to one device first"
    raise ValueError(msg)


def may_write_caches() -> bool:
    """Whether module-level caches may be written now.

    Not while ``torch.compile`` traces: Dynamo would have to replay the write
    after the graph, and it cannot rebuild a module object it got from a
    traced call (``fullgraph=True`` fails when a process's first cosinekit
    call is compiled). The caches fill on the next eager call.
    """
    torch = sys.modules.get("torch")
    return torch is None or not torch.compiler.is_compiling()


_Function = TypeVar("_Function", bound=Callable[..., Any])


def compiling() -> bool:
    """Whether ``torch.compile`` is tracing now (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())


def eager_under_compile(function: _Function) -> _Function:
    """Make ``function`` a graph break under ``torch.compile``, run eagerly.

    For the functions whose result size depends on values (range search,
    similar pairs, communities): without ``fullgraph`` the compiled caller
    stops its graph there and the call runs eagerly, returning the eager
    result; with ``fullgraph=True`` compilation fails at that call, as it
    does for any graph break. ``torch.compiler.disable`` is that boundary;
    it is applied per call, so that importing cosinekit never imports torch.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if compiling():
            torch = sys.modules["torch"]
            return torch.compiler.disable(function, recursive=True)(*args, **kwargs)
        return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
