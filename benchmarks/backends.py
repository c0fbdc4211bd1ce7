"""One description per array library and device: everything a case needs to know.

A case never asks which library it runs on; it reads the fields of its
:class:`Backend`: ``array`` to make inputs, ``compile`` to wrap a function
(``jax.jit``; the identity for eager libraries), ``gradient`` for a training
step, ``row_dots`` for the one-pass limit, ``top_k`` for a brute-force
search, and ``library`` to look up its peers (see ``peers.py``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
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
    on it (``Topic.modes``). ``row_dots`` are the library's candidates for
    the fastest single pass over both inputs, a row-wise dot ``f(a, b)``
    (not yet compiled): which one is fastest depends on the size, so the
    row-wise limit is the fastest of them, measured (:meth:`row_dot_limit`).
    ``top_k(scores, k)`` is the library's own selection of the ``k`` largest
    per row. ``gradient`` turns a scalar loss ``loss(labels, predictions)``
    into a training step that returns the gradient with respect to
    ``predictions`` (``None`` where the library has no autodiff).
    """

    name: str
    library: str
    device: str
    mode: str
    xp: Any
    array: Callable[[np.ndarray], Any]
    row_dots: Mapping[str, Callable[[Any, Any], Any]]
    top_k: Callable[[Any, int], Any]
    sync: Callable[[Any], Any] = _no_sync
    compile: Callable[[Fn], Fn] = _identity
    gradient: Callable[[Fn], Fn] | None = None

    def row_dot_limit(self) -> dict[str, Fn]:
        """The one-pass limit of a row-wise case: each candidate row dot, compiled."""
        return {name: self.compile(fn) for name, fn in self.row_dots.items()}


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
            row_dots={"vecdot": lambda a, b: xp.vecdot(a, b, axis=-1)},
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


def torch_backends(compiler: str) -> list[Backend]:
    """Eager PyTorch on each device, and the same under ``torch.compile(backend=compiler)``."""
    try:
        import array_api_compat.torch as xp
        import torch
    except ImportError:
        return []
    torch.set_num_threads(THREADS)
    # torch.compile notes that it traces through array-api-compat's
    # lru_cache-wrapped type checks; harmless, and a line per function.
    warnings.filterwarnings(
        "ignore", "Dynamo detected a call to a `functools.lru_cache`-wrapped", UserWarning
    )

    row_dots = {
        # array-api-compat's vecdot is a batched matmul on PyTorch, the
        # fastest row dot on large batches (faster than einsum); on small
        # ones torch.linalg.vecdot is ten times faster. Under inductor both
        # run as fast as the fused (a * b).sum(-1).
        "batched matmul": lambda a, b: xp.vecdot(a, b, axis=-1),
        "linalg.vecdot": lambda a, b: torch.linalg.vecdot(a, b, dim=-1),
    }

    def top_k(scores: Any, k: int) -> Any:
        return torch.topk(scores, k, dim=1)

    def compile_fn(fn: Fn) -> Fn:
        return torch.compile(fn, backend=compiler)

    def compiled_gradient(loss: Fn) -> Fn:
        return _torch_gradient(compile_fn(loss))

    def cuda_sync(result: Any) -> Any:
        torch.cuda.synchronize()
        return result

    devices = [("torch", "cpu", torch.from_numpy, _no_sync)]
    if torch.cuda.is_available():
        devices.append(("torch-cuda", "cuda", lambda a: torch.from_numpy(a).to("cuda"), cuda_sync))
    backends = []
    for name, device, array, sync in devices:
        eager = Backend(
            name,
            "torch",
            device,
            "eager",
            xp,
            array=array,
            row_dots=row_dots,
            top_k=top_k,
            sync=sync,
            gradient=_torch_gradient,
        )
        compiled = dataclasses.replace(
            eager,
            name=f"{name}-{compiler}",
            mode="compile",
            compile=compile_fn,
            gradient=compiled_gradient,
        )
        backends += [eager, compiled]
    return backends


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
            row_dots={"einsum": lambda a, b: jnp.einsum("ij,ij->i", a, b)},
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
            row_dots={"vecdot": lambda a, b: xp.vecdot(a, b, axis=-1)},
            top_k=lambda scores, k: xp.argsort(-scores, axis=1)[:, :k],
            sync=sync,
        )
    ]


LIBRARIES: dict[str, Callable[[str], list[Backend]]] = {
    "numpy": lambda torch_compiler: numpy_backends(),
    "torch": torch_backends,
    "jax": lambda torch_compiler: jax_backends(),
    "cupy": lambda torch_compiler: cupy_backends(),
}
"""Each library's backends (every device present), built by importing only that library."""


def available_backends(
    libraries: Sequence[str] = tuple(LIBRARIES), torch_compiler: str = "inductor"
) -> list[Backend]:
    """The backends of ``libraries`` (default: NumPy, PyTorch eager and compiled, JAX, CuPy)."""
    return [backend for library in libraries for backend in LIBRARIES[library](torch_compiler)]
