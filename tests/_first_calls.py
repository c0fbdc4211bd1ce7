"""Compiled calls that are the first cosinekit call of their process (issue 19).

cosinekit fills small caches on its first calls (array types, dtypes);
filling one while Dynamo traces made ``torch.compile(fullgraph=True)`` fail
when the compiled call came first. A first call needs a process whose
cosinekit has never run, so `main` (run as a script by
``test_first_call.py``) imports torch and cosinekit, warms Dynamo up on a
function of its own, and forks one child per case: each child meets
cosinekit as a new process does, without paying the imports and Dynamo's
start-up again. It prints one JSON object, case -> outputs (or the child's
traceback). The test compares them with `expected`, from the float64
references.

The cases: ``fullgraph=True`` on float inputs (``cosine_similarity``,
``info_nce_loss``, ``cosine_topk``) and on integer and boolean inputs (every
fixed-shape function, promoted to the default float dtype); a
value-dependent function without ``fullgraph`` (a graph break that runs
eagerly); ``dynamic=True, fullgraph=True`` on the losses with a default
temperature or scale (``info_nce_loss``, ``ntxent_loss``, ``cosent_loss``
and their ``cosinekit.torch`` modules). Each child costs about a second
of tracing, so the cases are few: one per function and kind.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import _references
from _calls import ROWS, Row
from cosinekit._lib._capabilities import CAPABILITIES, Shape

#: Children running at once.
PARALLEL = 2


@dataclass(frozen=True)
class Case:
    """``run(torch)`` in a fresh child gives the outputs; ``reference()`` the float64 ones."""

    run: Callable[[Any], Any]
    reference: Callable[[], Any]
    dtype: str  # of the floating outputs
    rtol: float


def _integer_and_bool(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The floating arrays of at least one dimension as integers and booleans, alternately.

    One compilation then meets both kinds of promotion to the default float
    dtype. Integers are three times the value, rounded (a target already
    integral is kept); booleans say whether the value is positive.
    """
    out, integer = dict(values), True
    for name, value in values.items():
        if value.ndim and np.issubdtype(value.dtype, np.floating):
            scaled = value if np.all(value == np.rint(value)) else 3 * value
            out[name] = np.rint(scaled).astype(np.int64) if integer else value > 0
            integer = not integer
    return out


def _as_float(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: v.astype(np.float64) if v.dtype == bool else v for n, v in values.items()}


def _row_case(row: Row, kind: str, **compile_options: Any) -> Case:
    values = row.values() if kind == "float" else _integer_and_bool(row.values())

    def run(torch: Any) -> Any:
        arrays = {name: torch.asarray(value) for name, value in values.items()}
        names = list(arrays)
        invoke = row.caller()

        def call(*traced: Any) -> Any:
            return invoke(dict(zip(names, traced, strict=True)))

        return torch.compile(call, backend="eager", **compile_options)(*arrays.values())

    def reference() -> Any:
        return row.reference(_as_float(values))

    float_case = kind == "float"
    return Case(
        run, reference, "float64" if float_case else "float32", 1e-11 if float_case else 2e-5
    )


def _first_row(name: str) -> Row:
    """The plain row of ``name`` (the first one if every row has a variant)."""
    rows = [row for row in ROWS if row.function == name]
    return next((row for row in rows if not row.variant), rows[0])


def _default_hyperparameter(name: str, module: str | None) -> Case:
    """The loss ``name`` (or its ``module``) compiled itself with ``dynamic=True,
    fullgraph=True``: its default temperature or scale (and ``axis``) are then
    symbolic numbers, as arguments of the compiled function."""
    row = _first_row(name)
    option = "scale" if name == "cosent_loss" else "temperature"
    values = {n: v for n, v in row.values().items() if n != option}

    def run(torch: Any) -> Any:
        import cosinekit.torch as ck_torch

        function = getattr(ck_torch, module)() if module is not None else row.public
        arrays = [torch.asarray(v) for v in values.values()]
        return torch.compile(function, backend="eager", dynamic=True, fullgraph=True)(*arrays)

    def reference() -> Any:
        default = {"info_nce_loss": 0.05, "ntxent_loss": 0.07, "cosent_loss": 20.0}[name]
        return getattr(_references, name)(*values.values(), **{option: default})

    return Case(run, reference, "float64", 1e-11)


def _cases() -> dict[str, Case]:
    cases = {
        f"fullgraph-float-{name}": _row_case(_first_row(name), "float", fullgraph=True)
        for name in ("cosine_similarity", "info_nce_loss", "cosine_topk")
    }
    for name, found in CAPABILITIES.items():
        if found.shape is Shape.FIXED and "torch" in found.backends:
            row = _first_row(name)
            cases[f"fullgraph-integer-bool-{name}"] = _row_case(row, "integer", fullgraph=True)
        elif "torch" in found.backends:
            cases[f"graph-break-float-{name}"] = _row_case(_first_row(name), "float")
    modules = {
        "info_nce_loss": "InfoNCELoss",
        "ntxent_loss": "NTXentLoss",
        "cosent_loss": "CoSENTLoss",
    }
    for name, module in modules.items():
        cases[f"dynamic-default-{name}"] = _default_hyperparameter(name, None)
        cases[f"dynamic-module-{module}"] = _default_hyperparameter(name, module)
    return cases


CASES = _cases()


def expected(name: str) -> tuple[np.ndarray, ...]:
    result = CASES[name].reference()
    return tuple(np.asarray(out) for out in (result if isinstance(result, tuple) else (result,)))


def _child(name: str, path: str) -> None:
    import time

    import torch

    start = time.perf_counter()
    try:
        result = CASES[name].run(torch)
        outputs = result if isinstance(result, tuple) else (result,)
        payload: dict[str, Any] = {
            "outputs": [out.detach().tolist() for out in outputs],
            "dtypes": [str(out.dtype).removeprefix("torch.") for out in outputs],
            "seconds": time.perf_counter() - start,
        }
    except BaseException:
        payload = {"error": traceback.format_exc()}
    with open(path, "w") as file:
        json.dump(payload, file)


def main() -> None:
    import torch

    import cosinekit  # noqa: F401 - imported, never called, before the forks

    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    # Dynamo's own start-up, paid once here: no cosinekit code runs.
    for dynamic in (False, True):
        torch.compile(lambda x: torch.sin(x).sum() * 2.0, backend="eager", dynamic=dynamic)(
            torch.ones(3, dtype=torch.float64)
        )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        pending, running = sorted(sys.argv[1:] or CASES), {}
        while pending or running:
            while pending and len(running) < PARALLEL:
                name = pending.pop()
                path = os.path.join(folder, f"{len(pending)}.json")
                pid = os.fork()
                if pid == 0:  # the child: one case, then out without cleanup
                    try:
                        _child(name, path)
                    finally:
                        os._exit(0)
                running[pid] = (name, path)
            pid, status = os.wait()
            name, path = running.pop(pid)
            try:
                with open(path) as file:
                    results[name] = json.load(file)
            except (OSError, ValueError):
                results[name] = {"error": f"the child exited with status {status}, no result"}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
