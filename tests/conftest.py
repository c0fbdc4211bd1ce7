"""One ``xp`` fixture for every backend, selected by ``COSINEKIT_BACKENDS``.

``COSINEKIT_BACKENDS`` is a comma-separated list of `Backend` values (nox
sets it, one session per backend). Unset, every backend runs whose library
imports, and the others are skipped with the reason. A backend named
explicitly must import: if it cannot, the run fails. ``COSINEKIT_DEVICE``
(``cpu`` by default, or ``cuda``) puts PyTorch and JAX arrays on that device;
without a GPU the GPU backends skip, saying so.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import pytest

from _support import Backend, gpu_available, set_backend_device

BACKENDS_ENV = "COSINEKIT_BACKENDS"
DEVICE_ENV = "COSINEKIT_DEVICE"


def _requested() -> set[Backend] | None:
    raw = os.environ.get(BACKENDS_ENV, "").strip()
    if not raw:
        return None
    try:
        return {Backend(name.strip()) for name in raw.split(",") if name.strip()}
    except ValueError as exc:
        valid = ", ".join(b.value for b in Backend)
        msg = f"{BACKENDS_ENV}={raw!r}: {exc}; valid names: {valid}"
        raise pytest.UsageError(msg) from exc


def pytest_configure(config: pytest.Config) -> None:
    requested = _requested()
    for backend in requested or ():
        try:
            importlib.import_module(backend.module)
        except ImportError as exc:
            msg = f"{backend.value!r} is requested in {BACKENDS_ENV} but fails to import: {exc}"
            raise pytest.UsageError(msg) from exc
    config.addinivalue_line("markers", "slow: long-running test (distributed cluster)")


def _selected() -> list[Backend]:
    requested = _requested()
    return [b for b in Backend if requested is None or b in requested]


@pytest.fixture(params=_selected(), ids=lambda b: b.value)
def library(request: pytest.FixtureRequest) -> Iterator[Backend]:
    backend: Backend = request.param
    if _requested() is None:
        pytest.importorskip(backend.module, reason=f"{backend.module} is not installed")
    device = os.environ.get(DEVICE_ENV, "cpu")
    if (backend is Backend.CUPY or device != "cpu") and not gpu_available():
        pytest.skip(f"{backend.value} on {device!r} needs an NVIDIA GPU and none is present")
    with set_backend_device(backend, device):
        yield backend


@pytest.fixture
def xp(library: Backend) -> ModuleType:
    """The array namespace of the backend under test."""
    return library.namespace()
