"""One description per array library and device: everything a case needs to know.

A case never asks which library it runs on; it reads the fields of its
:class:`Backend`: ``array`` to make inputs, ``compile`` to wrap a function
(``jax.jit``; the identity for eager libraries), ``gradient`` for a training
step, ``row_dot`` for the one-pass limit, ``top_k`` for a brute-force
search, and ``library`` to look up its peers (see ``peers.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import THREADS

Fn = Callable[..., Any]


def _identity(fn: Fn) -> Fn:
    return fn


def _no_sync(result: Any) -> Any:
    return result


@dataclass(frozen=True)
class Backend:
    """An array library on one device, in one execution mode.

    ``library`` keys the peer tables (``"numpy"``, ``"torch"``, ``"jax"``,
    ``"cupy"``); ``device`` is ``"cpu"`` or the accelerator; ``mode`` is
    ``"eager"``, ``"jit"`` or ``"compile"`` and selects the topics that run
    on it (``Topic.modes``). ``row_dot(a, b)`` is the fastest single pass
    over both inputs (a row-wise dot, not yet compiled); ``top_k(scores, k)``
    the library's own selection of the ``k`` largest per row. ``gradient``
    turns a scalar loss ``loss(labels, predictions)`` into a training step
    that returns the gradient with respect to ``predictions`` (``None``
    where the library has no autodiff).
    """

    name: str
    library: str
    device: str
    mode: str
    xp: Any
    array: Callable[[np.ndarray], Any]
    row_dot: Callable[[Any, Any], Any]
    top_k: Callable[[Any, int], Any]
    sync: Callable[[Any], Any] = _no_sync
    compile: Callable[[Fn], Fn] = _identity
    gradient: Callable[[Fn], Fn] | None = None


# --- NumPy ------------------------------------------------------------------


def _numpy_top_k(scores: Any, k: int) -> Any:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)


def numpy_backends() -> list[Backend]:
    import array_api_compat.numpy as xp

    return [
        Backend(
            "numpy",
            "numpy",
            "cpu",
            "eager",
            xp,
            array=_identity,
            row_dot=lambda a, b: xp.vecdot(a, b, axis=-1),
            top_k=_numpy_top_k,
        )
    ]


# --- PyTorch ----------------------------------------------------------------


def _torch_gradient(loss: Fn) -> Fn:
    """An eager training step: forward, ``backward()``, the predictions' gradient."""

    def step(labels: Any, predictions: Any) -> Any:
        predictions = predictions.detach().requires_grad_(True)
        loss(labels, predictions).backward()
        return predictions.grad

    return step


def torch_backends() -> list[Backend]:
    try:
        import array_api_compat.torch as xp
        import torch
    except ImportError:
        return []
    torch.set_num_threads(THREADS)

    def row_dot(a: Any, b: Any) -> Any:
        # array-api-compat's vecdot is a batched matmul on PyTorch, the
        # fastest row dot there (faster than einsum or linalg.vecdot).
        return xp.vecdot(a, b, axis=-1)

    def top_k(scores: Any, k: int) -> Any:
        return torch.topk(scores, k, dim=1)

    def cuda_sync(result: Any) -> Any:
        torch.cuda.synchronize()
        return result

    devices = [("torch", "cpu", torch.from_numpy, _no_sync)]
    if torch.cuda.is_available():
        devices.append(("torch-cuda", "cuda", lambda a: torch.from_numpy(a).to("cuda"), cuda_sync))
    return [
        Backend(
            name,
            "torch",
            device,
            "eager",
            xp,
            array=array,
            row_dot=row_dot,
            top_k=top_k,
            sync=sync,
            gradient=_torch_gradient,
        )
        for name, device, array, sync in devices
    ]


# --- JAX --------------------------------------------------------------------


def jax_backends() -> list[Backend]:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return []
    jax.config.update("jax_enable_x64", True)

    def gradient(loss: Fn) -> Fn:
        return jax.jit(jax.grad(loss, argnums=1))

    def backend(name: str, device: Any) -> Backend:
        return Backend(
            name,
            "jax",
            device.platform,
            "jit",
            jnp,
            array=lambda a: jax.device_put(a, device),
            row_dot=lambda a, b: jnp.einsum("ij,ij->i", a, b),
            top_k=jax.lax.top_k,
            sync=jax.block_until_ready,
            compile=jax.jit,
            gradient=gradient,
        )

    backends = [backend("jax-jit", jax.devices("cpu")[0])]
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        return backends
    return [*backends, backend("jax-jit-gpu", gpu)]


# --- CuPy -------------------------------------------------------------------


def cupy_backends() -> list[Backend]:
    try:
        import cupy
    except ImportError:
        return []
    try:
        cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        return []
    import array_api_compat.cupy as xp

    def sync(result: Any) -> Any:
        cupy.cuda.Device().synchronize()
        return result

    return [
        Backend(
            "cupy",
            "cupy",
            "cuda",
            "eager",
            xp,
            array=cupy.asarray,
            row_dot=lambda a, b: xp.vecdot(a, b, axis=-1),
            top_k=lambda scores, k: xp.argsort(-scores, axis=1)[:, :k],
            sync=sync,
        )
    ]


def available_backends() -> list[Backend]:
    """NumPy, PyTorch, JAX (jit) and CuPy, on every device present."""
    return [*numpy_backends(), *torch_backends(), *jax_backends(), *cupy_backends()]
