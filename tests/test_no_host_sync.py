"""No host synchronization where reading a value costs one.

The eager fast path reads one boolean per call (``bool(xp.all(ok))``) to
decide whether any row needs rescaling. On the CPU that is free; on an
accelerator it is a device-to-host synchronization that stalls the stream
and breaks CUDA-graph capture. The strategy point therefore declines to read
values of arrays off the CPU (PyTorch on any other device, CuPy, JAX on a
GPU), and those take the branch-free path.

Checked three ways: the strategy's decision per device (with stand-ins for
devices this machine lacks), every public function on PyTorch "meta" tensors
(which hold no values: any read raises), and, where a GPU is present, every
public function under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import Backend
from cosinekit._lib._strategy import values_are_readable

# Each public function with arguments built by ``make(shape) -> array``.
CALLS: dict[str, Callable[[Callable[..., Any]], Any]] = {
    "l2_normalize": lambda make: ck.l2_normalize(make(4, 5)),
    "cosine_similarity": lambda make: ck.cosine_similarity(
        make(4, 5), make(4, 5), feature_weights=make(5)
    ),
    "cosine_distance": lambda make: ck.cosine_distance(make(4, 5), make(4, 5)),
    "angular_distance": lambda make: ck.angular_distance(make(4, 5), make(4, 5), eps=1e-8),
    "cosine_distance_loss": lambda make: ck.cosine_distance_loss(
        make(4, 5), make(4, 5), weights=make(4)
    ),
    "cosine_embedding_loss": lambda make: ck.cosine_embedding_loss(
        make(4, 5), make(4, 5), make(4)
    ),
    "pairwise_cosine_similarity": lambda make: ck.pairwise_cosine_similarity(make(4, 5)),
    "pairwise_cosine_distance": lambda make: ck.pairwise_cosine_distance(make(4, 5), make(3, 5)),
    "cosine_topk": lambda make: ck.cosine_topk(make(4, 5), make(6, 5), 2),
}


def _require(library: Backend, wanted: Backend) -> None:
    if library is not wanted:
        pytest.skip(f"a {wanted.value} device rule; the backend under test is {library.value}")


def test_torch_decision_per_device(xp: ModuleType, library: Backend) -> None:
    _require(library, Backend.TORCH)
    import torch

    cpu = torch.ones(3)
    meta = torch.ones(3, device="meta")  # stands in for any non-CPU device
    assert values_are_readable(xp, cpu)
    assert values_are_readable(xp, cpu, cpu)
    assert not values_are_readable(xp, meta)
    # One argument off the CPU decides for all of them.
    assert not values_are_readable(xp, cpu, meta)
    assert not values_are_readable(xp, meta, cpu)


def test_torch_decision_under_transforms(xp: ModuleType, library: Backend) -> None:
    _require(library, Backend.TORCH)
    import torch

    cpu = torch.ones(3)
    seen: list[bool] = []

    def record(t: Any) -> Any:
        seen.append(values_are_readable(xp, cpu, t))
        return t.sum()

    torch.func.vmap(record)(torch.ones(2, 3))
    torch.func.grad(record)(torch.ones(3))
    assert seen == [False, False]


def test_jax_decision_per_device_and_trace(xp: ModuleType, library: Backend) -> None:
    _require(library, Backend.JAX)
    import jax

    concrete = xp.ones(3)
    assert values_are_readable(xp, concrete)
    gpu_array = types.SimpleNamespace(devices=lambda: [types.SimpleNamespace(platform="gpu")])
    assert not values_are_readable(xp, gpu_array)
    assert not values_are_readable(xp, concrete, gpu_array)
    seen: list[bool] = []

    def record(t: Any) -> Any:
        # Closed-over concrete arrays count as traced too: under jit an
        # operation on them yields a tracer.
        seen.extend((values_are_readable(xp, concrete), values_are_readable(xp, concrete, t)))
        return xp.sum(t)

    jax.jit(record)(concrete)
    jax.grad(record)(concrete)
    jax.vmap(record)(xp.ones((2, 3)))
    assert seen == [False] * 6


def test_cupy_and_lazy_arrays_are_never_read(xp: ModuleType, library: Backend) -> None:
    _require(library, Backend.NUMPY)
    cupy_namespace = types.ModuleType("cupy")  # CuPy arrays always live on a GPU
    assert not values_are_readable(cupy_namespace, np.ones(3))
    assert values_are_readable(xp, np.ones(3))


@pytest.mark.parametrize("name", CALLS)
def test_torch_meta_tensors_are_never_read(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.TORCH)
    import torch

    # A meta tensor has a shape and no values: bool() or .item() on anything
    # computed from it raises, so each call proves that no value is read.
    result = CALLS[name](lambda *shape: torch.ones(shape, device="meta", dtype=torch.float64))
    for out in result if isinstance(result, tuple) else (result,):
        assert out.device.type == "meta"


@pytest.mark.parametrize("name", CALLS)
def test_torch_cuda_never_synchronizes(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.TORCH)
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: none is present")

    def make(*shape: int) -> Any:
        # Drawn on the device: a copy from the host could itself synchronize.
        return torch.rand(shape, device="cuda", dtype=torch.float64) + 0.5

    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = CALLS[name](make)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    for out in result if isinstance(result, tuple) else (result,):
        assert out.device.type == "cuda"
