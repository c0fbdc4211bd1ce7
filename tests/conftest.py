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
    config.addinivalue_line(
        "markers",
        "backends(*names): the test needs one of these backends; it is not collected "
        "in a session that tests none of them (no skip in the body), and a test taking "
        "the xp fixture runs on these backends only",
    )
    config.addinivalue_line(
        "markers",
        "backend_free: the test exercises no array backend of its own (a subprocess, the "
        "docs, the benchmarks); it runs once, in the session that sets "
        "COSINEKIT_BACKEND_FREE=1, or when COSINEKIT_BACKENDS is unset",
    )
    config.addinivalue_line(
        "markers",
        "gpu: the test needs a GPU; collected only where COSINEKIT_DEVICE=cuda (the GPU "
        "sessions), so that a CPU session neither runs nor skips it",
    )


BACKEND_FREE_ENV = "COSINEKIT_BACKEND_FREE"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out tests for backends this session does not test, and backend-free repeats.

    A test marked ``backends("torch")`` in the NumPy session would only
    skip: it is deselected instead, so that a session's count is what it
    tests. ``backend_free`` tests run in one session only.
    """
    requested = _requested()
    run_backend_free = requested is None or os.environ.get(BACKEND_FREE_ENV) == "1"
    on_gpu = os.environ.get(DEVICE_ENV, "cpu") != "cpu"
    kept, dropped = [], []
    for item in items:
        if (
            _wanted(item, requested)
            and (run_backend_free or not item.get_closest_marker("backend_free"))
            and (on_gpu or not item.get_closest_marker("gpu"))
        ):
            kept.append(item)
        else:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _wanted(item: pytest.Item, requested: set[Backend] | None) -> bool:
    """Whether ``item`` tests a backend its ``backends`` markers allow.

    Each ``backends`` marker (on the function, its class or module, or on
    one parameter set, as ``pytest.param(..., marks=...)``) narrows the
    backends: a session must test one of them, and an item parametrized by
    the ``library`` fixture must have one of them as its own.
    """
    wanted = set(Backend)
    for marker in item.iter_markers("backends"):
        wanted &= {Backend(name) for name in marker.args}
    if requested is not None and not wanted & requested:
        return False
    callspec = getattr(item, "callspec", None)
    library = callspec.params.get("library") if callspec is not None else None
    return library is None or library in wanted


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
