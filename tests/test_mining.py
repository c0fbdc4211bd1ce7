"""Mining: cosine_similar_pairs, cosine_communities and mine_hard_negatives.

Each is checked against a float64 brute force of API.md's contract written
here from the full similarity matrix (identical nonzero rows at exactly 1,
as the contract says), on every backend: one representative case per
dimension everywhere, the full matrix of thresholds, block sizes and
filters on NumPy. sentence-transformers' own functions are the reference
in ``test_mining_peers.py``.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_search import pairs_allowed
from test_topk import axis_keys

import cosinekit as ck
from _references import _unit
from _references import cosine_communities as brute_communities
from _references import cosine_similar_pairs as brute_similar_pairs
from _references import cosine_similarity_matrix as reference
from _references import mine_hard_negatives as brute_negatives
from _support import Backend, asarray, counting_dask_computes, to_numpy, xp_assert_equal

RNG = np.random.default_rng(22)
NUMPY_ONLY = pytest.mark.backends("numpy")
# The value-dependent searches refuse array-api-strict's strictest flags
# (checked by check_similar_pairs and check_communities).
EAGER_RESULTS = pytest.mark.backends(
    *(b.value for b in Backend if b is not Backend.ARRAY_API_STRICTEST)
)


def _index_dtype(xp: ModuleType) -> Any:
    return xp.__array_namespace_info__().default_dtypes()["indexing"]


def collection(n: int, d: int, rng: np.random.Generator, *, duplicates: int = 3) -> np.ndarray:
    """Clustered rows with exact duplicates, a zero row and a NaN row."""
    centres = rng.standard_normal((max(2, n // 6), d))
    x = centres[rng.integers(0, centres.shape[0], n)] + 0.3 * rng.standard_normal((n, d))
    for _ in range(duplicates):
        x[rng.integers(0, n)] = x[rng.integers(0, n)]
    x[rng.integers(0, n)] = 0.0
    x[rng.integers(0, n), 0] = np.nan
    return x


# --- cosine_similar_pairs -------------------------------------------------------------


def check_similar_pairs(
    xp: ModuleType, x: np.ndarray, threshold: float, *, exact_ties: bool = False, **options: Any
) -> None:
    if not pairs_allowed(xp):
        with pytest.raises(TypeError, match="cosine_topk"):
            ck.cosine_similar_pairs(asarray(xp, x), threshold, **options)
        return
    found = ck.cosine_similar_pairs(asarray(xp, x), threshold, **options)
    assert found[0].dtype == found[1].dtype == _index_dtype(xp)
    assert found[2].dtype == xp.float64
    first, second, values = (to_numpy(a) for a in found)
    expected = brute_similar_pairs(x, threshold)
    # The pairs and their values; the order by value holds as computed (a
    # duplicate's pairs may differ from its twin's in the last bit).
    assert sorted(zip(first.tolist(), second.tolist(), strict=True)) == sorted(
        zip(expected[0].tolist(), expected[1].tolist(), strict=True)
    )
    np.testing.assert_allclose(values, reference(x, x)[first, second], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(np.lexsort((second, first, -values)), np.arange(len(values)))
    if exact_ties:
        np.testing.assert_array_equal(first, expected[0])
        np.testing.assert_array_equal(second, expected[1])


@pytest.mark.parametrize(
    "chunk_size", [pytest.param(1, marks=NUMPY_ONLY), 3, pytest.param(7, marks=NUMPY_ONLY), None]
)
@pytest.mark.parametrize(
    "threshold",
    [
        pytest.param(-1.5, marks=NUMPY_ONLY),
        pytest.param(0.0, marks=NUMPY_ONLY),
        0.8,
        pytest.param(1.0, marks=NUMPY_ONLY),
    ],
)
def test_similar_pairs_match_brute_force(
    xp: ModuleType, chunk_size: int | None, threshold: float
) -> None:
    check_similar_pairs(xp, collection(19, 4, RNG), threshold, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [2, pytest.param(5, marks=NUMPY_ONLY), None])
def test_similar_pairs_ties_order_by_first_then_second(
    xp: ModuleType, chunk_size: int | None
) -> None:
    # Axis keys normalize exactly: many pairs tie bit for bit at 1, 0 and -1.
    x = axis_keys(15, 3, np.random.default_rng(4))
    check_similar_pairs(xp, x, 0.0, exact_ties=True, chunk_size=chunk_size)


@EAGER_RESULTS
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_duplicates_are_found_at_threshold_one(xp: ModuleType, dtype: str) -> None:
    """Exact duplicates have similarity 1: a threshold of 1.0 finds every copy (issue 19)."""
    rng = np.random.default_rng(19)
    base = rng.standard_normal((20, 24))
    items = np.concatenate([base, base[:12], 2.0 * base[12:]])  # copies, and power-of-2 multiples
    cast = asarray(xp, items, getattr(xp, dtype))
    first, second, values = (to_numpy(a) for a in ck.cosine_similar_pairs(cast, 1.0))
    pairs = set(zip(first.tolist(), second.tolist(), strict=True))
    assert pairs == {(i, 20 + i) for i in range(20)}
    np.testing.assert_array_equal(values, np.ones(20))
    rows, cols, sims = (to_numpy(a) for a in ck.cosine_range_search(cast, cast, 1.0))
    found = set(zip(rows.tolist(), cols.tolist(), strict=True))
    copies = {(i, 20 + i) for i in range(20)} | {(20 + i, i) for i in range(20)}
    assert found == copies | {(i, i) for i in range(40)}  # every row with itself, too
    np.testing.assert_array_equal(sims, np.ones(len(found)))


@EAGER_RESULTS
def test_duplicates_keep_their_value_below_one(xp: ModuleType) -> None:
    """Close rows that are not identical keep their computed similarity (no rounding up)."""
    # Row 0 is 8e-16 below parallel to rows 1 and 2: within the rounding
    # bound (d + 4) eps of 1, but not the same unit vector.
    items = np.array([[1.0, 4e-8, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    found = ck.cosine_similar_pairs(asarray(xp, items), 0.5)
    first, second, values = (to_numpy(a) for a in found)
    np.testing.assert_array_equal(first, [1, 0, 0])
    np.testing.assert_array_equal(second, [2, 1, 2])
    assert values[0] == 1.0
    assert np.all(values[1:] < 1.0)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_similar_pairs_few_rows(xp: ModuleType, n: int) -> None:
    check_similar_pairs(xp, np.ones((n, 3)), 0.5)
    check_similar_pairs(xp, np.ones((n, 3)), 1.5)


@NUMPY_ONLY
def test_similar_pairs_against_faiss_and_range_search() -> None:
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(8)
    x = collection(300, 16, rng, duplicates=0)
    x = x[np.all(np.isfinite(x), axis=1) & np.any(x != 0, axis=1)].astype(np.float32)
    threshold = 0.7
    first, second, values = ck.cosine_similar_pairs(x, threshold)
    index = faiss.IndexFlatIP(16)
    index.add(_unit(x).astype(np.float32))
    limits, _, labels = index.range_search(_unit(x).astype(np.float32), threshold)
    theirs = {
        (i, int(j)) for i in range(x.shape[0]) for j in labels[limits[i] : limits[i + 1]] if i < j
    }
    # faiss keeps similarity > threshold; no pair here is within 1e-5 of it.
    assert np.min(np.abs(reference(x, x) - threshold)) > 1e-5
    assert set(zip(first.tolist(), second.tolist(), strict=True)) == theirs
    rows, cols, sims = ck.cosine_range_search(x, x, threshold, exclude_self=True)
    upper = rows < cols
    mine = sorted(zip(first.tolist(), second.tolist(), values.tolist(), strict=True))
    expected = sorted(
        zip(rows[upper].tolist(), cols[upper].tolist(), sims[upper].tolist(), strict=True)
    )
    assert [p[:2] for p in mine] == [p[:2] for p in expected]
    np.testing.assert_allclose([p[2] for p in mine], [p[2] for p in expected], atol=1e-6)


@pytest.mark.parametrize(
    ("threshold", "error", "match"),
    [
        (float("nan"), ValueError, "NaN"),
        ("0.5", TypeError, "real number"),
        (None, TypeError, "real number"),
    ],
)
def test_similar_pairs_threshold_errors(
    xp: ModuleType, threshold: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ck.cosine_similar_pairs(asarray(xp, RNG.standard_normal((3, 2))), threshold)


def test_similar_pairs_shape_errors(xp: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"x must have shape \(rows, features\)"):
        ck.cosine_similar_pairs(asarray(xp, np.ones(3)), 0.5)
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        ck.cosine_similar_pairs(asarray(xp, np.ones((3, 2))), 0.5, chunk_size=0)
    with pytest.raises(TypeError, match="x must be an array"):
        ck.cosine_similar_pairs([[1.0, 0.0]], 0.5)  # type: ignore[arg-type]


# --- cosine_communities ---------------------------------------------------------------


def check_communities(
    xp: ModuleType, x: np.ndarray, threshold: float, min_size: int, **options: Any
) -> None:
    if not pairs_allowed(xp):
        with pytest.raises(TypeError, match="cosine_topk"):
            ck.cosine_communities(asarray(xp, x), threshold, min_size=min_size, **options)
        return
    labels = ck.cosine_communities(asarray(xp, x), threshold, min_size=min_size, **options)
    xp_assert_equal(
        labels, brute_communities(x, threshold, min_size=min_size), xp=xp, dtype=_index_dtype(xp)
    )


@pytest.mark.parametrize(
    "chunk_size", [pytest.param(1, marks=NUMPY_ONLY), 4, pytest.param(None, marks=NUMPY_ONLY)]
)
@pytest.mark.parametrize(
    ("threshold", "min_size"),
    [
        pytest.param(-0.5, 1, marks=NUMPY_ONLY),
        pytest.param(0.0, 2, marks=NUMPY_ONLY),
        (0.8, 1),
        pytest.param(0.8, 3, marks=NUMPY_ONLY),
        pytest.param(0.95, 2, marks=NUMPY_ONLY),
        pytest.param(1.0, 2, marks=NUMPY_ONLY),
        pytest.param(1.2, 1, marks=NUMPY_ONLY),
    ],
)
def test_communities_match_brute_force(
    xp: ModuleType, chunk_size: int | None, threshold: float, min_size: int
) -> None:
    check_communities(
        xp, collection(23, 3, RNG, duplicates=4), threshold, min_size, chunk_size=chunk_size
    )


def test_communities_ties_go_to_the_lower_centre(xp: ModuleType) -> None:
    # Two copies of each row: every candidate ties with its twin's.
    x = np.repeat(axis_keys(8, 2, np.random.default_rng(1)), 2, axis=0)
    check_communities(xp, x, 0.5, 2, chunk_size=3)


@EAGER_RESULTS
def test_communities_min_size_and_edges(xp: ModuleType) -> None:
    x = asarray(xp, np.ones((3, 2)))
    xp_assert_equal(
        ck.cosine_communities(x, 0.5, min_size=4), [-1, -1, -1], xp=xp, dtype=_index_dtype(xp)
    )
    empty = ck.cosine_communities(asarray(xp, np.ones((0, 2))), 0.5)
    assert tuple(empty.shape) == (0,)
    with pytest.raises(ValueError, match="min_size"):
        ck.cosine_communities(x, 0.5, min_size=0)
    with pytest.raises(TypeError, match="min_size"):
        ck.cosine_communities(x, 0.5, min_size=2.0)  # type: ignore[arg-type]


# --- mine_hard_negatives ------------------------------------------------------------

FILTERS: dict[str, dict[str, Any]] = {
    "none": {},
    "rank_range": {"rank_range": (2, 6)},
    "max_similarity": {"max_similarity": 0.5},
    "margin": {"margin": 0.05},
    "relative_margin": {"relative_margin": 0.1},
    "window_and_margin": {"rank_range": (1, 9), "margin": 0.02},
    "all": {"rank_range": (1, 12), "max_similarity": 0.9, "margin": 0.01, "relative_margin": 0.02},
}


def mining_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # No duplicate keys: their similarities may differ in the last bit, and
    # the tie rule holds for values as computed (exact ties: axis keys below).
    keys = collection(26, 4, rng, duplicates=0)
    queries = keys[[1, 5, 9, 13, 17, 21]] + 0.2 * rng.standard_normal((6, 4))
    queries[4] = 0.0  # a zero query: similarity 0 with every key
    positives = np.array([[1, -1], [5, 6], [-1, -1], [13, 0], [17, 3], [21, -1]])
    return queries, keys, positives


def check_negatives(
    xp: ModuleType,
    queries: np.ndarray,
    keys: np.ndarray,
    positives: np.ndarray,
    k: int,
    **options: Any,
) -> None:
    indices, values = ck.mine_hard_negatives(
        asarray(xp, queries), asarray(xp, keys), asarray(xp, positives), k=k, **options
    )
    filters = {name: v for name, v in options.items() if name != "chunk_size"}
    expected_indices, expected_values = brute_negatives(queries, keys, positives, k=k, **filters)
    xp_assert_equal(indices, expected_indices, xp=xp, dtype=_index_dtype(xp))
    np.testing.assert_allclose(to_numpy(values), expected_values, rtol=0, atol=1e-14)
    assert values.dtype == xp.float64


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=NUMPY_ONLY) if n not in ("none", "all") else n for n in FILTERS],
)
@pytest.mark.parametrize("chunk_size", [pytest.param(2, marks=NUMPY_ONLY), 5, None])
def test_negatives_filter_by_filter(xp: ModuleType, name: str, chunk_size: int | None) -> None:
    queries, keys, positives = mining_data(np.random.default_rng(3))
    check_negatives(xp, queries, keys, positives, 4, chunk_size=chunk_size, **FILTERS[name])


@pytest.mark.parametrize("k", [1, pytest.param(7, marks=NUMPY_ONLY), 26])
def test_negatives_pad_when_too_few_pass(xp: ModuleType, k: int) -> None:
    queries, keys, positives = mining_data(np.random.default_rng(5))
    check_negatives(xp, queries, keys, positives, k, rank_range=(3, 8), max_similarity=0.8)
    check_negatives(xp, queries, keys, positives[:, 0], k, chunk_size=4)


def test_negatives_ties_go_to_the_lower_index(xp: ModuleType) -> None:
    keys = axis_keys(20, 3, np.random.default_rng(6))
    queries = keys[:5] + np.array([0.0, 0.0, 0.0])
    positives = np.arange(5)
    check_negatives(xp, queries, keys, positives, 6, chunk_size=3, rank_range=(1, 15))


def test_negatives_positive_out_of_range_is_a_value_error(
    xp: ModuleType, library: Backend
) -> None:
    queries, keys, _ = mining_data(np.random.default_rng(7))
    bad = asarray(xp, np.array([0, 1, 26, 3, 4, 5]))
    call = lambda: ck.mine_hard_negatives(  # noqa: E731
        asarray(xp, queries), asarray(xp, keys), bad, k=2
    )
    if library in (Backend.DASK, Backend.ARRAY_API_STRICTEST):
        # Values are not read (lazy, or the fixed-shape paths): that row is padding.
        indices, _ = call()
        np.testing.assert_array_equal(to_numpy(indices)[2], [-1, -1])
        return
    with pytest.raises(ValueError, match="positives"):
        call()


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must be between 1"),
        ({"k": 27}, ValueError, "k must be between 1"),
        ({"k": 2.0}, TypeError, "k must be an integer"),
        ({"k": 2, "rank_range": (3, 3)}, ValueError, "lo < hi"),
        ({"k": 2, "rank_range": (-1, 3)}, ValueError, "lo < hi"),
        ({"k": 2, "rank_range": 3}, TypeError, "rank_range"),
        ({"k": 2, "margin": math.inf}, ValueError, "margin must be finite"),
        ({"k": 2, "max_similarity": "0.5"}, TypeError, "max_similarity"),
        ({"k": 2, "relative_margin": math.nan}, ValueError, "relative_margin"),
    ],
)
def test_negatives_argument_errors(
    xp: ModuleType, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    queries, keys, positives = mining_data(np.random.default_rng(8))
    with pytest.raises(error, match=match):
        ck.mine_hard_negatives(
            asarray(xp, queries), asarray(xp, keys), asarray(xp, positives), **options
        )


def test_negatives_positives_errors(xp: ModuleType) -> None:
    queries, keys, _ = mining_data(np.random.default_rng(9))
    q, kk = asarray(xp, queries), asarray(xp, keys)
    with pytest.raises(TypeError, match="integer array"):
        ck.mine_hard_negatives(q, kk, asarray(xp, np.zeros(6)), k=2)
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(n, p\)"):
        ck.mine_hard_negatives(q, kk, asarray(xp, np.zeros(5, dtype=np.int64)), k=2)
    with pytest.raises(TypeError, match="positives must be an array"):
        ck.mine_hard_negatives(q, kk, [0, 1, 2, 3, 4, 5], k=2)  # type: ignore[arg-type]


def test_negatives_float32_and_no_queries(xp: ModuleType) -> None:
    queries, keys, positives = mining_data(np.random.default_rng(10))
    indices, values = ck.mine_hard_negatives(
        asarray(xp, queries, xp.float32),
        asarray(xp, keys, xp.float32),
        asarray(xp, positives),
        k=3,
    )
    assert values.dtype == xp.float32
    expected_indices, expected_values = brute_negatives(queries, keys, positives, k=3)
    np.testing.assert_array_equal(to_numpy(indices), expected_indices)
    np.testing.assert_allclose(to_numpy(values), expected_values, atol=1e-6)
    indices, values = ck.mine_hard_negatives(
        asarray(xp, queries[:0]), asarray(xp, keys), asarray(xp, positives[:0]), k=3
    )
    assert tuple(indices.shape) == tuple(values.shape) == (0, 3)


# --- traced, lazy -----------------------------------------------------------------------


@pytest.mark.backends("jax")
def test_jax_jit_negatives_and_refused_pair_searches() -> None:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    queries, keys, positives = mining_data(np.random.default_rng(11))
    mined = jax.jit(
        lambda q, kk, p: ck.mine_hard_negatives(q, kk, p, k=4, chunk_size=5, **FILTERS["all"])
    )
    indices, values = mined(jnp.asarray(queries), jnp.asarray(keys), jnp.asarray(positives))
    expected = brute_negatives(queries, keys, positives, k=4, **FILTERS["all"])
    np.testing.assert_array_equal(np.asarray(indices), expected[0])
    np.testing.assert_allclose(np.asarray(values), expected[1], rtol=0, atol=1e-14)
    # Under a trace a positive out of range gives a row of padding, the others unchanged.
    bad = positives.copy()
    bad[2, 0] = 40
    indices, _ = mined(jnp.asarray(queries), jnp.asarray(keys), jnp.asarray(bad))
    np.testing.assert_array_equal(np.asarray(indices)[2], [-1] * 4)
    np.testing.assert_array_equal(
        np.asarray(indices)[[0, 1, 3, 4, 5]], expected[0][[0, 1, 3, 4, 5]]
    )
    x = jnp.asarray(queries)
    for call in (
        lambda t: ck.cosine_similar_pairs(t, 0.5),
        lambda t: ck.cosine_communities(t, 0.5),
    ):
        with pytest.raises(TypeError, match="cosine_topk"):
            jax.jit(call)(x)


@pytest.mark.backends("torch")
def test_torch_compile_negatives_fullgraph_and_pair_searches_break() -> None:
    import torch

    queries, keys, positives = mining_data(np.random.default_rng(12))
    q, kk, p = torch.asarray(queries), torch.asarray(keys), torch.asarray(positives)
    compiled = torch.compile(
        lambda a, b, c: ck.mine_hard_negatives(a, b, c, k=3, **FILTERS["window_and_margin"]),
        fullgraph=True,
        backend="eager",
    )
    indices, values = compiled(q, kk, p)
    expected = brute_negatives(queries, keys, positives, k=3, **FILTERS["window_and_margin"])
    np.testing.assert_array_equal(indices.numpy(), expected[0])
    np.testing.assert_allclose(values.numpy(), expected[1], rtol=0, atol=1e-14)
    # The value-dependent searches are graph breaks that return the eager result.
    for call in (
        lambda t: ck.cosine_similar_pairs(t, 0.5),
        lambda t: (ck.cosine_communities(t, 0.5),),
    ):
        eager = call(kk)
        broken = torch.compile(call, backend="eager")(kk)
        for got, want in zip(broken, eager, strict=True):
            assert torch.equal(got, want)
        with pytest.raises(Exception, match="disable"):
            torch.compile(lambda t, call=call: call(t * 1.0), fullgraph=True, backend="eager")(kk)


@pytest.mark.backends("torch")
def test_torch_gradient_of_negatives_reaches_queries_and_keys() -> None:
    import torch

    queries, keys, positives = mining_data(np.random.default_rng(13))
    # A NaN key would make every query's gradient NaN through the blocks'
    # matrix product (0 * NaN), as for cosine_topk: finite keys here.
    keys = np.nan_to_num(keys)
    q = torch.asarray(queries, requires_grad=True)
    kk = torch.asarray(keys, requires_grad=True)
    indices, values = ck.mine_hard_negatives(q, kk, torch.asarray(positives), k=3)
    torch.nansum(values).backward()
    chosen = indices.clamp(min=0)
    q2 = torch.asarray(queries, requires_grad=True)
    k2 = torch.asarray(keys, requires_grad=True)
    direct = torch.nn.functional.cosine_similarity(q2[:, None, :], k2[chosen], dim=-1)
    torch.where(indices >= 0, direct, 0.0).nansum().backward()
    # The zero query (row 4) has the subgradient 0; torch's eps clamp gives 1e8 there.
    np.testing.assert_array_equal(q.grad.numpy()[4], np.zeros(4))
    rows = [0, 1, 2, 3, 5]
    np.testing.assert_allclose(q.grad.numpy()[rows], q2.grad.numpy()[rows], atol=1e-12)
    np.testing.assert_allclose(kk.grad.numpy(), k2.grad.numpy(), atol=1e-12)


@pytest.mark.backends("dask")
def test_dask_mining_laziness() -> None:
    import dask
    import dask.array as da

    queries, keys, positives = mining_data(np.random.default_rng(14))
    x = collection(21, 3, np.random.default_rng(15))
    lazy_q = da.from_array(queries, chunks=4)
    lazy_k, lazy_x = da.from_array(keys, chunks=7), da.from_array(x, chunks=5)
    with counting_dask_computes() as calls:
        indices, values = ck.mine_hard_negatives(
            lazy_q, lazy_k, da.from_array(positives, chunks=(3, 2)), k=4, **FILTERS["all"]
        )
        first, second, sims = ck.cosine_similar_pairs(lazy_x, 0.6, chunk_size=3)
        assert tuple(indices.shape) == (6, 4)
        assert np.isnan(first.shape[0])
        assert calls[0] == 0
        computed = dask.compute(indices, values, first, second, sims)
        assert calls[0] == 1
        labels = ck.cosine_communities(lazy_x, 0.6, min_size=2)  # computed on the call
        assert isinstance(labels, da.Array)
        assert calls[0] == 2
    expected = brute_negatives(queries, keys, positives, k=4, **FILTERS["all"])
    np.testing.assert_array_equal(computed[0], expected[0])
    np.testing.assert_allclose(computed[1], expected[1], rtol=0, atol=1e-14)
    for got, want in zip(computed[2:], brute_similar_pairs(x, 0.6), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(labels.compute(), brute_communities(x, 0.6, min_size=2))


@pytest.fixture
def stand_in_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyTorch CPU tensors resolve as an eager accelerator: reads are not free."""
    from cosinekit._lib._strategy import mode as mode_module

    resolve = mode_module._torch_mode

    def on_device(arrays: tuple[Any, ...], names: Any) -> Any:
        found = resolve(arrays, names)
        return found._replace(host_reads_free=False) if found.eager else found

    monkeypatch.setattr(mode_module, "_torch_mode", on_device)


