"""The execution mode, and no host synchronization where reading a value costs one.

Every call resolves one `Mode` from all its array arguments: eager (a result
shape may depend on values), host reads free, lazy, and which autodiff
records it. Checked here:

* the decision per library, device and transform, with stand-ins for the
  devices this machine lacks (PyTorch "meta" tensors for any accelerator, a
  JAX array that reports a GPU, a CuPy namespace);
* every fixed-shape public function on "meta" tensors, which hold no values
  (any read raises), so no such function reads a value on an accelerator;
* the value-dependent functions (range search, ``progress``) on arrays whose
  reads are not free but which are eager (a stand-in GPU): they work, and
  give the eager result;
* arrays on different devices are a ``ValueError`` naming both devices;
* where a GPU is present, every function under
  ``torch.cuda.set_sync_debug_mode("error")``.

The function lists come from the capability table, so a new public function
fails `test_every_fixed_shape_function_has_a_call` until it is covered.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import capabilities
from cosinekit._lib._strategy import mode as mode_module
from cosinekit._lib._strategy.mode import (
    EAGER_DEVICE,
    EAGER_HOST,
    LAZY,
    Autodiff,
    Mode,
    execution_mode,
)

# Each fixed-shape public function with arguments built by ``make(*shape)``.
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
    "info_nce_loss": lambda make: ck.info_nce_loss(
        make(4, 5), make(6, 5), temperature=make(), labels=_integers(make, 4) * 5 % 6
    ),
    "ntxent_loss": lambda make: ck.ntxent_loss(make(4, 5), _integers(make, 4) // 2),
    "cosent_loss": lambda make: ck.cosent_loss(make(4, 5), make(4, 5), make(4)),
    "cosine_triplet_loss": lambda make: ck.cosine_triplet_loss(
        make(4, 5), make(4, 5), make(4, 5), swap=True
    ),
}


def _integers(make: Callable[..., Any], n: int) -> Any:
    """``arange(n)`` on the device of ``make``'s arrays (made there: no copy from the host)."""
    import torch

    return torch.arange(n, device=make(1).device)


FIXED_SHAPE = capabilities(shape="fixed", backend="torch")


def test_every_fixed_shape_function_has_a_call() -> None:
    assert sorted(CALLS) == sorted(FIXED_SHAPE)


@pytest.mark.backends("torch")
def test_torch_mode_per_device_and_autodiff() -> None:
    import torch

    cpu, meta = torch.ones(3), torch.ones(3, device="meta")  # meta stands in for a GPU
    assert execution_mode(torch, cpu) is EAGER_HOST
    assert execution_mode(torch, meta) is EAGER_DEVICE
    grad = torch.ones(3, requires_grad=True)
    assert execution_mode(torch, cpu, grad).autodiff is Autodiff.TORCH_AUTOGRAD
    with torch.no_grad():
        assert execution_mode(torch, grad) is EAGER_HOST
    seen: list[Mode] = []

    def record(t: Any) -> Any:
        seen.append(execution_mode(torch, cpu, t))
        return t.sum()

    torch.func.vmap(record)(torch.ones(2, 3))
    torch.func.grad(record)(torch.ones(3))
    torch.compile(record, fullgraph=True, backend="eager")(torch.ones(3))
    assert [m.autodiff for m in seen] == [
        Autodiff.TORCH_FUNC,
        Autodiff.TORCH_FUNC,
        Autodiff.TORCH_COMPILE,
    ]
    assert not any(m.eager or m.host_reads_free for m in seen)


@pytest.mark.backends("torch")
def test_torch_arrays_on_two_devices_are_a_value_error() -> None:
    import torch

    cpu, meta = torch.ones(4, 3), torch.ones(4, 3, device="meta")
    with pytest.raises(ValueError, match=r"queries on cpu.*keys on meta"):
        ck.info_nce_loss(cpu, meta)
    with pytest.raises(ValueError, match=r"x1 on meta.*x2 on cpu"):
        ck.cosine_similarity(meta, cpu)
    with pytest.raises(ValueError, match=r"on meta"):
        ck.cosine_topk(cpu, meta, 2)


