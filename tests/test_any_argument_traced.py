"""Any argument traced: each array argument transformed in turn, the others concrete.

API.md promises that under ``jax.jit``, ``jax.grad``, ``jax.vmap``,
``torch.func`` and ``torch.compile`` any subset of the array arguments may
be traced while the others are constants (closed over, or not batched), and
that the result is the eager one. Here every public function, in every
array-argument position (``feature_weights``, ``weights`` and ``target``
included), runs under every transform of its backend with only that
argument traced:

* values (``jit``, ``vmap``, ``torch.compile``) must equal the eager call on
  concrete arrays;
* gradients (``grad``, ``jit(grad)``, ``value_and_grad``,
  ``torch.func.grad``, compiled backward, eager autograd) must equal the
  central finite difference of the eager function along a random direction.

The inputs hold an ordinary row, a zero row and a row of magnitude 1e-200,
so the zero-vector handling and the rescaled path run under every
transform. The directions leave those two rows alone: the derivative there
is the subgradient 0, and a step of 1e-6 would swamp the 1e-200 row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import Backend, asarray, to_numpy

Array = Any
VALUE_TOL = {"rtol": 1e-12, "atol": 1e-13}
K = 2
MARGIN = 0.1


@dataclass(frozen=True)
class Case:
    call: Callable[..., Any]  # of the array arguments, in order
    names: tuple[str, ...]  # the argument names, for the test ids
    differentiable: tuple[bool, ...]  # per argument: a gradient exists there


CASES: dict[str, Case] = {
    "l2_normalize": Case(ck.l2_normalize, ("x",), (True,)),
    "cosine_similarity": Case(
        lambda a, b, w: ck.cosine_similarity(a, b, feature_weights=w),
        ("x1", "x2", "feature_weights"),
        (True, True, True),
    ),
    "cosine_distance": Case(
        lambda a, b, w: ck.cosine_distance(a, b, feature_weights=w),
        ("x1", "x2", "feature_weights"),
        (True, True, True),
    ),
    "angular_distance": Case(
        lambda a, b, w: ck.angular_distance(a, b, feature_weights=w),
        ("x1", "x2", "feature_weights"),
        (True, True, True),
    ),
    "cosine_distance_loss": Case(
        lambda a, b, w: ck.cosine_distance_loss(a, b, weights=w),
        ("labels", "predictions", "weights"),
        (True, True, True),
    ),
    "cosine_embedding_loss": Case(
        lambda a, b, t: ck.cosine_embedding_loss(a, b, t, margin=MARGIN),
        ("x1", "x2", "target"),
        # target selects a branch: piecewise constant, no derivative to check.
        (True, True, False),
    ),
    "pairwise_cosine_similarity": Case(ck.pairwise_cosine_similarity, ("x", "y"), (True, True)),
    "pairwise_cosine_distance": Case(ck.pairwise_cosine_distance, ("x", "y"), (True, True)),
    "cosine_topk": Case(lambda q, k: ck.cosine_topk(q, k, K), ("queries", "keys"), (True, True)),
}

POSITIONS = [
    pytest.param(name, i, id=f"{name}-{arg}")
    for name, case in CASES.items()
    for i, arg in enumerate(case.names)
]

JAX_TRANSFORMS = ["jit", "grad", "jit_grad", "value_and_grad", "vmap"]
TORCH_TRANSFORMS = ["func_grad", "func_vmap", "compile", "autograd"]
TRANSFORMS = [pytest.param(Backend.JAX, t, id=f"jax.{t}") for t in JAX_TRANSFORMS] + [
    pytest.param(Backend.TORCH, t, id=f"torch.{t}") for t in TORCH_TRANSFORMS
]
GRADIENT_TRANSFORMS = {"grad", "jit_grad", "value_and_grad", "func_grad", "compile", "autograd"}


def _inputs(name: str, seed: int) -> list[np.ndarray]:
    """The float64 arguments of ``name``: 4 rows of 5 features (6 keys for top-k)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((4, 5))
    a[1] = 0.0
    a[2] *= 1e-200
    b = rng.standard_normal((6, 5) if name == "cosine_topk" else (4, 5))
    third = {
        "cosine_distance_loss": rng.uniform(0.5, 2.0, 4),
        "cosine_embedding_loss": np.array([1.0, -1.0, -1.0, 1.0]),
    }.get(name, rng.uniform(0.5, 2.0, 5))
    return [a, b, third][: len(CASES[name].names)]


def _direction(position: int, shape: tuple[int, ...]) -> np.ndarray:
    v = np.random.default_rng(7).standard_normal(shape)
    if position == 0:
        v[1:3] = 0.0  # the zero row and the 1e-200 row (see the module docstring)
    return v


def _first(result: Any) -> Any:
    return result[0] if isinstance(result, tuple) else result


def _outputs(result: Any) -> tuple[Any, ...]:
    return result if isinstance(result, tuple) else (result,)


