"""pairwise_cosine_similarity and pairwise_cosine_distance against scikit-learn and PyTorch."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics.pairwise import cosine_distances, cosine_similarity

import cosinekit as ck
from _support import (
    HAS_FLOAT16,
    Backend,
    asarray,
    property_settings,
    to_numpy,
    tolerance,
    xp_assert_close,
    xp_assert_equal,
)

RNG = np.random.default_rng(20240604)


def _rows(n: int, d: int, zero_rows: tuple[int, ...] = ()) -> np.ndarray:
    x = RNG.standard_normal((n, d))
    x[list(zero_rows)] = 0.0
    return x


X = _rows(6, 4, zero_rows=(2,))
Y = _rows(5, 4, zero_rows=(0, 4))


def test_similarity_matches_sklearn(xp: ModuleType) -> None:
    result = ck.pairwise_cosine_similarity(asarray(xp, X), asarray(xp, Y))
    xp_assert_close(result, cosine_similarity(X, Y), xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


def test_distance_matches_sklearn(xp: ModuleType) -> None:
    result = ck.pairwise_cosine_distance(asarray(xp, X), asarray(xp, Y))
    xp_assert_close(result, cosine_distances(X, Y), xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


def test_self_similarity_matches_sklearn_with_exact_diagonal(xp: ModuleType) -> None:
    result = ck.pairwise_cosine_similarity(asarray(xp, X))
    xp_assert_close(result, cosine_similarity(X), xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)
    # Exactly 1 for nonzero rows and exactly 0 for the zero row 2.
    expected_diagonal = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(np.diagonal(to_numpy(result)), expected_diagonal)


def test_self_distance_matches_sklearn_with_exact_zero_diagonal(xp: ModuleType) -> None:
    result = ck.pairwise_cosine_distance(asarray(xp, X))
    expected = cosine_distances(X)
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)
    # scikit-learn sets the whole diagonal to 0, the zero row's too.
    np.testing.assert_array_equal(np.diagonal(to_numpy(result)), np.zeros(6))
    np.testing.assert_array_equal(np.diagonal(expected), np.zeros(6))


def test_diagonal_exactly_one_where_rounding_would_miss_it(xp: ModuleType) -> None:
    # Values with long mantissas: the computed u . u is not always exactly 1.
    # Powers of two scale exactly (scikit-learn itself treats norms below
    # 10 * eps as zero, so it gets the unscaled rows).
    x = RNG.standard_normal((40, 7))
    scaled = x * 2.0 ** RNG.integers(-100, 100, size=(40, 1))
    result = to_numpy(ck.pairwise_cosine_similarity(asarray(xp, scaled)))
    np.testing.assert_array_equal(np.diagonal(result), np.ones(40))
    np.testing.assert_allclose(result, cosine_similarity(x), rtol=0, atol=1e-14)


def test_zero_diagonal(xp: ModuleType) -> None:
    result = ck.pairwise_cosine_similarity(asarray(xp, X), zero_diagonal=True)
    expected = cosine_similarity(X)
    np.fill_diagonal(expected, 0.0)
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(np.diagonal(to_numpy(result)), np.zeros(6))


def test_zero_diagonal_with_y_zeroes_equal_positions(xp: ModuleType) -> None:
    result = ck.pairwise_cosine_similarity(asarray(xp, X), asarray(xp, Y), zero_diagonal=True)
    expected = cosine_similarity(X, Y)
    np.fill_diagonal(expected, 0.0)  # the (6, 5) block's i == j entries
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


def test_matches_torch_broadcast_cosine_similarity(xp: ModuleType) -> None:
    torch = pytest.importorskip("torch")
    x, y = _rows(4, 3), _rows(3, 3)
    expected = torch.nn.functional.cosine_similarity(
        torch.from_numpy(x)[:, None, :], torch.from_numpy(y)[None, :, :], dim=-1
    ).numpy()
    result = ck.pairwise_cosine_similarity(asarray(xp, x), asarray(xp, y))
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


def test_leading_dimensions_broadcast_like_a_loop(xp: ModuleType) -> None:
    x = RNG.standard_normal((2, 1, 4, 3))
    y = RNG.standard_normal((3, 5, 3))
    x[1, 0, 2] = 0.0
    expected = np.empty((2, 3, 4, 5))
    for i in range(2):
        for j in range(3):
            expected[i, j] = cosine_similarity(x[i, 0], y[j])
    result = ck.pairwise_cosine_similarity(asarray(xp, x), asarray(xp, y))
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


def test_batched_self_similarity_diagonal(xp: ModuleType) -> None:
    x = RNG.standard_normal((3, 4, 2))
    x[1, 3] = 0.0
    expected = np.stack([cosine_similarity(batch) for batch in x])
    for batch in range(3):
        np.fill_diagonal(expected[batch], 1.0)
    expected[1, 3, 3] = 0.0
    result = ck.pairwise_cosine_similarity(asarray(xp, x))
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)
    diagonals = np.diagonal(to_numpy(result), axis1=-2, axis2=-1)
    np.testing.assert_array_equal(diagonals, np.diagonal(expected, axis1=-2, axis2=-1))


def test_scale_invariant_at_extreme_magnitudes(xp: ModuleType) -> None:
    x = _rows(4, 3)
    y = _rows(3, 3)
    # Powers of two scale exactly, so the scaled rows have the same cosines.
    scaled_x = x * np.array([[2.0**1000], [2.0**-990], [1.0], [2.0**-1000]])
    scaled_y = y * np.array([[2.0**-1000], [2.0**1020], [2.0**500]])
    result = ck.pairwise_cosine_similarity(asarray(xp, scaled_x), asarray(xp, scaled_y))
    xp_assert_close(result, cosine_similarity(x, y), xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


def test_eps_clamps_each_norm(xp: ModuleType) -> None:
    x = np.array([[3e-3, 4e-3], [1.0, 0.0]])
    y = np.array([[0.0, 2e-3], [1.0, 1.0]])
    eps = 1e-2
    norm_x = np.maximum(np.linalg.norm(x, axis=1), eps)
    norm_y = np.maximum(np.linalg.norm(y, axis=1), eps)
    expected = (x @ y.T) / (norm_x[:, None] * norm_y[None, :])
    result = ck.pairwise_cosine_similarity(asarray(xp, x), asarray(xp, y), eps=eps)
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=1e-14)


def test_nan_and_inf_rows_give_nan(xp: ModuleType) -> None:
    x = np.array([[1.0, 0.0], [np.nan, 1.0], [np.inf, 0.0]])
    expected = np.array(
        [[1.0, np.nan, np.nan], [np.nan, np.nan, np.nan], [np.nan, np.nan, np.nan]]
    )
    result = ck.pairwise_cosine_similarity(asarray(xp, x))
    xp_assert_equal(result, expected, xp=xp, dtype=xp.float64)
    distance = ck.pairwise_cosine_distance(asarray(xp, x))
    xp_assert_equal(distance, np.where(np.isnan(expected), np.nan, 0.0), xp=xp, dtype=xp.float64)


@pytest.mark.parametrize("name", ["float32", pytest.param("float16", marks=HAS_FLOAT16)])
def test_dtype_kept(xp: ModuleType, name: str) -> None:
    dtype = getattr(xp, name)
    x = np.array([[300.0, 400.0], [1.0, 2.0], [0.0, 0.0]])
    y = np.array([[500.0, -300.0], [2.0, 1.0]])
    result = ck.pairwise_cosine_similarity(asarray(xp, x, dtype), asarray(xp, y, dtype))
    expected = cosine_similarity(x, y)
    xp_assert_close(result, expected, xp=xp, dtype=dtype, rtol=tolerance(name), atol=1e-3)


def test_integers_promote_and_mixed_floats_promote(xp: ModuleType) -> None:
    x = np.array([[1, 2], [0, 0], [3, -1]])
    y = np.array([[2.0, 1.0]])
    int_result = ck.pairwise_cosine_similarity(asarray(xp, x, xp.int32))
    default = xp.__array_namespace_info__().default_dtypes()["real floating"]
    xp_assert_close(int_result, cosine_similarity(x), xp=xp, dtype=default, rtol=1e-6)
    mixed = ck.pairwise_cosine_similarity(asarray(xp, x, xp.float32), asarray(xp, y, xp.float64))
    expected = cosine_similarity(x, y)
    xp_assert_close(mixed, expected, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


def test_empty_and_featureless(xp: ModuleType) -> None:
    empty = ck.pairwise_cosine_similarity(asarray(xp, np.zeros((0, 3))), asarray(xp, Y[:, :3]))
    xp_assert_equal(empty, np.zeros((0, 5)), xp=xp, dtype=xp.float64)
    featureless = asarray(xp, np.zeros((3, 0)))
    xp_assert_equal(
        ck.pairwise_cosine_similarity(featureless), np.zeros((3, 3)), xp=xp, dtype=xp.float64
    )
    xp_assert_equal(
        ck.pairwise_cosine_distance(featureless), 1.0 - np.eye(3), xp=xp, dtype=xp.float64
    )


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "match"),
    [
        ((3, 4), (3, 5), "same number of features"),
        ((4,), (3, 4), "rows, features"),
        ((2, 3, 4), (3, 3, 4), "do not broadcast"),
    ],
)
def test_shape_errors(
    xp: ModuleType, x_shape: tuple[int, ...], y_shape: tuple[int, ...], match: str
) -> None:
    x, y = asarray(xp, np.ones(x_shape)), asarray(xp, np.ones(y_shape))
    for function in (ck.pairwise_cosine_similarity, ck.pairwise_cosine_distance):
        with pytest.raises(ValueError, match=match):
            function(x, y)


def test_mixed_libraries_and_lists_are_type_errors(xp: ModuleType, library: Backend) -> None:
    with pytest.raises(TypeError, match="must be an array"):
        ck.pairwise_cosine_similarity([[1.0, 2.0]])
    if library is not Backend.NUMPY:
        with pytest.raises(TypeError, match="one array library"):
            ck.pairwise_cosine_similarity(asarray(xp, X), X)


def test_property_matches_sklearn(xp: ModuleType, library: Backend) -> None:
    @property_settings(library, 30)
    @given(
        data=hnp.arrays(
            np.float64,
            st.tuples(st.integers(1, 5), st.integers(1, 4)),
            # scikit-learn treats norms below 10 * eps as zero: keep clear of them.
            elements=st.one_of(st.just(0.0), st.floats(1e-3, 1e6), st.floats(-1e6, -1e-3)),
        ),
        other=st.integers(1, 4),
    )
    def check(data: np.ndarray, other: int) -> None:
        y = np.roll(data, other, axis=0)[: max(1, other)]
        result = ck.pairwise_cosine_similarity(asarray(xp, data), asarray(xp, y))
        xp_assert_close(
            result, cosine_similarity(data, y), xp=xp, dtype=xp.float64, rtol=0, atol=1e-14
        )

    check()


def _count_computes() -> tuple[Callable[..., Any], list[int]]:
    import dask

    calls = [0]

    def counting_get(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return dask.get(*args, **kwargs)

    return counting_get, calls


@pytest.mark.backends("dask")
def test_dask_stays_lazy(xp: ModuleType) -> None:
    import dask

    scheduler, calls = _count_computes()
    with dask.config.set(scheduler=scheduler):
        similarity = ck.pairwise_cosine_similarity(asarray(xp, X))
        distance = ck.pairwise_cosine_distance(asarray(xp, X), asarray(xp, Y), eps=1e-3)
        assert calls[0] == 0
        np.testing.assert_allclose(similarity.compute(), cosine_similarity(X), atol=1e-15)
        np.testing.assert_allclose(distance.compute(), cosine_distances(X, Y), atol=1e-15)
    assert calls[0] == 2


@pytest.mark.backends("jax")
def test_jax_jit(xp: ModuleType) -> None:
    import jax

    jitted = jax.jit(ck.pairwise_cosine_similarity)
    xp_assert_close(
        jitted(asarray(xp, X)),
        cosine_similarity(X) * (1 - np.eye(6)) + np.diag([1, 1, 0, 1, 1, 1]),
        xp=xp,
        dtype=xp.float64,
        rtol=0,
        atol=1e-15,
    )


@pytest.mark.backends("torch")
def test_torch_gradient_finite_at_zero_rows(xp: ModuleType) -> None:
    import torch

    x = asarray(xp, X).requires_grad_(True)
    y = asarray(xp, Y)
    ck.pairwise_cosine_similarity(x, y).sum().backward()
    reference = asarray(xp, X).requires_grad_(True)
    torch.nn.functional.cosine_similarity(
        reference[:, None, :], y[None, :, :], dim=-1
    ).sum().backward()
    assert x.grad is not None
    assert reference.grad is not None
    # PyTorch's gradient is right away from zero rows; cosinekit's is 0 at them.
    expected = to_numpy(reference.grad).copy()
    expected[2] = 0.0
    np.testing.assert_allclose(to_numpy(x.grad), expected, rtol=1e-12, atol=1e-15)
