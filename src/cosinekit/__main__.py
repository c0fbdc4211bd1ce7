"""``python -m cosinekit``: the seed example on every installed backend.

Runs the TensorFlow tutorial's example (labels ``[[1, 4, 5], [5, 5, 7]]``,
predictions ``[[3, 2, 5], [3, 2, 7]]``, ``axis=1``, float32) through
`cosinekit.cosine_distance_loss` on NumPy and on every other installed
array library and device, prints a table, and exits with status 1 if any
backend disagrees with NumPy.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import cosinekit

LABELS = [[1.0, 4.0, 5.0], [5.0, 5.0, 7.0]]
PREDICTIONS = [[3.0, 2.0, 5.0], [3.0, 2.0, 7.0]]
TUTORIAL_LOSS = 0.077168673
RTOL = 1e-6

Maker = Callable[[list[list[float]]], Any]


def _numpy_makers() -> Iterator[tuple[str, str, str, Maker]]:
    yield "numpy", np.__version__, "cpu", lambda v: np.asarray(v, dtype=np.float32)


def _torch_maker(torch: Any, device: str) -> Maker:
    return lambda v: torch.tensor(v, dtype=torch.float32, device=device)


def _jax_maker(jax: Any, device: Any) -> Maker:
    return lambda v: jax.device_put(np.asarray(v, dtype=np.float32), device)


def _torch_makers() -> Iterator[tuple[str, str, str, Maker]]:
    torch = importlib.import_module("torch")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        yield (
            "torch",
            torch.__version__,
            device,
            _torch_maker(torch, device),
        )


def _jax_makers() -> Iterator[tuple[str, str, str, Maker]]:
    jax = importlib.import_module("jax")
    for device in jax.devices():
        yield (
            "jax",
            jax.__version__,
            str(device),
            _jax_maker(jax, device),
        )


def _cupy_makers() -> Iterator[tuple[str, str, str, Maker]]:
    cupy = importlib.import_module("cupy")
    cupy.cuda.runtime.getDeviceCount()  # raises without a usable GPU
    yield "cupy", cupy.__version__, "cuda", lambda v: cupy.asarray(v, dtype=cupy.float32)


def _dask_makers() -> Iterator[tuple[str, str, str, Maker]]:
    dask = importlib.import_module("dask")
    da = importlib.import_module("dask.array")
    yield (
        "dask",
        dask.__version__,
        "cpu (lazy)",
        (lambda v: da.from_array(np.asarray(v, dtype=np.float32), chunks=1)),
    )


def _strict_makers() -> Iterator[tuple[str, str, str, Maker]]:
    strict = importlib.import_module("array_api_strict")
    yield (
        "array_api_strict",
        strict.__version__,
        "CPU_DEVICE",
        (lambda v: strict.asarray(v, dtype=strict.float32)),
    )


def _to_float(value: Any) -> float:
    if hasattr(value, "compute"):
        value = value.compute()
    if hasattr(value, "get") and type(value).__module__.startswith("cupy"):
        value = value.get()
    if hasattr(value, "cpu"):
        value = value.cpu()
    return float(value)


def main() -> int:
    """Print the table; return the exit status."""
    rows: list[tuple[str, str, str, str, str]] = []
    reference: float | None = None
    failed = False
    for makers in (
        _numpy_makers,
        _torch_makers,
        _jax_makers,
        _cupy_makers,
        _dask_makers,
        _strict_makers,
    ):
        try:
            backends = list(makers())
        except Exception:
            continue
        for name, version, device, make in backends:
            try:
                loss = _to_float(
                    cosinekit.cosine_distance_loss(make(LABELS), make(PREDICTIONS), axis=1)
                )
            except Exception as exc:
                rows.append((name, version, device, f"error: {exc}", "NO"))
                failed = True
                continue
            if reference is None:
                reference = loss
            agrees = abs(loss - reference) <= RTOL * abs(reference)
            failed |= not agrees
            rows.append((name, version, device, f"{loss:.9f}", "yes" if agrees else "NO"))
    header = ("backend", "version", "device", "loss", "agrees with numpy")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"cosinekit {cosinekit.__version__}: the seed example, cosine_distance_loss(axis=1)")
    print(f"TensorFlow tutorial value: {TUTORIAL_LOSS}")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    if reference is None or abs(reference - TUTORIAL_LOSS) > RTOL * TUTORIAL_LOSS:
        print("FAIL: NumPy does not reproduce the tutorial value")
        return 1
    print("FAIL: a backend disagrees with NumPy" if failed else "OK: every backend agrees")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
