"""Test support: the backends, converting arrays, and the shared assertions.

The assertions follow SciPy's ``xp_assert_close``: besides the values they
check that the result has the expected namespace, dtype, shape and device,
so that no test can pass with a result silently converted to NumPy.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import itertools
import shutil
import subprocess
from collections.abc import Callable, Hashable, Iterator, Sequence
from types import ModuleType
from typing import Any

import array_api_compat
import hypothesis
import numpy as np
import pytest

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


# -- value matrices: every case on NumPy, representatives elsewhere -----------

NUMPY_ONLY = pytest.mark.backends("numpy")
# Half precision in the namespaces under test: array-api-strict's and Dask's
# (array-api-compat's) have no float16, only PyTorch and JAX a bfloat16.
HAS_FLOAT16 = pytest.mark.backends("numpy", "torch", "jax", "cupy")
HAS_BFLOAT16 = pytest.mark.backends("torch", "jax")


def representatives(cases: Sequence[Any], *keys: Callable[[Any], Hashable]) -> set[int]:
    """Indices of a few ``cases`` that together show every value of every key.

    Greedy and deterministic: the case showing the most values not yet shown
    (the first one on ties), until every ``key(case)`` value has been shown.
    """

    def shows(index: int) -> set[tuple[int, Hashable]]:
        return {(k, key(cases[index])) for k, key in enumerate(keys)}

    wanted = set().union(*(shows(i) for i in range(len(cases))))
    chosen: set[int] = set()
    while wanted:
        best = max(range(len(cases)), key=lambda i: len(shows(i) & wanted))
        chosen.add(best)
        wanted -= shows(best)
    return chosen


def numpy_full(
    cases: Sequence[Any], *keys: Callable[[Any], Hashable], ids: Callable[[Any], str]
) -> list[Any]:
    """``cases`` for ``parametrize``: all of them on NumPy, representatives elsewhere.

    The other backends run the cases `representatives` picks by ``keys``
    (each value of each key once); the rest are marked `NUMPY_ONLY`. A
    backend's own code is what differs between backends, and it sees every
    value of every dimension; the full matrix of combinations exercises
    backend-free code, which the NumPy sessions run.
    """
    chosen = representatives(cases, *keys)
    return [
        pytest.param(case, id=ids(case), marks=() if i in chosen else NUMPY_ONLY)
        for i, case in enumerate(cases)
    ]


def _id(value: Any, index: int) -> str:
    if value is None or isinstance(value, (str, int, float, bool)):
        return str(value)
    return str(index)


def numpy_matrix(*dimensions: Sequence[Any]) -> list[Any]:
    """Every combination of ``dimensions`` on NumPy; elsewhere each value once.

    For ``parametrize`` with one argument name per dimension. A value may be
    a ``pytest.param(value, marks=...)`` (a dtype that some backends lack,
    say): its marks go to each combination using it, and such a value gets
    representatives of its own, so that every backend that can run it does.
    """
    unpacked = [
        [
            (value.values[0], list(value.marks), value.id or _id(value.values[0], i))
            if isinstance(value, type(pytest.param(None)))
            else (value, [], _id(value, i))
            for i, value in enumerate(dimension)
        ]
        for dimension in dimensions
    ]
    combos = list(itertools.product(*unpacked))
    marked = [tuple(k for k, part in enumerate(combo) if part[1]) for combo in combos]
    chosen: set[int] = set()
    for group in set(marked):
        members = [i for i, m in enumerate(marked) if m == group]
        # Unmarked values: every value of every dimension. Marked ones: each
        # marked value once (the unmarked group shows the other dimensions).
        shown = group or tuple(range(len(dimensions)))
        keys = [lambda i, k=k: combos[i][k][2] for k in shown]
        chosen |= {members[j] for j in representatives(members, *keys)}
    params = []
    for i, combo in enumerate(combos):
        marks = [mark for part in combo for mark in part[1]]
        if i not in chosen:
            marks.append(NUMPY_ONLY)
        values = [part[0] for part in combo]
        params.append(pytest.param(*values, marks=marks, id="-".join(part[2] for part in combo)))
    return params


# -- Hypothesis: the full budget on NumPy, fewer examples elsewhere ----------


def property_settings(library: Backend, max_examples: int) -> hypothesis.settings:
    """Settings for a property test on ``library``: ``max_examples`` on NumPy.

    A property holds the same on every backend, and NumPy, where an example
    costs microseconds, draws the full budget. The other backends draw a
    third of it, JAX and Dask a sixth (at least 5 everywhere): each example
    there pays per-call overheads, on JAX every new shape compiles each
    operation, and on Dask each example builds and runs a task graph.
    """
    share = {Backend.NUMPY: 1, Backend.JAX: 6, Backend.DASK: 6}.get(library, 3)
    examples = max(5, max_examples // share)
    return hypothesis.settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
    )


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
