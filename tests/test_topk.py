"""cosine_topk against a brute-force float64 NumPy search, ties included."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cosinekit as ck
from _support import (
    HAS_FLOAT16,
    Backend,
    asarray,
    counting_dask_computes,
    numpy_matrix,
    property_settings,
    to_numpy,
    xp_assert_close,
    xp_assert_equal,
)

RNG = np.random.default_rng(7)


def similarity_matrix(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The full float64 similarity matrix, 0 at zero rows."""
    q_norm = np.linalg.norm(queries, axis=1, keepdims=True)
    k_norm = np.linalg.norm(keys, axis=1, keepdims=True)
    unit_q = np.divide(queries, q_norm, out=np.zeros_like(queries), where=q_norm > 0)
    unit_k = np.divide(keys, k_norm, out=np.zeros_like(keys), where=k_norm > 0)
    return unit_q @ unit_k.T


def brute_force(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The full float64 similarity matrix, ordered by (-similarity, index)."""
    similarity = similarity_matrix(queries, keys)
    index = np.broadcast_to(np.arange(keys.shape[0]), similarity.shape)
    order = np.lexsort((index, -similarity), axis=-1)[:, :k]
    return np.take_along_axis(similarity, order, axis=1), order


def axis_keys(m: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Keys along the coordinate axes, some zero: many exactly tied similarities.

    A key ``c * e_j`` (``c > 0``) normalizes exactly to ``e_j``, so every key
    on the same axis has bit-for-bit the same similarity with any query, in
    any dtype and whatever order a matrix product sums in.
    """
    keys = np.zeros((m, d))
    axes = rng.integers(0, d, size=m)
    keys[np.arange(m), axes] = rng.choice([-3.0, -0.5, 0.25, 1.0, 7.0], size=m)
    keys[rng.random(m) < 0.15] = 0.0
    return keys


def _index_dtype(xp: ModuleType) -> Any:
    return xp.__array_namespace_info__().default_dtypes()["indexing"]


def check(xp: ModuleType, queries: np.ndarray, keys: np.ndarray, k: int, **options: Any) -> None:
    values, indices = ck.cosine_topk(asarray(xp, queries), asarray(xp, keys), k, **options)
    expected_values, expected_indices = brute_force(queries, keys, k)
    xp_assert_equal(indices, expected_indices, xp=xp, dtype=_index_dtype(xp))
    xp_assert_close(values, expected_values, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("chunk_size", "k"), numpy_matrix([1, 3, 7, 12, 13, 100, None], [1, 5, 12])
)
def test_random_matches_brute_force(xp: ModuleType, chunk_size: int | None, k: int) -> None:
    queries = RNG.standard_normal((4, 5))
    keys = RNG.standard_normal((12, 5))
    check(xp, queries, keys, k, chunk_size=chunk_size)


@pytest.mark.parametrize(
    ("chunk_size", "k"), numpy_matrix([1, 2, 3, 13, 14, 64, None], [1, 4, 9, 13])
)
def test_ties_go_to_the_smaller_index(xp: ModuleType, chunk_size: int | None, k: int) -> None:
    rng = np.random.default_rng(k)
    keys = axis_keys(13, 3, rng)
    queries = rng.standard_normal((4, 3))
    queries[2] = 0.0
    check(xp, queries, keys, k, chunk_size=chunk_size)


def test_duplicate_keys_in_float32(xp: ModuleType) -> None:
    keys = np.repeat(RNG.standard_normal((4, 5)), 6, axis=0)[RNG.permutation(24)]
    queries = RNG.standard_normal((5, 5))
    values, indices = ck.cosine_topk(
        asarray(xp, queries, xp.float32), asarray(xp, keys, xp.float32), 8, chunk_size=5
    )
    expected_values, _ = brute_force(queries, keys, 8)
    xp_assert_close(values, expected_values, xp=xp, dtype=xp.float32, rtol=0, atol=1e-6)
    # A matrix product may round copies of one key differently (BLAS sums
    # columns in different orders), so which copies win can differ from the
    # float64 order; but each chosen key has the expected similarity, and
    # where the returned similarities are equal the indices ascend.
    found, chosen = to_numpy(values), to_numpy(indices).astype(np.int64)
    assert np.unique(chosen, axis=1).shape == chosen.shape
    true_of_chosen = np.take_along_axis(similarity_matrix(queries, keys), chosen, axis=1)
    np.testing.assert_allclose(true_of_chosen, expected_values, rtol=0, atol=1e-6)
    tied = found[:, 1:] == found[:, :-1]
    assert tied.any()
    assert np.all(chosen[:, 1:][tied] > chosen[:, :-1][tied])


def test_zero_queries_get_the_first_keys(xp: ModuleType) -> None:
    keys = RNG.standard_normal((9, 4))
    values, indices = ck.cosine_topk(asarray(xp, np.zeros((3, 4))), asarray(xp, keys), 4)
    xp_assert_equal(indices, np.tile(np.arange(4), (3, 1)), xp=xp, dtype=_index_dtype(xp))
    xp_assert_equal(values, np.zeros((3, 4)), xp=xp, dtype=xp.float64)


def test_nan_ranks_last(xp: ModuleType) -> None:
    keys = np.array([[1.0, 0.0], [np.nan, 1.0], [-1.0, 0.0], [0.0, 1.0]])
    queries = np.array([[1.0, 0.0], [np.inf, 1.0]])
    values, indices = ck.cosine_topk(asarray(xp, queries), asarray(xp, keys), 4, chunk_size=2)
    xp_assert_equal(indices, [[0, 3, 2, 1], [0, 1, 2, 3]], xp=xp, dtype=_index_dtype(xp))
    expected = [[1.0, 0.0, -1.0, np.nan], [np.nan] * 4]
    xp_assert_equal(values, expected, xp=xp, dtype=xp.float64)


def test_dtypes(xp: ModuleType) -> None:
    queries = RNG.standard_normal((3, 4))
    keys = RNG.standard_normal((6, 4))
    expected_values, expected_indices = brute_force(queries, keys, 2)
    values, indices = ck.cosine_topk(
        asarray(xp, queries, xp.float32), asarray(xp, keys, xp.float32), 2
    )
    xp_assert_close(values, expected_values, xp=xp, dtype=xp.float32, rtol=1e-5)
    xp_assert_equal(indices, expected_indices, xp=xp, dtype=_index_dtype(xp))


@HAS_FLOAT16
def test_float16(xp: ModuleType) -> None:
    queries = RNG.standard_normal((3, 4))
    keys = RNG.standard_normal((6, 4))
    expected_values, _ = brute_force(queries, keys, 2)
    values, _ = ck.cosine_topk(asarray(xp, queries, xp.float16), asarray(xp, keys, xp.float16), 2)
    xp_assert_close(values, expected_values, xp=xp, dtype=xp.float16, rtol=2e-3, atol=2e-3)


def test_integer_inputs_promote(xp: ModuleType) -> None:
    queries = np.array([[1, 0], [0, 2]])
    keys = np.array([[3, 0], [1, 1], [0, 5]])
    values, indices = ck.cosine_topk(
        asarray(xp, queries, xp.int32), asarray(xp, keys, xp.int32), 3
    )
    default = xp.__array_namespace_info__().default_dtypes()["real floating"]
    expected_values, expected_indices = brute_force(queries.astype(float), keys.astype(float), 3)
    xp_assert_close(values, expected_values, xp=xp, dtype=default, rtol=1e-6)
    xp_assert_equal(indices, expected_indices, xp=xp, dtype=_index_dtype(xp))


def test_no_queries(xp: ModuleType) -> None:
    values, indices = ck.cosine_topk(
        asarray(xp, np.zeros((0, 3))), asarray(xp, RNG.standard_normal((4, 3))), 2
    )
    xp_assert_equal(values, np.zeros((0, 2)), xp=xp, dtype=xp.float64)
    xp_assert_equal(indices, np.zeros((0, 2), dtype=np.int64), xp=xp, dtype=_index_dtype(xp))


@pytest.mark.parametrize(
    ("k", "options", "error", "match"),
    [
        (0, {}, ValueError, "k must be between 1 and"),
        (6, {}, ValueError, "k must be between 1 and"),
        (-1, {}, ValueError, "k must be between 1 and"),
        (2, {"chunk_size": 0}, ValueError, "chunk_size must be positive"),
        (2, {"chunk_size": -3}, ValueError, "chunk_size must be positive"),
        (2.0, {}, TypeError, "k must be an integer"),
        (True, {}, TypeError, "k must be an integer"),
        (2, {"chunk_size": 1.5}, TypeError, "chunk_size must be an integer"),
    ],
)
def test_argument_errors(
    xp: ModuleType, k: Any, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    queries = asarray(xp, RNG.standard_normal((3, 2)))
    keys = asarray(xp, RNG.standard_normal((5, 2)))
    with pytest.raises(error, match=match):
        ck.cosine_topk(queries, keys, k, **options)


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "match"),
    [((3, 2), (5, 3), "same number of features"), ((2,), (5, 2), "rows, features")],
)
def test_shape_errors(
    xp: ModuleType, q_shape: tuple[int, ...], k_shape: tuple[int, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        ck.cosine_topk(asarray(xp, np.ones(q_shape)), asarray(xp, np.ones(k_shape)), 1)


def test_property_ties_and_blocks(xp: ModuleType, library: Backend) -> None:
    @property_settings(library, 30)
    @given(
        n=st.integers(1, 6),
        m=st.integers(1, 25),
        d=st.integers(1, 4),
        seed=st.integers(0, 2**32 - 1),
        data=st.data(),
    )
    def ties_and_blocks(n: int, m: int, d: int, seed: int, data: st.DataObject) -> None:
        rng = np.random.default_rng(seed)
        k = data.draw(st.integers(1, m), label="k")
        # Blocks of at least m / 4 rows keep the Dask graphs small; the tests
        # above cover blocks of single rows.
        chunk_size = data.draw(
            st.one_of(st.none(), st.integers(max(1, m // 4), m + 2)), label="chunk_size"
        )
        queries = rng.standard_normal((n, d))
        queries[rng.random(n) < 0.2] = 0.0
        check(xp, queries, axis_keys(m, d, rng), k, chunk_size=chunk_size)

    ties_and_blocks()


@pytest.mark.backends("dask")
def test_dask_stays_lazy(xp: ModuleType) -> None:
    import dask

    queries = RNG.standard_normal((10, 3))
    keys = axis_keys(23, 3, RNG)
    with counting_dask_computes() as calls:
        values, indices = ck.cosine_topk(asarray(xp, queries), asarray(xp, keys), 6, chunk_size=4)
        assert calls[0] == 0
        computed_values, computed_indices = dask.compute(values, indices)
    assert calls[0] == 1
    expected_values, expected_indices = brute_force(queries, keys, 6)
    np.testing.assert_array_equal(computed_indices, expected_indices)
    np.testing.assert_allclose(computed_values, expected_values, rtol=0, atol=1e-15)


@pytest.mark.backends("jax")
def test_jax_jit(xp: ModuleType) -> None:
    import jax

    queries = RNG.standard_normal((5, 3))
    keys = axis_keys(12, 3, RNG)
    search = jax.jit(lambda q, kk: ck.cosine_topk(q, kk, 4, chunk_size=5))
    values, indices = search(asarray(xp, queries), asarray(xp, keys))
    expected_values, expected_indices = brute_force(queries, keys, 4)
    xp_assert_equal(indices, expected_indices, xp=xp, dtype=_index_dtype(xp))
    xp_assert_close(values, expected_values, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


@pytest.mark.backends("torch")
def test_torch_gradient_flows_to_the_chosen_similarities(xp: ModuleType) -> None:
    import torch

    queries = asarray(xp, RNG.standard_normal((3, 4))).requires_grad_(True)
    keys = asarray(xp, RNG.standard_normal((7, 4)))
    values, indices = ck.cosine_topk(queries, keys, 2, chunk_size=3)
    values.sum().backward()
    reference = queries.detach().clone().requires_grad_(True)
    chosen = keys[indices]
    torch.nn.functional.cosine_similarity(reference[:, None, :], chosen, dim=-1).sum().backward()
    assert queries.grad is not None
    assert reference.grad is not None
    np.testing.assert_allclose(to_numpy(queries.grad), to_numpy(reference.grad), rtol=1e-12)
