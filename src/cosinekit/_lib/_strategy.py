"""The one strategy point: everything that depends on which array library runs.

The rest of cosinekit is written against the array API standard only. The
standard lacks two things that exact and fast cosine needs, so they live here,
each covered by the same tests on every backend:

``values_are_readable``
    Whether the code may look at array values (``bool(xp.all(...))``) and pick
    data-dependent shapes (``nonzero``). Where it may (NumPy, CuPy, eager
    PyTorch, array-api-strict with data-dependent shapes allowed) cosinekit
    takes a fast one-pass path and repairs only the rows that need rescaling.
    Where it may not (Dask, JAX, which may be traced at any time,
    ``torch.compile``, ``torch.func`` transforms) it takes the branch-free
    rescaled path, which is equally exact and never forces a computation.

``stop_gradient``
    Straight-through clipping and constant scale factors need it; the standard
    has no autodiff. Libraries without autodiff get the identity.

``quiet_overflow``
    The fast path squares values that may overflow or be inf or NaN, by
    design: such rows are detected and recomputed. NumPy (and
    array-api-strict, which wraps it) would warn about it; nothing else does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import (
    is_array_api_strict_namespace,
    is_jax_namespace,
    is_lazy_array,
    is_torch_namespace,
)

Array = Any


def values_are_readable(xp: ModuleType, x: Array) -> bool:
    """Return True where reading values of ``x`` is cheap and allowed."""
    if is_lazy_array(x):
        # Dask would compute the graph; JAX arrays may be tracers.
        return False
    if is_torch_namespace(xp):
        import torch

        # A data-dependent branch breaks a torch.compile(fullgraph=True) graph
        # and is refused inside torch.func.vmap.
        return not (
            torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(x)
        )
    if is_array_api_strict_namespace(xp):
        import array_api_strict

        return bool(array_api_strict.get_array_api_strict_flags()["data_dependent_shapes"])
    return True


def stop_gradient(xp: ModuleType, x: Array) -> Array:
    """Return ``x`` with its gradient path cut (identity without autodiff)."""
    if is_torch_namespace(xp):
        return x.detach()
    if is_jax_namespace(xp):
        import jax

        return jax.lax.stop_gradient(x)
    return x


@contextlib.contextmanager
def quiet_overflow() -> Iterator[None]:
    """Silence NumPy's floating-point warnings for the fast path's sums."""
    with np.errstate(over="ignore", invalid="ignore"):
        yield