@pytest.mark.backends("torch")
def test_mining_on_an_eager_accelerator(stand_in_gpu: None) -> None:
    """Pairs and communities read their sizes there; hard negatives read nothing."""
    import torch

    from cosinekit._lib._strategy.mode import EAGER_DEVICE, execution_mode

    x = collection(30, 3, np.random.default_rng(16))
    tensor = torch.asarray(x)
    assert execution_mode(torch, tensor) == EAGER_DEVICE
    found = [a.numpy() for a in ck.cosine_similar_pairs(tensor, 0.7, chunk_size=8)]
    expected = brute_similar_pairs(x, 0.7)
    assert sorted(zip(found[0].tolist(), found[1].tolist(), strict=True)) == sorted(
        zip(expected[0].tolist(), expected[1].tolist(), strict=True)
    )
    labels = ck.cosine_communities(tensor, 0.7, min_size=2, chunk_size=8)
    np.testing.assert_array_equal(labels.numpy(), brute_communities(x, 0.7, min_size=2))
    queries, keys, positives = mining_data(np.random.default_rng(17))
    bad = positives.copy()
    bad[1, 1] = 99  # not read on a device: a row of padding, as under a trace
    indices, values = ck.mine_hard_negatives(
        torch.asarray(queries), torch.asarray(keys), torch.asarray(bad), k=3, margin=0.01
    )
    reference_indices, reference_values = brute_negatives(
        queries, keys, positives, k=3, margin=0.01
    )
    reference_indices[1], reference_values[1] = -1, np.nan
    np.testing.assert_array_equal(indices.numpy(), reference_indices)
    np.testing.assert_allclose(values.numpy(), reference_values, rtol=0, atol=1e-14)


