"""Pairwise results within 1.3x of their size, every variant, and the same values on every path.

The memory is measured with tracemalloc on NumPy (peak minus what existed
before the call). The values are checked against scikit-learn on every
backend, and under each transform (jax.jit/vmap/grad, torch autograd,
torch.compile, torch.func) for the variants that write the diagonal.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_distances, cosine_similarity

import cosinekit as ck
from _support import HAS_FLOAT16, asarray, numpy_matrix, to_numpy, tolerance, xp_assert_close

RNG = np.random.default_rng(11)

# name -> (call(x, y), scikit-learn reference(x, y)); y is None for the self variants.
VARIANTS: dict[str, tuple[Callable[[Any, Any], Any], Callable[[np.ndarray, Any], np.ndarray]]] = {
    "similarity, y=None": (
        lambda x, y: ck.pairwise_cosine_similarity(x),
        lambda x, y: _with_diagonal(cosine_similarity(x), _self_diagonal(x)),
    ),
    "similarity, y": (
        ck.pairwise_cosine_similarity,
        cosine_similarity,
    ),
    "similarity, zero_diagonal": (
        lambda x, y: ck.pairwise_cosine_similarity(x, zero_diagonal=True),
        lambda x, y: _with_diagonal(cosine_similarity(x), 0.0),
    ),
    "similarity, y, zero_diagonal": (
        lambda x, y: ck.pairwise_cosine_similarity(x, y, zero_diagonal=True),
        lambda x, y: _with_diagonal(cosine_similarity(x, y), 0.0),
    ),
    "distance, y=None": (
        lambda x, y: ck.pairwise_cosine_distance(x),
        lambda x, y: _with_diagonal(cosine_distances(x), 0.0),
    ),
    "distance, y": (
        ck.pairwise_cosine_distance,
        cosine_distances,
    ),
}


USES_Y = {"similarity, y", "similarity, y, zero_diagonal", "distance, y"}


def _self_diagonal(x: np.ndarray) -> np.ndarray:
    """1 for nonzero rows, 0 for zero rows."""
    return (np.abs(x).sum(-1) > 0).astype(np.float64)


def _with_diagonal(matrix: np.ndarray, values: Any) -> np.ndarray:
    matrix = matrix.copy()
    k = min(matrix.shape)
    index = np.arange(k)
    matrix[index, index] = values if np.ndim(values) == 0 else values[:k]
    return matrix


def _peak_ratio(call: Callable[[], Any]) -> float:
    """Peak of the allocations made by ``call`` over the size of its result."""
    call()  # first calls import and cache things once
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return peak / result.nbytes


@pytest.mark.backend_free  # NumPy arrays only: tracemalloc sees NumPy's allocations
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_numpy_peak_memory_within_1_3x_of_the_result(variant: str, dtype: str) -> None:
    x = RNG.standard_normal((2000, 64)).astype(dtype)
    y = RNG.standard_normal((2000, 64)).astype(dtype)
    call = VARIANTS[variant][0]
    ratio = _peak_ratio(lambda: call(x, y))
    assert ratio <= 1.3, f"{variant} {dtype}: peak {ratio:.3f}x the result"
    # Batches take the same path.
    batched = np.stack([x, x[::-1]]), np.stack([y, y[::-1]])
    ratio = _peak_ratio(lambda: call(*batched))
    assert ratio <= 1.3, f"{variant} {dtype} batched: peak {ratio:.3f}x the result"


def _data(n: int, m: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = RNG.standard_normal((n, d)), RNG.standard_normal((m, d))
    x[[1, 5]] = 0.0  # zero rows, also on the diagonal
    y[3] = 0.0
    return x, y


@pytest.mark.parametrize(
    ("variant", "dtype"),
    numpy_matrix(
        list(VARIANTS), ["float64", "float32", pytest.param("float16", marks=HAS_FLOAT16)]
    ),
)
def test_variant_values_match_sklearn(xp: ModuleType, variant: str, dtype: str) -> None:
    # 37 rows: half precision runs in blocks of 3 rows, the diagonal crosses them.
    x, y = _data(37, 29, 5)
    x, y = x.astype(dtype), y.astype(dtype)
    call, reference = VARIANTS[variant]
    expected = reference(x.astype(np.float64), y.astype(np.float64))
    got = call(asarray(xp, x), asarray(xp, y))
    rtol = tolerance(getattr(xp, dtype))
    xp_assert_close(got, expected, xp=xp, dtype=getattr(xp, dtype), rtol=rtol, atol=rtol)
    if "y=None" in variant or "zero_diagonal" in variant:
        # The diagonal is exact, not rounded.
        np.testing.assert_array_equal(np.diagonal(to_numpy(got)), np.diagonal(expected))


@pytest.mark.parametrize("variant", VARIANTS)
def test_inputs_not_modified_and_nan_rows(xp: ModuleType, variant: str) -> None:
    x, y = _data(7, 6, 3)
    x[2, 1], y[4, 0] = np.nan, np.inf
    a, b = asarray(xp, x), asarray(xp, y)
    got = to_numpy(VARIANTS[variant][0](a, b))
    np.testing.assert_array_equal(to_numpy(a), x)
    np.testing.assert_array_equal(to_numpy(b), y)
    columns = y if variant in USES_Y else x
    bad_rows, bad_columns = ~np.isfinite(x).all(-1), ~np.isfinite(columns).all(-1)
    expected_nan = bad_rows[:, None] | bad_columns[None, :]
    if "zero_diagonal" in variant:
        k = min(got.shape)
        expected_nan[np.arange(k), np.arange(k)] = False
    np.testing.assert_array_equal(np.isnan(got), expected_nan)


# -- transforms of the variants that set the diagonal -------------------------

SELF_VARIANTS = ["similarity, y=None", "similarity, zero_diagonal", "distance, y=None"]


@pytest.mark.backends("jax")
@pytest.mark.parametrize("variant", SELF_VARIANTS)
def test_jax_transforms(xp: ModuleType, variant: str) -> None:
    import jax

    call, reference = VARIANTS[variant]
    x, _ = _data(9, 9, 4)
    stacked = np.stack([x, x[::-1]])
    expected = np.stack([reference(x, None), reference(x[::-1], None)])
    got = jax.jit(jax.vmap(lambda a: call(a, None)))(asarray(xp, stacked))
    xp_assert_close(got, expected, xp=xp, dtype=xp.float64, rtol=0, atol=1e-14)
    # grad: the weighted sum of the matrix, against torch's autograd as reference.
    torch = pytest.importorskip("torch", reason="torch is the gradient reference")
    weights = RNG.standard_normal((9, 9))
    grad = jax.grad(lambda a: (call(a, None) * weights).sum())(asarray(xp, x))
    np.testing.assert_allclose(
        np.asarray(grad), _torch_reference_grad(torch, variant, x, weights), atol=1e-12
    )


def _torch_reference_grad(torch: Any, variant: str, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The gradient of ``sum(w * matrix)`` from plain torch ops: normalize, matmul, fill."""
    t = torch.tensor(x, requires_grad=True)
    unit = torch.nn.functional.normalize(t, dim=-1, eps=1e-300)
    matrix = unit @ unit.T
    if variant.startswith("distance"):
        matrix = 1 - matrix
    eye = torch.eye(x.shape[0], dtype=torch.bool)
    matrix = matrix.masked_fill(eye, 0.0)  # diagonal entries are constants
    (matrix * torch.tensor(w)).sum().backward()
    # normalize's gradient at a zero row is 1/eps; the contract's is the subgradient 0.
    return np.where(_self_diagonal(x)[:, None] == 0, 0.0, t.grad.numpy())


