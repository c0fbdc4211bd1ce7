"""exclude_self, cosine_range_search and progress against brute force, faiss and sklearn."""

from __future__ import annotations

import tracemalloc
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_topk import axis_keys, similarity_matrix

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

RNG = np.random.default_rng(12)


def _index_dtype(xp: ModuleType) -> Any:
    return xp.__array_namespace_info__().default_dtypes()["indexing"]


def reference_similarity(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """float64 cosines: 0 at zero rows, NaN for rows holding NaN or inf."""

    def unit(x: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):  # inf / inf is NaN, as intended
            return x / np.where(norm == 0, 1.0, norm)

    return unit(queries) @ unit(keys).T


def brute_force_topk(
    queries: np.ndarray, keys: np.ndarray, k: int, *, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    """float64 top-k by ``(-similarity, index)``, NaN last, key ``i`` dropped for query ``i``."""
    similarity = reference_similarity(queries, keys)
    rank = np.where(np.isnan(similarity), np.inf, -similarity)
    if exclude_self:
        rank[np.arange(queries.shape[0]), np.arange(queries.shape[0])] = np.nan  # sorts last
    index = np.broadcast_to(np.arange(keys.shape[0]), similarity.shape)
    order = np.lexsort((index, rank), axis=-1)[:, :k]
    return np.take_along_axis(similarity, order, axis=1), order


def brute_force_range(
    queries: np.ndarray, keys: np.ndarray, threshold: float, *, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every float64 pair at or above ``threshold`` (clipped), ordered by (row, -sim, key)."""
    similarity = np.clip(reference_similarity(queries, keys), -1.0, 1.0)
    qualifies = similarity >= threshold
    if exclude_self:
        qualifies[np.arange(queries.shape[0]), np.arange(queries.shape[0])] = False
    rows, cols = np.nonzero(qualifies)
    values = similarity[rows, cols]
    order = np.lexsort((cols, -values, rows))
    return rows[order], cols[order], values[order]


def check_topk(
    xp: ModuleType, queries: np.ndarray, keys: np.ndarray, k: int, **options: Any
) -> None:
    values, indices = ck.cosine_topk(asarray(xp, queries), asarray(xp, keys), k, **options)
    expected_values, expected_indices = brute_force_topk(
        queries, keys, k, exclude_self=options.get("exclude_self", False)
    )
    xp_assert_equal(indices, expected_indices, xp=xp, dtype=_index_dtype(xp))
    xp_assert_close(values, expected_values, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


def pairs_allowed(xp: ModuleType) -> bool:
    """False for array-api-strict without data-dependent shapes (no range search there)."""
    if xp.__name__ != "array_api_strict":
        return True
    import array_api_strict

    return bool(array_api_strict.get_array_api_strict_flags()["data_dependent_shapes"])


def check_range(
    xp: ModuleType, queries: np.ndarray, keys: np.ndarray, threshold: float, **options: Any
) -> None:
    if not pairs_allowed(xp):
        with pytest.raises(TypeError, match="cosine_topk"):
            ck.cosine_range_search(asarray(xp, queries), asarray(xp, keys), threshold, **options)
        return
    rows, cols, values = ck.cosine_range_search(
        asarray(xp, queries), asarray(xp, keys), threshold, **options
    )
    expected = brute_force_range(
        queries, keys, threshold, exclude_self=options.get("exclude_self", False)
    )
    # Dask's lengths are unknown (nan) until computed, so the shapes are
    # checked on the computed arrays.
    assert rows.dtype == cols.dtype == _index_dtype(xp)
    assert values.dtype == xp.float64
    np.testing.assert_array_equal(to_numpy(rows), expected[0])
    np.testing.assert_array_equal(to_numpy(cols), expected[1])
    np.testing.assert_allclose(to_numpy(values), expected[2], rtol=0, atol=1e-15)


# --- exclude_self ---------------------------------------------------------------


@pytest.mark.parametrize(("chunk_size", "k"), numpy_matrix([1, 3, 5, 16, None], [1, 4, 15]))
def test_exclude_self_matches_brute_force(xp: ModuleType, chunk_size: int | None, k: int) -> None:
    items = RNG.standard_normal((16, 5))
    check_topk(xp, items, items, k, chunk_size=chunk_size, exclude_self=True)


@pytest.mark.parametrize("chunk_size", [2, 4, 7, None])
def test_exclude_self_finds_duplicates_elsewhere(xp: ModuleType, chunk_size: int | None) -> None:
    # Axis keys normalize exactly, so copies tie bit for bit on every backend.
    items = axis_keys(14, 3, np.random.default_rng(5))
    items[9] = items[2]
    items[4] = items[11] = 0.0
    values, indices = ck.cosine_topk(
        asarray(xp, items), asarray(xp, items), 3, chunk_size=chunk_size, exclude_self=True
    )
    expected_values, expected_indices = brute_force_topk(items, items, 3, exclude_self=True)
    xp_assert_equal(indices, expected_indices, xp=xp, dtype=_index_dtype(xp))
    xp_assert_equal(values, expected_values, xp=xp, dtype=xp.float64)
    found = to_numpy(indices)
    assert found[2, 0] == 9
    assert found[9, 0] == 2
    assert not np.any(found == np.arange(14)[:, None])


def test_exclude_self_with_more_keys_than_queries(xp: ModuleType) -> None:
    keys = RNG.standard_normal((11, 4))
    queries = keys[:6].copy()
    check_topk(xp, queries, keys, 10, chunk_size=4, exclude_self=True)


def test_exclude_self_nan_rows_skip_their_own_index(xp: ModuleType) -> None:
    items = RNG.standard_normal((6, 3))
    items[0, 1] = np.nan
    items[3, 0] = np.inf
    values, indices = ck.cosine_topk(
        asarray(xp, items), asarray(xp, items), 5, chunk_size=2, exclude_self=True
    )
    expected_values, expected_indices = brute_force_topk(items, items, 5, exclude_self=True)
    xp_assert_equal(indices, expected_indices, xp=xp, dtype=_index_dtype(xp))
    xp_assert_close(values, expected_values, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(to_numpy(indices)[0], [1, 2, 3, 4, 5])


@pytest.mark.parametrize(
    ("n", "m", "k", "match"),
    [(5, 4, 1, "n <= m"), (4, 4, 4, "minus one"), (3, 1, 1, "n <= m"), (1, 1, 1, "minus one")],
)
def test_exclude_self_errors(xp: ModuleType, n: int, m: int, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ck.cosine_topk(
            asarray(xp, np.ones((n, 2))), asarray(xp, np.ones((m, 2))), k, exclude_self=True
        )


def test_exclude_self_must_be_bool(xp: ModuleType) -> None:
    items = asarray(xp, np.ones((3, 2)))
    with pytest.raises(TypeError, match="exclude_self"):
        ck.cosine_topk(items, items, 1, exclude_self=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exclude_self"):
        ck.cosine_range_search(items, items, 0.5, exclude_self="yes")  # type: ignore[arg-type]


# --- range search ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunk_size", "threshold"), numpy_matrix([1, 4, 9, None], [-1.5, -0.2, 0.0, 0.35, 0.9])
)
def test_range_matches_brute_force(
    xp: ModuleType, chunk_size: int | None, threshold: float
) -> None:
    queries = RNG.standard_normal((7, 4))
    keys = RNG.standard_normal((19, 4))
    queries[3] = 0.0  # similarity 0 with everything: in for threshold <= 0
    check_range(xp, queries, keys, threshold, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [2, 5, None])
def test_range_ties_order_by_key(xp: ModuleType, chunk_size: int | None) -> None:
    rng = np.random.default_rng(3)
    keys = axis_keys(17, 3, rng)
    queries = rng.standard_normal((5, 3))
    check_range(xp, queries, keys, -0.3, chunk_size=chunk_size)
    check_range(xp, keys, keys, 0.5, chunk_size=chunk_size, exclude_self=True)


def test_range_nan_never_qualifies_and_extremes(xp: ModuleType) -> None:
    keys = np.array([[1.0, 0.0], [np.nan, 1.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    queries = np.array([[1.0, 0.0], [np.inf, 1.0]])
    check_range(xp, queries, keys, -1.0)  # every number, -1 included
    check_range(xp, queries, keys, 1.0)  # only exact parallels
    check_range(xp, queries, keys, 1.5)  # nothing


@pytest.mark.parametrize(("n", "m"), [(0, 4), (3, 0), (0, 0)])
def test_range_empty_inputs(xp: ModuleType, n: int, m: int) -> None:
    check_range(xp, np.ones((n, 3)), np.ones((m, 3)), 0.0)
    if not pairs_allowed(xp):
        return
    rows, cols, values = ck.cosine_range_search(
        asarray(xp, np.ones((n, 3))), asarray(xp, np.ones((m, 3))), 0.0
    )
    assert values.dtype == xp.float64
    np.testing.assert_array_equal(to_numpy(values), np.zeros(0))
    np.testing.assert_array_equal(to_numpy(rows), np.zeros(0))
    np.testing.assert_array_equal(to_numpy(cols), np.zeros(0))


# No pairs without data-dependent shapes (see test_range_under_tracing_is_a_type_error).
@pytest.mark.backends("numpy", "torch", "jax", "dask", "array_api_strict", "cupy")
def test_range_float32(xp: ModuleType) -> None:
    queries = RNG.standard_normal((6, 8))
    keys = RNG.standard_normal((30, 8))
    rows, cols, values = ck.cosine_range_search(
        asarray(xp, queries, xp.float32), asarray(xp, keys, xp.float32), 0.3
    )
    assert values.dtype == xp.float32
    # float32 pairs near the threshold may fall either side; compare the sure ones.
    similarity = similarity_matrix(queries, keys)
    found = set(zip(to_numpy(rows).tolist(), to_numpy(cols).tolist(), strict=True))
    sure_in = set(zip(*np.nonzero(similarity >= 0.3 + 1e-5), strict=True))
    sure_out = set(zip(*np.nonzero(similarity < 0.3 - 1e-5), strict=True))
    assert sure_in <= found
    assert not found & sure_out
    np.testing.assert_allclose(
        to_numpy(values), similarity[to_numpy(rows), to_numpy(cols)], rtol=0, atol=1e-6
    )


# Half precision: the namespaces that have float16.
@HAS_FLOAT16
def test_range_half(xp: ModuleType) -> None:
    queries = RNG.standard_normal((6, 8))
    keys = RNG.standard_normal((30, 8))
    half = ck.cosine_range_search(
        asarray(xp, queries, xp.float16), asarray(xp, keys, xp.float16), 0.3
    )
    assert half[2].dtype == xp.float16


@pytest.mark.parametrize(
    ("threshold", "error", "match"),
    [
        (float("nan"), ValueError, "NaN"),
        ("0.5", TypeError, "real number"),
        (None, TypeError, "real number"),
        (True, TypeError, "real number"),
    ],
)
def test_range_threshold_errors(
    xp: ModuleType, threshold: Any, error: type[Exception], match: str
) -> None:
    items = asarray(xp, RNG.standard_normal((3, 2)))
    with pytest.raises(error, match=match):
        ck.cosine_range_search(items, items, threshold)


def test_range_shape_and_option_errors(xp: ModuleType) -> None:
    with pytest.raises(ValueError, match="same number of features"):
        ck.cosine_range_search(asarray(xp, np.ones((3, 2))), asarray(xp, np.ones((3, 3))), 0.5)
    with pytest.raises(ValueError, match="rows, features"):
        ck.cosine_range_search(asarray(xp, np.ones(3)), asarray(xp, np.ones((3, 3))), 0.5)
    with pytest.raises(ValueError, match="n <= m"):
        ck.cosine_range_search(
            asarray(xp, np.ones((4, 2))), asarray(xp, np.ones((3, 2))), 0.5, exclude_self=True
        )
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        ck.cosine_range_search(
            asarray(xp, np.ones((4, 2))), asarray(xp, np.ones((3, 2))), 0.5, chunk_size=0
        )


# scikit-learn and faiss take NumPy arrays; NumPy and PyTorch compare with them.
@pytest.mark.backends("numpy", "torch")
def test_range_against_sklearn_and_faiss(xp: ModuleType) -> None:
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(8)
    queries = rng.standard_normal((40, 16))
    keys = rng.standard_normal((300, 16))
    threshold = 0.4
    rows, cols, values = (
        to_numpy(a)
        for a in ck.cosine_range_search(asarray(xp, queries), asarray(xp, keys), threshold)
    )
    neighbors = NearestNeighbors(metric="cosine", algorithm="brute").fit(keys)
    distances, found = neighbors.radius_neighbors(queries, radius=1 - threshold)
    for i in range(queries.shape[0]):
        mine = cols[rows == i]
        np.testing.assert_array_equal(np.sort(mine), np.sort(found[i]))
        order = np.lexsort((found[i], distances[i]))
        np.testing.assert_array_equal(mine, found[i][order])
        np.testing.assert_allclose(values[rows == i], 1 - distances[i][order], atol=1e-12)
    faiss = pytest.importorskip("faiss")
    unit_keys = (keys / np.linalg.norm(keys, axis=1, keepdims=True)).astype(np.float32)
    unit_queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    index = faiss.IndexFlatIP(16)
    index.add(unit_keys)
    limits, similarities, labels = index.range_search(unit_queries, threshold)
    # faiss's range is strict (> threshold) and float32; no pair here is near it.
    assert np.min(np.abs(similarity_matrix(queries, keys) - threshold)) > 1e-5
    for i in range(queries.shape[0]):
        theirs = labels[limits[i] : limits[i + 1]]
        np.testing.assert_array_equal(np.sort(cols[rows == i]), np.sort(theirs))
        np.testing.assert_allclose(
            np.sort(values[rows == i]), np.sort(similarities[limits[i] : limits[i + 1]]), atol=1e-6
        )


@pytest.mark.backends("numpy", "torch")  # faiss takes NumPy arrays
def test_topk_against_faiss(xp: ModuleType) -> None:
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(9)
    items = rng.standard_normal((500, 24), dtype=np.float32)
    values, indices = ck.cosine_topk(asarray(xp, items), asarray(xp, items), 8, exclude_self=True)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(24)
    index.add(unit)
    their_values, their_indices = index.search(unit, 9)
    # faiss finds each item itself first; without it, the same neighbours.
    np.testing.assert_array_equal(their_indices[:, 0], np.arange(500))
    np.testing.assert_array_equal(to_numpy(indices), their_indices[:, 1:])
    np.testing.assert_allclose(to_numpy(values), their_values[:, 1:], atol=2e-6)


# Eager and lazy backends return the pairs (the tests above).
@pytest.mark.backends("jax", "torch", "array_api_strictest")
def test_range_under_tracing_is_a_type_error(xp: ModuleType, library: Backend) -> None:
    items = RNG.standard_normal((4, 3))
    if library is Backend.JAX:
        import jax

        with pytest.raises(TypeError, match="cosine_topk"):
            jax.jit(lambda x: ck.cosine_range_search(x, x, 0.5))(asarray(xp, items))
        constant = asarray(xp, items)
        with pytest.raises(TypeError, match="traced"):
            jax.jit(lambda x: ck.cosine_range_search(x, constant, 0.5))(asarray(xp, items))
    elif library is Backend.TORCH:
        import torch

        # A graph break: without fullgraph the call runs eagerly, with the eager result.
        eager = ck.cosine_range_search(asarray(xp, items), asarray(xp, items), 0.5)
        compiled = torch.compile(lambda x: ck.cosine_range_search(x, x, 0.5), backend="eager")
        for got, want in zip(compiled(asarray(xp, items)), eager, strict=True):
            assert torch.equal(got, want)
        full = torch.compile(
            lambda x: ck.cosine_range_search(x, x * 1.0, 0.5), fullgraph=True, backend="eager"
        )
        with pytest.raises(Exception, match="disable"):
            full(asarray(xp, items))
    else:
        with pytest.raises(TypeError, match="cosine_topk"):
            ck.cosine_range_search(asarray(xp, items), asarray(xp, items), 0.5)


# --- Dask, JAX jit, progress ----------------------------------------------------


@pytest.mark.backends("dask")
def test_dask_range_is_lazy_with_unknown_length(xp: ModuleType) -> None:
    import dask

    items = axis_keys(21, 3, RNG)
    with counting_dask_computes() as calls:
        rows, cols, values = ck.cosine_range_search(
            asarray(xp, items), asarray(xp, items), 0.5, exclude_self=True
        )
        assert np.isnan(rows.shape[0])
        assert calls[0] == 0
        rows, cols, values = dask.compute(rows, cols, values)
    assert calls[0] == 1
    expected = brute_force_range(items, items, 0.5, exclude_self=True)
    np.testing.assert_array_equal(rows, expected[0])
    np.testing.assert_array_equal(cols, expected[1])
    np.testing.assert_array_equal(values, expected[2])


@pytest.mark.backends("jax")
def test_jax_jit_exclude_self(xp: ModuleType) -> None:
    import jax

    items = axis_keys(13, 3, RNG)
    items[5] = np.nan
    constant = asarray(xp, items)
    for traced in ("both", "queries"):
        if traced == "both":
            search = jax.jit(
                lambda q, kk: ck.cosine_topk(q, kk, 6, chunk_size=4, exclude_self=True)
            )
            values, indices = search(asarray(xp, items), asarray(xp, items))
        else:
            search_q = jax.jit(
                lambda q: ck.cosine_topk(q, constant, 6, chunk_size=4, exclude_self=True)
            )
            values, indices = search_q(asarray(xp, items))
        expected_values, expected_indices = brute_force_topk(items, items, 6, exclude_self=True)
        xp_assert_equal(indices, expected_indices, xp=xp, dtype=_index_dtype(xp))
        xp_assert_close(values, expected_values, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


def test_progress_reports_every_key_block(xp: ModuleType, library: Backend) -> None:
    queries = asarray(xp, RNG.standard_normal((5, 3)))
    keys = asarray(xp, RNG.standard_normal((11, 3)))
    if library in (Backend.DASK, Backend.ARRAY_API_STRICTEST):
        with pytest.raises(TypeError, match="progress"):
            ck.cosine_topk(queries, keys, 2, progress=lambda done, total: None)
        if library is Backend.DASK:
            with pytest.raises(TypeError, match="progress"):
                ck.cosine_range_search(queries, keys, 0.0, progress=lambda done, total: None)
        return
    for search in (
        lambda report: ck.cosine_topk(queries, keys, 2, chunk_size=4, progress=report),
        lambda report: ck.cosine_range_search(queries, keys, 0.0, chunk_size=4, progress=report),
    ):
        seen: list[tuple[int, int]] = []
        search(lambda done, total, seen=seen: seen.append((done, total)))
        assert seen == [(4, 11), (8, 11), (11, 11)]
    with pytest.raises(TypeError, match="callable"):
        ck.cosine_topk(queries, keys, 2, progress=3)  # type: ignore[arg-type]


@pytest.mark.backends("jax")
def test_progress_under_jit_is_a_type_error(xp: ModuleType) -> None:
    import jax

    items = asarray(xp, RNG.standard_normal((4, 3)))
    with pytest.raises(TypeError, match="traced search"):
        jax.jit(lambda x: ck.cosine_topk(x, x, 2, progress=lambda d, t: None))(items)


@pytest.mark.backend_free  # NumPy arrays only: tracemalloc sees NumPy's allocations
def test_numpy_peak_memory_is_bounded() -> None:
    rng = np.random.default_rng(4)
    queries = rng.standard_normal((1500, 8), dtype=np.float32)
    keys = rng.standard_normal((120_000, 8), dtype=np.float32)
    tracemalloc.start()
    try:
        ck.cosine_topk(queries, keys, 10, exclude_self=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The full (n, m) matrix would be 720 MB; the blocks stay far below 256 MiB.
    assert peak < 128 * 2**20


# --- properties -----------------------------------------------------------------


def test_property_exclude_self_and_range(xp: ModuleType, library: Backend) -> None:
    @property_settings(library, 25)
    @given(
        m=st.integers(2, 20),
        d=st.integers(1, 4),
        seed=st.integers(0, 2**32 - 1),
        data=st.data(),
    )
    def exclude_self_and_range(m: int, d: int, seed: int, data: st.DataObject) -> None:
        rng = np.random.default_rng(seed)
        n = data.draw(st.integers(1, m), label="n")
        k = data.draw(st.integers(1, m - 1), label="k")
        chunk_size = data.draw(
            st.one_of(st.none(), st.integers(max(1, m // 4), m + 2)), label="chunk_size"
        )
        keys = axis_keys(m, d, rng)
        queries = keys[:n].copy()
        queries[rng.random(n) < 0.2] = rng.standard_normal(d)
        check_topk(xp, queries, keys, k, chunk_size=chunk_size, exclude_self=True)
        threshold = data.draw(st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), label="threshold")
        check_range(xp, queries, keys, threshold, chunk_size=chunk_size, exclude_self=True)

    exclude_self_and_range()
