"""The checks of the transform matrix (``test_transforms.py``): positions, references, binding.

A *position* is a row of `_calls.ROWS` with the names of the array
arguments traced; the others are concrete constants. Values are checked
against the row's float64 reference; gradients (of the sum of the floating
outputs) against its central finite differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import FunctionType, ModuleType
from typing import Any

import array_api_compat
import numpy as np
import pytest

from _calls import ROWS, Row
from _support import Backend, asarray, to_numpy
from cosinekit._lib._capabilities import Shape

Array = Any

#: Finite differences: the step is 1e-6 times the argument's magnitude.
FD_TOL = {"rtol": 1e-6, "atol": 1e-8}


def plain(row: Row) -> bool:
    """Whether ``row`` is its function's plain row (the first without a variant)."""
    rows = [r for r in ROWS if r.function == row.function]
    return row is next((r for r in rows if not r.variant), rows[0])


def positions(
    shape: Shape,
    backend: str,
    *,
    differentiable: bool = False,
    each: str = "row",
    variants: bool = True,
) -> list[Any]:
    """``(row, traced names)`` for each row of ``shape`` on ``backend``.

    Each array argument alone (``each="row"``: in every row; ``"plain"``: in
    each function's plain row only; ``"none"``), then all of them; with
    ``differentiable``, only positions with at least one gradient; without
    ``variants``, only each function's plain row.
    """
    params = []
    for row in ROWS:
        found = row.capabilities
        if found.shape is not shape or backend not in found.backends:
            continue
        if not variants and not plain(row):
            continue
        singles = each == "row" or (each == "plain" and plain(row)) or len(row.names) == 1
        sets = [(name,) for name in row.names] if singles else []
        if len(row.names) > 1:
            sets.append(row.names)
        for traced in sets:
            if differentiable and not row.differentiable(traced):
                continue
            label = "all" if len(traced) > 1 else traced[0]
            params.append(pytest.param(row, traced, id=f"{row.id}-{label}"))
    return params


def as_tuple(result: Any) -> tuple[Any, ...]:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def is_floating(x: Any) -> bool:
    return bool(np.issubdtype(np.asarray(x).dtype, np.floating))


def reference_total(row: Row, values: dict[str, np.ndarray]) -> float:
    return float(sum(np.sum(out) for out in as_tuple(row.reference(values)) if is_floating(out)))


def floating_sum(xp: ModuleType, result: Any) -> Array:
    """The sum of the floating outputs: the scalar whose gradient is checked."""
    floating = [out for out in as_tuple(result) if xp.isdtype(out.dtype, "real floating")]
    summed = xp.sum(floating[0])
    for out in floating[1:]:
        summed = summed + xp.sum(out)
    return summed


def check_values(xp: ModuleType, row: Row, result: Any, expected: Any) -> None:
    actual, desired = as_tuple(result), as_tuple(expected)
    assert len(actual) == len(desired)
    namespace = array_api_compat.array_namespace(xp.asarray(0))
    for got, wanted in zip(actual, desired, strict=True):
        want = np.asarray(wanted)
        assert array_api_compat.array_namespace(got) is namespace
        assert tuple(got.shape) == want.shape, (tuple(got.shape), want.shape)
        kind = "real floating" if is_floating(want) else "integral"
        assert xp.isdtype(got.dtype, kind), got.dtype
        if kind == "real floating":
            assert got.dtype == xp.float64, got.dtype
        np.testing.assert_allclose(to_numpy(got), want, rtol=row.rtol, atol=row.atol)


def direction(x: np.ndarray) -> np.ndarray:
    """A random direction that leaves zero rows and rows of 1e-200 alone."""
    v = np.random.default_rng(7).standard_normal(x.shape)
    if x.ndim >= 2:
        v[np.max(np.abs(x), axis=-1) < 1e-100] = 0.0
    return v


def check_gradient(row: Row, values: dict[str, np.ndarray], name: str, grad: Array) -> None:
    """``grad`` (of the sum of the floating outputs) against central differences."""
    grad = to_numpy(grad)
    assert grad.shape == values[name].shape, (name, grad.shape)
    assert np.all(np.isfinite(grad)), (name, grad)
    v = direction(values[name])
    h = 1e-6 * max(1.0, float(np.max(np.abs(values[name]))))

    def at(step: float) -> float:
        return reference_total(row, {**values, name: values[name] + step * v})

    expected = (at(h) - at(-h)) / (2 * h)
    np.testing.assert_allclose(np.sum(grad * v), expected, **FD_TOL, err_msg=name)


def bind(
    xp: ModuleType, row: Row, traced: Sequence[str], values: dict[str, np.ndarray]
) -> tuple[Callable[..., Any], list[Array]]:
    """``row`` as a function of the arguments ``traced`` (the others concrete), and those."""
    constants = {name: asarray(xp, value) for name, value in values.items()}
    invoke = row.caller()

    def call(*arrays: Array) -> Any:
        return invoke({**constants, **dict(zip(traced, arrays, strict=True))})

    return call, [constants[name] for name in traced]


def two_batches(
    row: Row, traced: Sequence[str]
) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """Two values of each traced argument stacked on a new axis 0, and each batch's inputs."""
    first, second = row.values(0), row.values(2)
    other = {**first, **{name: second[name] for name in traced}}
    return [np.stack([first[name], second[name]]) for name in traced], [first, other]


def stacked_reference(row: Row, batches: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, ...]:
    each = [as_tuple(row.reference(values)) for values in batches]
    return tuple(np.stack(outs) for outs in zip(*each, strict=True))


def on(backend: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a test on ``backend`` only: collected in its sessions, with its ``xp`` and device."""

    def mark(test: Callable[..., Any]) -> Callable[..., Any]:
        test = pytest.mark.parametrize(
            "library", [Backend(backend)], indirect=True, ids=[backend]
        )(test)
        return pytest.mark.backends(backend)(test)

    return mark


#: XLA options for the matrix's jit programs: the backend optimizations
#: are most of a compilation's time and change nothing that is traced.
XLA_QUICK = {"xla_backend_optimization_level": 0}


def compile_copy(function: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """``torch.compile`` of a copy of ``function`` with a code object of its own.

    Dynamo keeps its cache on the code object; closures of one ``def``
    share it, so after a few tests their guards would pile up to the
    recompile limit, past which Dynamo runs the frame uncompiled. A fresh
    code object starts with an empty cache: each compilation is this
    test's own, whatever ran before, with no ``torch._dynamo.reset()``.
    """
    import torch

    assert isinstance(function, FunctionType)
    copy = FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    return torch.compile(copy, **options)


def requiring_grad(arrays: list[Array], argnums: tuple[int, ...]) -> list[Array]:
    return [a.clone().requires_grad_(True) if i in argnums else a for i, a in enumerate(arrays)]
