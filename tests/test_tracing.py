"""Every public function under jax.jit/grad/vmap, torch.compile, torch.func and lazy Dask.

Values are checked against float64 NumPy formulas written here, and
derivatives against central finite differences of those formulas, so a
transform that silently changes a result fails. The inputs hold an ordinary
row, a zero row and a row of magnitude 1e-200 (whose squares underflow), so
the zero-vector handling and the rescaled path run under every transform.

``torch.compile`` runs with ``fullgraph=True`` for every function: a graph
break (a Python ``if`` on a value, a ``.item()``, a data-dependent shape)
is an error there, not a silent fallback.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import Backend, asarray, to_numpy

Array = Any
TOL = {"rtol": 1e-12, "atol": 1e-13}
MARGIN = 0.1
K = 2


def _rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows (zero rows stay zero) and norms, rescaled so nothing underflows."""
    scale = np.max(np.abs(x), axis=-1, keepdims=True)
    scaled = np.divide(x, scale, out=np.zeros_like(x), where=scale != 0)
    norm = np.linalg.norm(scaled, axis=-1, keepdims=True)
    return np.divide(scaled, norm, out=np.zeros_like(x), where=norm != 0), scale * norm


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(_rows(a)[0] * _rows(b)[0], axis=-1)


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    zero = (_rows(a)[1][..., 0] == 0) | (_rows(b)[1][..., 0] == 0)
    return np.where(zero, 0.5, np.arccos(np.clip(_cos(a, b), -1, 1)) / np.pi)