@pytest.mark.backends("jax")
def test_jax_mode_per_device_and_trace() -> None:
    import jax
    import jax.numpy as jnp

    concrete = jnp.ones(3)
    assert execution_mode(jnp, concrete) is EAGER_HOST
    gpu_array = types.SimpleNamespace(devices=lambda: [types.SimpleNamespace(platform="gpu")])
    assert execution_mode(jnp, gpu_array) is EAGER_DEVICE
    seen: list[Mode] = []

    def record(t: Any) -> Any:
        # Closed-over concrete arrays count as traced too: under jit an
        # operation on them yields a tracer.
        seen.extend((execution_mode(jnp, concrete), execution_mode(jnp, concrete, t)))
        return jnp.sum(t)

    jax.jit(record)(concrete)
    jax.grad(record)(concrete)
    jax.vmap(record)(jnp.ones((2, 3)))
    assert {m.autodiff for m in seen} == {Autodiff.JAX}
    assert not any(m.eager for m in seen)


@pytest.mark.backends("numpy")
def test_cupy_and_dask_modes() -> None:
    cupy_namespace = types.ModuleType("cupy")  # CuPy arrays always live on a GPU
    assert execution_mode(cupy_namespace, np.ones(3)) is EAGER_DEVICE
    dask_namespace = types.ModuleType("array_api_compat.dask.array")
    assert execution_mode(dask_namespace, np.ones(3)) is LAZY
    assert execution_mode(np, np.ones(3)) is EAGER_HOST


@pytest.mark.backends("torch")
@pytest.mark.parametrize("name", sorted(CALLS))
def test_torch_meta_tensors_are_never_read(name: str) -> None:
    import torch

    # A meta tensor has a shape and no values: bool() or .item() on anything
    # computed from it raises, so each call proves that no value is read.
    result = CALLS[name](lambda *shape: torch.ones(shape, device="meta", dtype=torch.float64))
    for out in result if isinstance(result, tuple) else (result,):
        assert out.device.type == "meta"


@pytest.fixture
def stand_in_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyTorch CPU tensors resolve as an eager accelerator: reads are not free."""
    resolve = mode_module._torch_mode

    def on_device(arrays: tuple[Any, ...], names: Any) -> Mode:
        found = resolve(arrays, names)
        return found._replace(host_reads_free=False) if found.eager else found

    monkeypatch.setattr(mode_module, "_torch_mode", on_device)


@pytest.mark.backends("torch")
def test_value_dependent_searches_run_on_an_eager_accelerator(stand_in_gpu: None) -> None:
    import torch

    rng = np.random.default_rng(0)
    items = rng.standard_normal((30, 4))
    items[7] = items[3] * 2  # an exact duplicate direction
    tensor = torch.asarray(items)
    assert execution_mode(torch, tensor) == EAGER_DEVICE
    rows, cols, sims = ck.cosine_range_search(tensor, tensor, 0.9, exclude_self=True)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    expected = np.argwhere((unit @ unit.T >= 0.9) & ~np.eye(30, dtype=bool))
    got = np.stack([rows.numpy(), cols.numpy()], axis=1)
    assert sorted(map(tuple, got)) == sorted(map(tuple, expected))
    np.testing.assert_allclose(sims.numpy(), (unit @ unit.T)[rows.numpy(), cols.numpy()])
    calls: list[tuple[int, int]] = []
    _, indices = ck.cosine_topk(
        tensor, tensor, 3, chunk_size=8, progress=lambda done, m: calls.append((done, m))
    )
    assert calls == [(8, 30), (16, 30), (24, 30), (30, 30)]
    reference = np.argsort(-(unit @ unit.T), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(np.sort(indices.numpy(), 1), np.sort(reference, 1))


@pytest.mark.gpu
@pytest.mark.backends("torch")
@pytest.mark.parametrize("name", sorted(CALLS))
def test_torch_cuda_never_synchronizes(name: str) -> None:
    import torch

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
