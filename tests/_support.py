"""Test support: the backends, converting arrays, and the shared assertions.

The assertions follow SciPy's ``xp_assert_close``: besides the values they
check that the result has the expected namespace, dtype, shape and device,
so that no test can pass with a result silently converted to NumPy.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import shutil
import subprocess
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from cosinekit._lib._capabilities import CAPABILITIES

Array = Any

_DEVICE: dict[str, str] = {"name": "cpu"}


class Backend(enum.Enum):
    """The array libraries under test; each value is its name in COSINEKIT_BACKENDS."""

    NUMPY = "numpy"
    TORCH = "torch"
    JAX = "jax"
    DASK = "dask"
    ARRAY_API_STRICT = "array_api_strict"
    ARRAY_API_STRICTEST = "array_api_strictest"
    CUPY = "cupy"

    @property
    def module(self) -> str:
        """The module that must import for this backend."""
        return {
            Backend.DASK: "dask.array",
            Backend.ARRAY_API_STRICTEST: "array_api_strict",
        }.get(self, self.value)

    def namespace(self) -> ModuleType:
        """The array-API namespace of this backend."""
        if self is Backend.JAX:
            import jax

            jax.config.update("jax_enable_x64", True)
            return importlib.import_module("jax.numpy")
        if self in (Backend.ARRAY_API_STRICT, Backend.ARRAY_API_STRICTEST):
            return importlib.import_module("array_api_strict")
        compat = {"dask": "array_api_compat.dask.array"}.get(
            self.value, f"array_api_compat.{self.value}"
        )
        return importlib.import_module(compat)


def gpu_available() -> bool:
    """Whether an NVIDIA GPU is usable here."""
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def set_backend_device(backend: Backend, device: str) -> Iterator[None]:
    """Select the device for new arrays, and the strictest flags where asked."""
    _DEVICE["name"] = device
    if backend is Backend.ARRAY_API_STRICTEST:
        import array_api_strict

        with array_api_strict.ArrayAPIStrictFlags(
            data_dependent_shapes=False, boolean_indexing=False
        ):
            yield
        return
    yield


@contextlib.contextmanager
def counting_dask_computes() -> Iterator[list[int]]:
    """Run Dask synchronously and count its computations in the yielded list."""
    import dask

    calls = [0]

    def counting_get(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return dask.get(*args, **kwargs)

    with dask.config.set(scheduler=counting_get):
        yield calls


def xp_device(xp: ModuleType) -> Any:
    """The device new test arrays go to, for ``xp``."""
    if _DEVICE["name"] == "cpu" or not (
        array_api_compat.is_torch_namespace(xp) or array_api_compat.is_jax_namespace(xp)
    ):
        return None
    if array_api_compat.is_torch_namespace(xp):
        return _DEVICE["name"]
    import jax

    return jax.devices("gpu")[0]


def asarray(xp: ModuleType, value: Any, dtype: Any = None) -> Array:
    """``value`` (nested lists or a NumPy array) as an array of ``xp``.

    Dask arrays are split into several chunks along every axis so that the
    code runs across chunk boundaries (feature axis included).
    """
    if array_api_compat.is_dask_namespace(xp):
        import dask.array as da

        data = np.asarray(value)
        if dtype is not None:
            data = data.astype(np.dtype(dtype))
        chunks = max(1, (data.shape[0] + 1) // 2) if data.ndim else ()
        return da.from_array(data, chunks=chunks if data.ndim else ())
    if dtype is not None and not isinstance(value, np.ndarray):
        value = np.asarray(value)
    array = xp.asarray(value, device=xp_device(xp))
    return array if dtype is None else xp.astype(array, dtype)


def to_numpy(x: Array) -> np.ndarray:
    """Copy any backend's array into NumPy (computing Dask arrays)."""
    if array_api_compat.is_dask_array(x):
        return np.asarray(x.compute())
    if array_api_compat.is_torch_array(x):
        return (
            x.detach().cpu().float().numpy() if x.dtype.itemsize < 4 else x.detach().cpu().numpy()
        )
    if array_api_compat.is_cupy_array(x):
        return x.get()
    # A computed 0-d Dask result is a NumPy scalar, as NumPy's reductions give.
    if array_api_compat.is_jax_array(x) or isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    return np.from_dlpack(x)


def _check_meta(actual: Array, xp: ModuleType, dtype: Any, shape: tuple[int, ...] | None) -> None:
    actual_xp = array_api_compat.array_namespace(actual)
    expected_xp = array_api_compat.array_namespace(xp.asarray(0))
    assert actual_xp is expected_xp, f"namespace {actual_xp.__name__} != {expected_xp.__name__}"
    assert array_api_compat.is_array_api_obj(actual), f"{type(actual).__name__} is no array"
    assert not isinstance(actual, np.generic), f"result is a NumPy scalar {type(actual).__name__}"
    if dtype is not None:
        assert actual.dtype == dtype, f"dtype {actual.dtype} != {dtype}"
    if shape is not None:
        assert tuple(actual.shape) == tuple(shape), (
            f"shape {tuple(actual.shape)} != {tuple(shape)}"
        )
    expected_device = xp_device(xp)
    if expected_device is not None:
        assert str(array_api_compat.device(actual)).startswith(
            str(expected_device).split(":")[0]
        ), f"device {array_api_compat.device(actual)} != {expected_device}"


def xp_assert_close(
    actual: Array,
    desired: Any,
    *,
    xp: ModuleType,
    dtype: Any,
    rtol: float = 1e-12,
    atol: float = 0.0,
    shape: tuple[int, ...] | None = None,
) -> None:
    """Check namespace, dtype, shape and device of ``actual``, then its values.

    ``desired`` is a NumPy reference (usually float64); its shape is the
    expected shape unless ``shape`` is given. NaN must match NaN.
    """
    desired = np.asarray(desired)
    _check_meta(actual, xp, dtype, desired.shape if shape is None else shape)
    np.testing.assert_allclose(
        to_numpy(actual).astype(np.float64), desired.astype(np.float64), rtol=rtol, atol=atol
    )


def xp_assert_equal(actual: Array, desired: Any, *, xp: ModuleType, dtype: Any) -> None:
    """`xp_assert_close` with no tolerance."""
    xp_assert_close(actual, desired, xp=xp, dtype=dtype, rtol=0.0, atol=0.0)


def tolerance(dtype: Any) -> float:
    """The relative tolerance cosinekit promises for results of ``dtype``.

    A few units in the last place of the compute dtype: float64 1e-13,
    float32 1e-5 (the acceptance bar; typical errors are ~1e-7), float16 and
    bfloat16 one rounding of the result (1e-3 and 8e-3).
    """
    name = getattr(dtype, "__name__", None) or str(dtype).rsplit(".", 1)[-1]
    return {"float64": 1e-13, "float32": 1e-5, "float16": 1e-3, "bfloat16": 8e-3}[name]


def capabilities(*, shape: str | None = None, backend: str | None = None) -> list[str]:
    """Public functions from the package's capability table, filtered.

    ``shape`` is ``"fixed"`` or ``"values"`` (see ``Shape``); ``backend``
    keeps the functions that support that backend. Contract tests take
    their function lists from here, never from a list of their own.
    """
    return [
        name
        for name, found in CAPABILITIES.items()
        if (shape is None or found.shape.value == shape)
        and (backend is None or backend in found.backends)
    ]