def _embedding(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    c = _cos(a, b)
    return np.mean(np.where(t == 1, 1 - c, np.where(t == -1, np.maximum(c - MARGIN, 0), 0)))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _rows(a)[0] @ np.swapaxes(_rows(b)[0], -1, -2)


def _topk(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = _pairwise(a, b)
    order = np.argsort(-sims, axis=-1, kind="stable")[..., :K]  # ties: smaller index
    return np.take_along_axis(sims, order, axis=-1), order


# name -> (call on arrays (a, b, target), float64 NumPy reference)
CASES: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "cosine_similarity": (lambda a, b, t: ck.cosine_similarity(a, b), lambda a, b, t: _cos(a, b)),
    "cosine_distance": (lambda a, b, t: ck.cosine_distance(a, b), lambda a, b, t: 1 - _cos(a, b)),
    "angular_distance": (lambda a, b, t: ck.angular_distance(a, b), lambda a, b, t: _angle(a, b)),
    "l2_normalize": (lambda a, b, t: ck.l2_normalize(a), lambda a, b, t: _rows(a)[0]),
    "cosine_distance_loss": (
        lambda a, b, t: ck.cosine_distance_loss(a, b),
        lambda a, b, t: np.mean(1 - _cos(a, b)),
    ),
    "cosine_embedding_loss": (
        lambda a, b, t: ck.cosine_embedding_loss(a, b, t, margin=MARGIN),
        _embedding,
    ),
    "pairwise_cosine_similarity": (
        lambda a, b, t: ck.pairwise_cosine_similarity(a, b),
        lambda a, b, t: _pairwise(a, b),
    ),
    "pairwise_cosine_distance": (
        lambda a, b, t: ck.pairwise_cosine_distance(a, b),
        lambda a, b, t: np.clip(1 - _pairwise(a, b), 0, 2),
    ),
    "cosine_topk": (lambda a, b, t: ck.cosine_topk(a, b, K), lambda a, b, t: _topk(a, b)),
}


def _inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((4, 5))
    a[1] = 0.0
    a[2] *= 1e-200
    b = rng.standard_normal((4, 5))
    target = np.array([1.0, -1.0, -1.0, 1.0])
    return a, b, target


def _direction(a: np.ndarray) -> np.ndarray:
    """A perturbation of the ordinary rows only (finite differences are
    meaningless at the zero row, where the gradient is the subgradient 0, and
    at the 1e-200 row, which a step of 1e-6 would swamp)."""
    v = np.random.default_rng(1).standard_normal(a.shape)
    v[1:3] = 0.0
    return v


def _case(name: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    if not hasattr(ck, name):
        pytest.skip(f"cosinekit.{name} is not implemented yet")
    return CASES[name]


def _outputs(result: Any) -> tuple[Any, ...]:
    return result if isinstance(result, tuple) else (result,)


def _check(result: Any, expected: Any) -> None:
    for actual, desired in zip(_outputs(result), _outputs(expected), strict=True):
        np.testing.assert_allclose(to_numpy(actual), desired, **TOL)


def _scalar(xp: ModuleType, result: Any) -> Array:
    """The sum of the (first) output, to differentiate."""
    return xp.sum(_outputs(result)[0])


def _check_directional(grad: np.ndarray, ref: Callable[..., Any], a, b, t) -> None:
    v = _direction(a)
    h = 1e-6

    def total(x: np.ndarray) -> float:
        return float(np.sum(_outputs(ref(x, b, t))[0]))

    expected = (total(a + h * v) - total(a - h * v)) / (2 * h)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(np.sum(grad * v), expected, rtol=1e-6, atol=1e-8)


def _stacked() -> tuple[tuple[np.ndarray, ...], Callable[[Callable[..., Any]], Any]]:
    """Two input sets stacked on a new axis 0, and the stacked references."""
    first, second = _inputs(0), _inputs(2)
    stacked = tuple(np.stack(pair) for pair in zip(first, second, strict=True))

    def expected(ref: Callable[..., Any]) -> Any:
        one, two = _outputs(ref(*first)), _outputs(ref(*second))
        out = tuple(np.stack(pair) for pair in zip(one, two, strict=True))
        return out if len(out) > 1 else out[0]

    return stacked, expected


def _require(library: Backend, wanted: Backend) -> None:
    if library is not wanted:
        pytest.skip(f"a {wanted.value} transform")


# --- JAX -------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_jax_jit(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.JAX)
    import jax

    call, ref = _case(name)
    a, b, t = _inputs()
    result = jax.jit(call)(asarray(xp, a), asarray(xp, b), asarray(xp, t))
    _check(result, ref(a, b, t))


@pytest.mark.parametrize("name", CASES)
def test_jax_grad(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.JAX)
    import jax

    call, ref = _case(name)
    a, b, t = _inputs()
    grad = jax.jit(jax.grad(lambda x, y, z: _scalar(xp, call(x, y, z))))(
        asarray(xp, a), asarray(xp, b), asarray(xp, t)
    )
    _check_directional(np.asarray(grad), ref, a, b, t)


@pytest.mark.parametrize("name", CASES)
def test_jax_vmap(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.JAX)
    import jax

    call, ref = _case(name)
    stacked, expected = _stacked()
    result = jax.vmap(call)(*(asarray(xp, s) for s in stacked))
    _check(result, expected(ref))


# --- PyTorch ---------------------------------------------------------------

# Dynamo warns when it traces through array-api-compat's lru_cache-wrapped
# type checks (``is_array_api_obj``); the warning is about that dependency's
# cache, not about a result, and is reported upstream of these tests.
DYNAMO_LRU_CACHE = pytest.mark.filterwarnings(
    "ignore:Dynamo detected a call to a `functools.lru_cache`-wrapped function:UserWarning"
)


@DYNAMO_LRU_CACHE
@pytest.mark.parametrize("name", CASES)
def test_torch_compile_fullgraph(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.TORCH)
    import torch

    call, ref = _case(name)
    a, b, t = _inputs()
    torch._dynamo.reset()
    compiled = torch.compile(call, fullgraph=True, backend="eager", dynamic=False)
    result = compiled(asarray(xp, a), asarray(xp, b), asarray(xp, t))
    _check(result, ref(a, b, t))


@DYNAMO_LRU_CACHE
@pytest.mark.parametrize("name", CASES)
def test_torch_compile_backward(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.TORCH)
    import torch

    call, ref = _case(name)
    a, b, t = _inputs()
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x, y, z: _scalar(xp, call(x, y, z)), fullgraph=True, backend="aot_eager"
    )
    x = asarray(xp, a).requires_grad_(True)
    compiled(x, asarray(xp, b), asarray(xp, t)).backward()
    _check_directional(x.grad.numpy(), ref, a, b, t)


FIRST_CALL_COMPILED = """
import numpy as np, torch, cosinekit as ck
a = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
b = torch.tensor([[4.0, 3.0], [0.0, 2.0]], dtype=torch.float64)
compiled = torch.compile({call}, fullgraph=True, backend="eager")
print(float(compiled(a, b)))
"""


@DYNAMO_LRU_CACHE
@pytest.mark.parametrize(
    ("call", "expected"),
    [
        # (24/25 + 0) / 2 by hand; the InfoNCE value is torch's cross_entropy below.
        ("lambda x, y: ck.cosine_similarity(x, y).mean()", 0.48),
        ("lambda x, y: ck.info_nce_loss(x, y, temperature=0.5)", None),
    ],
)
def test_torch_compile_as_the_first_call_of_a_process(
    xp: ModuleType, library: Backend, call: str, expected: float | None
) -> None:
    # cosinekit's type caches are empty in a new process; filling them while
    # Dynamo traces made fullgraph=True fail (it cannot replay the write).
    _require(library, Backend.TORCH)
    import torch

    if expected is None:
        a = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
        b = torch.tensor([[4.0, 3.0], [0.0, 2.0]], dtype=torch.float64)
        functional = torch.nn.functional
        logits = functional.normalize(a, dim=1) @ functional.normalize(b, dim=1).T
        expected = float(functional.cross_entropy(logits / 0.5, torch.arange(2)))
    completed = subprocess.run(
        [sys.executable, "-c", FIRST_CALL_COMPILED.format(call=call)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert float(completed.stdout.split()[-1]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_torch_func_grad(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.TORCH)
    import torch

    call, ref = _case(name)
    a, b, t = _inputs()
    grad = torch.func.grad(lambda x: _scalar(xp, call(x, asarray(xp, b), asarray(xp, t))))(
        asarray(xp, a)
    )
    _check_directional(grad.numpy(), ref, a, b, t)


@pytest.mark.parametrize("name", CASES)
def test_torch_func_vmap(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.TORCH)
    import torch

    call, ref = _case(name)
    stacked, expected = _stacked()
    result = torch.func.vmap(call)(*(asarray(xp, s) for s in stacked))
    _check(result, expected(ref))


# --- Dask ------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_dask_stays_lazy(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.DASK)
    import dask
    import dask.array as da

    call, ref = _case(name)
    a, b, t = _inputs()
    computes: list[int] = []

    def counting_scheduler(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        computes.append(1)
        return dask.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=counting_scheduler):
        result = call(asarray(xp, a), asarray(xp, b), asarray(xp, t))
        assert len(computes) == 0, "building the result computed the graph"
        assert all(isinstance(r, da.Array) for r in _outputs(result))
        values = dask.compute(*_outputs(result))
        assert len(computes) == 1
    _check(values if len(values) > 1 else values[0], ref(a, b, t))