@pytest.mark.backends("numpy", "torch", "dask", "array_api_strict")
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 14),
    d=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_property_mining_against_brute_force(
    xp: ModuleType, n: int, d: int, seed: int, data: st.DataObject
) -> None:
    """Axis keys (exact ties at 1, 0, -1), zero rows, several positives, any filters."""
    rng = np.random.default_rng(seed)
    x = axis_keys(n, d, rng)
    chunk_size = data.draw(st.one_of(st.none(), st.integers(1, n + 1)), label="chunk_size")
    threshold = data.draw(st.sampled_from([-1.0, -0.3, 0.0, 0.5, 1.0]), label="threshold")
    check_similar_pairs(xp, x, threshold, exact_ties=True, chunk_size=chunk_size)
    min_size = data.draw(st.integers(1, 4), label="min_size")
    check_communities(xp, x, threshold, min_size, chunk_size=chunk_size)
    queries = rng.standard_normal((3, d))
    positives = rng.integers(-1, n, size=(3, 2))
    k = data.draw(st.integers(1, n), label="k")
    low = data.draw(st.integers(0, n), label="lo")
    filters = {
        "rank_range": data.draw(st.sampled_from([None, (low, low + 1 + n // 2)]), label="ranks"),
        "max_similarity": data.draw(st.sampled_from([None, 0.3]), label="max_similarity"),
        "margin": data.draw(st.sampled_from([None, 0.2]), label="margin"),
        "relative_margin": data.draw(st.sampled_from([None, 0.5]), label="relative_margin"),
    }
    check_negatives(xp, queries, x, positives, k, chunk_size=chunk_size, **filters)