@pytest.mark.backends("torch")
@pytest.mark.parametrize("variant", SELF_VARIANTS)
def test_torch_paths(variant: str) -> None:
    import torch

    call, reference = VARIANTS[variant]
    x, _ = _data(9, 9, 4)
    expected = reference(x, None)
    weights = RNG.standard_normal((9, 9))
    # Autograd (functional diagonal), then no_grad and inference (in place).
    t = torch.tensor(x, requires_grad=True)
    out = call(t, None)
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-14)
    (out * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(
        t.grad.numpy(), _torch_reference_grad(torch, variant, x, weights), atol=1e-12
    )
    with torch.no_grad():
        np.testing.assert_allclose(call(t, None).numpy(), expected, atol=1e-14)
    with torch.inference_mode():
        np.testing.assert_allclose(call(torch.tensor(x), None).numpy(), expected, atol=1e-14)
    compiled = torch.compile(lambda a: call(a, None), fullgraph=True, backend="eager")
    np.testing.assert_allclose(compiled(torch.tensor(x)).numpy(), expected, atol=1e-14)
    stacked = torch.tensor(np.stack([x, x[::-1]]))
    batched = torch.func.vmap(lambda a: call(a, None))(stacked)
    np.testing.assert_allclose(batched[1].numpy(), reference(x[::-1], None), atol=1e-14)
    grad = torch.func.grad(lambda a: (call(a, None) * torch.tensor(weights)).sum())(
        torch.tensor(x)
    )
    np.testing.assert_allclose(
        grad.numpy(), _torch_reference_grad(torch, variant, x, weights), atol=1e-12
    )


@pytest.mark.backends("dask")
def test_dask_self_variants_stay_lazy(xp: ModuleType) -> None:
    import dask

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("computed while building the graph")

    x, _ = _data(9, 9, 4)
    with dask.config.set(scheduler=refuse):
        lazy = {name: VARIANTS[name][0](asarray(xp, x), None) for name in SELF_VARIANTS}
    for name, result in lazy.items():
        np.testing.assert_allclose(result.compute(), VARIANTS[name][1](x, None), atol=1e-14)