def _bind(
    xp: ModuleType, name: str, position: int, values: list[np.ndarray]
) -> Callable[[Array], Any]:
    """``name`` as a function of argument ``position``, the others concrete constants."""
    case = CASES[name]
    constants = [asarray(xp, v) for v in values]

    def call(traced: Array) -> Any:
        arrays = list(constants)
        arrays[position] = traced
        return case.call(*arrays)

    return call


def _eager_total(xp: ModuleType, name: str, position: int, values: list[np.ndarray]) -> float:
    result = _bind(xp, name, position, values)(asarray(xp, values[position]))
    return float(np.sum(to_numpy(_first(result))))


def _finite_difference(
    xp: ModuleType, name: str, position: int, values: list[np.ndarray], v: np.ndarray
) -> float:
    h = 1e-6
    plus, minus = list(values), list(values)
    plus[position] = values[position] + h * v
    minus[position] = values[position] - h * v
    return (_eager_total(xp, name, position, plus) - _eager_total(xp, name, position, minus)) / (
        2 * h
    )


def _check_values(result: Any, expected: Any) -> None:
    for actual, desired in zip(_outputs(result), _outputs(expected), strict=True):
        np.testing.assert_allclose(to_numpy(actual), to_numpy(desired), **VALUE_TOL)


def _check_gradient(
    xp: ModuleType, name: str, position: int, values: list[np.ndarray], grad: np.ndarray
) -> None:
    v = _direction(position, values[position].shape)
    assert grad.shape == values[position].shape
    assert np.all(np.isfinite(grad)), grad
    expected = _finite_difference(xp, name, position, values, v)
    np.testing.assert_allclose(np.sum(grad * v), expected, rtol=1e-6, atol=1e-8)


def _gradient(
    xp: ModuleType, transform: str, call: Callable[[Array], Any], x: np.ndarray
) -> tuple[np.ndarray, Any]:
    """The gradient of ``sum(first output)`` under ``transform``, and the value if it has one."""
    if transform in {"grad", "jit_grad", "value_and_grad"}:
        import jax

        def total(t: Array) -> Array:
            return xp.sum(_first(call(t)))

        if transform == "value_and_grad":
            value, grad = jax.value_and_grad(total)(asarray(xp, x))
            return np.asarray(grad), value
        transformed = jax.grad(total)
        if transform == "jit_grad":
            transformed = jax.jit(transformed)
        return np.asarray(transformed(asarray(xp, x))), None
    import torch

    if transform == "func_grad":
        grad = torch.func.grad(lambda t: torch.sum(_first(call(t))))(asarray(xp, x))
        return grad.numpy(), None
    tensor = asarray(xp, x).requires_grad_(True)
    if transform == "compile":
        torch._dynamo.reset()
        compiled = torch.compile(
            lambda t: _first(call(t)), fullgraph=True, backend="aot_eager", dynamic=False
        )
        value = compiled(tensor)
    else:
        value = _first(call(tensor))
    torch.sum(value).backward()
    return tensor.grad.numpy(), value


@pytest.mark.filterwarnings(
    "ignore:Dynamo detected a call to a `functools.lru_cache`-wrapped function:UserWarning"
)
@pytest.mark.parametrize(("backend", "transform"), TRANSFORMS)
@pytest.mark.parametrize(("name", "position"), POSITIONS)
def test_one_argument_traced(
    xp: ModuleType,
    library: Backend,
    backend: Backend,
    transform: str,
    name: str,
    position: int,
) -> None:
    if library is not backend:
        pytest.skip(f"a {backend.value} transform; the backend under test is {library.value}")
    values = _inputs(name, 0)
    call = _bind(xp, name, position, values)
    eager = call(asarray(xp, values[position]))

    if transform in GRADIENT_TRANSFORMS:
        if not CASES[name].differentiable[position]:
            pytest.skip(f"{CASES[name].names[position]} of {name} has no derivative")
        grad, value = _gradient(xp, transform, call, values[position])
        _check_gradient(xp, name, position, values, grad)
        if transform == "value_and_grad":
            _check_values(value, np.asarray(np.sum(to_numpy(_first(eager)))))
        elif value is not None:
            _check_values(value, _first(eager))
        return

    if transform == "jit":
        import jax

        _check_values(jax.jit(call)(asarray(xp, values[position])), eager)
        return

    # vmap: the argument batched on a new axis 0, the others unbatched.
    second = _inputs(name, 2)[position]
    stacked = asarray(xp, np.stack([values[position], second]))
    if transform == "vmap":
        import jax

        result = jax.vmap(call)(stacked)
    else:
        import torch

        result = torch.func.vmap(call)(stacked)
    for j, item in enumerate((values[position], second)):
        expected = call(asarray(xp, item))
        picked = tuple(out[j] for out in _outputs(result))
        _check_values(picked if len(picked) > 1 else picked[0], expected)
