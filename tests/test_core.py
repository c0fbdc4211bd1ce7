"""The core contract of `cosine_similarity`, `cosine_distance` and `l2_normalize`.

Every value is checked against an independent reference: PyTorch's
``cosine_similarity`` and ``normalize``, SciPy's ``distance.cosine`` row by
row, or float64 NumPy math.
"""

from __future__ import annotations

import re
import types
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import Backend, asarray, to_numpy, tolerance, xp_assert_close, xp_assert_equal

ROW_FUNCTIONS = [ck.cosine_similarity, ck.cosine_distance]
AXES_3D = [0, 1, 2, -1, -2]


def _random(shape: tuple[int, ...], seed: int, dtype: Any = np.float64) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _cosine64(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cosine similarity in float64 NumPy, broadcasting first."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return np.sum(a * b, axis=axis) / (np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis))


def _atol(dtype_name: str) -> float:
    """Absolute slack for results near 0, where a relative bound means nothing."""
    return tolerance(dtype_name) / 10


def _torch() -> ModuleType:
    return pytest.importorskip("torch", reason="torch is the reference implementation")


# -- public names -------------------------------------------------------------


# Every function of the contract (API.md).
CONTRACT_FUNCTIONS = {
    "l2_normalize",
    "cosine_similarity",
    "cosine_distance",
    "angular_distance",
    "cosine_distance_loss",
    "cosine_embedding_loss",
    "pairwise_cosine_similarity",
    "pairwise_cosine_distance",
    "cosine_topk",
    "cosine_range_search",
    "info_nce_loss",
    "ntxent_loss",
    "cosent_loss",
    "cosine_triplet_loss",
}


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(ck).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert len(ck.__all__) == len(set(ck.__all__))
    assert set(ck.__all__) == CONTRACT_FUNCTIONS | {"__version__"}
    assert public == CONTRACT_FUNCTIONS


def test_the_capability_table_lists_every_public_function() -> None:
    # The contract tests take their function lists from this table.
    from cosinekit._lib._capabilities import CAPABILITIES

    top_level = {name for name, found in CAPABILITIES.items() if found.module == "cosinekit"}
    assert top_level == set(ck.__all__) - {"__version__"}
    for name, found in CAPABILITIES.items():
        assert set(found.differentiable) <= set(found.arrays), name


def test_every_name_in_all_is_importable() -> None:
    namespace: dict[str, Any] = {}
    exec("from cosinekit import *", namespace)
    for name in ck.__all__:
        assert getattr(ck, name) is not None
        if name != "__version__":
            assert callable(namespace[name])


def test_version() -> None:
    assert isinstance(ck.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", ck.__version__)


# -- values against PyTorch, SciPy and float64 NumPy --------------------------


@pytest.mark.parametrize("axis", AXES_3D)
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_cosine_similarity_matches_torch(xp: ModuleType, axis: int, dtype_name: str) -> None:
    torch = _torch()
    a = _random((4, 3, 5), seed=1, dtype=dtype_name)
    b = _random((4, 3, 5), seed=2, dtype=dtype_name)
    expected = torch.nn.functional.cosine_similarity(
        torch.from_numpy(a).double(), torch.from_numpy(b).double(), dim=axis
    ).numpy()
    dtype = getattr(xp, dtype_name)
    result = ck.cosine_similarity(asarray(xp, a), asarray(xp, b), axis=axis)
    xp_assert_close(
        result, expected, xp=xp, dtype=dtype, rtol=tolerance(dtype_name), atol=_atol(dtype_name)
    )


@pytest.mark.parametrize("axis", AXES_3D)
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_l2_normalize_matches_torch(xp: ModuleType, axis: int, dtype_name: str) -> None:
    torch = _torch()
    a = _random((4, 3, 5), seed=3, dtype=dtype_name)
    expected = torch.nn.functional.normalize(torch.from_numpy(a).double(), p=2.0, dim=axis)
    dtype = getattr(xp, dtype_name)
    result = ck.l2_normalize(asarray(xp, a), axis=axis)
    xp_assert_close(
        result,
        expected.numpy(),
        xp=xp,
        dtype=dtype,
        rtol=tolerance(dtype_name),
        atol=_atol(dtype_name),
    )


@pytest.mark.parametrize("keepdims", [False, True])
def test_cosine_distance_matches_scipy_row_by_row(xp: ModuleType, keepdims: bool) -> None:
    from scipy.spatial import distance

    a, b = _random((6, 4), seed=4), _random((6, 4), seed=5)
    b[2] = 3.0 * a[2]  # parallel: distance 0
    b[3] = -0.5 * a[3]  # opposite: distance 2
    rows = np.array([distance.cosine(u, v) for u, v in zip(a, b, strict=True)])
    columns = np.array([distance.cosine(u, v) for u, v in zip(a.T, b.T, strict=True)])
    x1, x2 = asarray(xp, a), asarray(xp, b)
    by_row = ck.cosine_distance(x1, x2, axis=-1, keepdims=keepdims)
    by_column = ck.cosine_distance(x1, x2, axis=0, keepdims=keepdims)
    if keepdims:
        rows, columns = rows[:, np.newaxis], columns[np.newaxis, :]
    xp_assert_close(by_row, rows, xp=xp, dtype=xp.float64, rtol=1e-13, atol=1e-15)
    xp_assert_close(by_column, columns, xp=xp, dtype=xp.float64, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_2d_axes_match_float64_math(xp: ModuleType, axis: int) -> None:
    a, b = _random((5, 4), seed=6), _random((5, 4), seed=7)
    x1, x2 = asarray(xp, a), asarray(xp, b)
    expected = _cosine64(a, b, axis=axis)
    xp_assert_close(ck.cosine_similarity(x1, x2, axis=axis), expected, xp=xp, dtype=xp.float64)
    xp_assert_close(
        ck.cosine_distance(x1, x2, axis=axis), 1 - expected, xp=xp, dtype=xp.float64, atol=1e-15
    )
    unit = a / np.linalg.norm(a, axis=axis, keepdims=True)
    xp_assert_close(ck.l2_normalize(x1, axis=axis), unit, xp=xp, dtype=xp.float64, atol=1e-15)


@pytest.mark.parametrize("axis", AXES_3D)
def test_keepdims_keeps_the_axis_with_size_one(xp: ModuleType, axis: int) -> None:
    a, b = _random((4, 3, 5), seed=8), _random((4, 3, 5), seed=9)
    x1, x2 = asarray(xp, a), asarray(xp, b)
    expected = np.expand_dims(_cosine64(a, b, axis=axis), axis)
    similarity = ck.cosine_similarity(x1, x2, axis=axis, keepdims=True)
    distance = ck.cosine_distance(x1, x2, axis=axis, keepdims=True)
    xp_assert_close(similarity, expected, xp=xp, dtype=xp.float64, atol=1e-15)
    xp_assert_close(distance, 1 - expected, xp=xp, dtype=xp.float64, atol=1e-15)


# -- broadcasting -------------------------------------------------------------


def test_batch_dimensions_broadcast(xp: ModuleType) -> None:
    a, b = _random((4, 1, 5), seed=10), _random((3, 5), seed=11)
    expected = _cosine64(a, b)
    assert expected.shape == (4, 3)
    for x1, x2 in ((a, b), (b, a)):
        result = ck.cosine_similarity(asarray(xp, x1), asarray(xp, x2))
        xp_assert_close(result, expected, xp=xp, dtype=xp.float64, atol=1e-15)


def test_broadcast_along_axis_zero(xp: ModuleType) -> None:
    a, b = _random((5, 1), seed=12), _random((5, 3), seed=13)
    expected = _cosine64(a, b, axis=0)
    result = ck.cosine_distance(asarray(xp, a), asarray(xp, b), axis=0)
    xp_assert_close(result, 1 - expected, xp=xp, dtype=xp.float64, atol=1e-15)


def test_feature_axis_of_size_one_counts_d_times(xp: ModuleType) -> None:
    from scipy.spatial import distance

    # Broadcast before the norm: [[2]] means [2, 2, 2], not a vector of norm 2.
    expected = distance.cosine([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert expected == pytest.approx(1 - 12 / np.sqrt(12 * 14), rel=1e-15)
    short, long = asarray(xp, np.array([[2.0]])), asarray(xp, np.array([[1.0, 2.0, 3.0]]))
    for x1, x2 in ((short, long), (long, short)):
        xp_assert_close(
            ck.cosine_distance(x1, x2), [expected], xp=xp, dtype=xp.float64, rtol=1e-14
        )
        xp_assert_close(
            ck.cosine_similarity(x1, x2), [1 - expected], xp=xp, dtype=xp.float64, rtol=1e-14
        )


# -- dtypes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "promoted"),
    [
        ("float32", "float32", "float32"),
        ("float64", "float64", "float64"),
        ("float32", "float64", "float64"),
        ("float64", "float32", "float64"),
    ],
)
@pytest.mark.parametrize("function", ROW_FUNCTIONS, ids=lambda f: f.__name__)
def test_real_floating_dtypes_promote(
    xp: ModuleType, function: Callable[..., Any], first: str, second: str, promoted: str
) -> None:
    a = _random((3, 4), seed=14, dtype=first)
    b = _random((3, 4), seed=15, dtype=second)
    expected = _cosine64(a, b)
    if function is ck.cosine_distance:
        expected = 1 - expected
    dtype = getattr(xp, promoted)
    result = function(asarray(xp, a), asarray(xp, b))
    xp_assert_close(
        result, expected, xp=xp, dtype=dtype, rtol=tolerance(promoted), atol=_atol(promoted)
    )


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_l2_normalize_keeps_floating_dtype(xp: ModuleType, dtype_name: str) -> None:
    a = _random((3, 4), seed=16, dtype=dtype_name)
    dtype = getattr(xp, dtype_name)
    expected = a.astype(np.float64) / np.linalg.norm(a.astype(np.float64), axis=-1, keepdims=True)
    xp_assert_close(
        ck.l2_normalize(asarray(xp, a)),
        expected,
        xp=xp,
        dtype=dtype,
        rtol=tolerance(dtype_name),
        atol=_atol(dtype_name),
    )


def _default_float(library: Backend) -> str:
    # PyTorch's default is float32; the others (JAX with x64 on) use float64.
    return "float32" if library is Backend.TORCH else "float64"


@pytest.mark.parametrize("int_dtype", ["int32", "int64", "bool"])
def test_integer_and_bool_inputs_give_default_float(
    xp: ModuleType, library: Backend, int_dtype: str
) -> None:
    a = np.array([[1, 2, 3], [0, 1, 1], [4, 0, 2]]).astype(int_dtype)
    b = np.array([[3, 2, 1], [1, 1, 1], [0, 5, 1]]).astype(int_dtype)
    x1, x2 = asarray(xp, a, getattr(xp, int_dtype)), asarray(xp, b, getattr(xp, int_dtype))
    dtype_name = _default_float(library)
    dtype = getattr(xp, dtype_name)
    expected = _cosine64(a, b)
    rtol, atol = tolerance(dtype_name), _atol(dtype_name)
    xp_assert_close(ck.cosine_similarity(x1, x2), expected, xp=xp, dtype=dtype, rtol=rtol)
    xp_assert_close(
        ck.cosine_distance(x1, x2), 1 - expected, xp=xp, dtype=dtype, rtol=rtol, atol=atol
    )
    unit = a / np.linalg.norm(a.astype(np.float64), axis=-1, keepdims=True)
    xp_assert_close(ck.l2_normalize(x1), unit, xp=xp, dtype=dtype, rtol=rtol, atol=atol)


# Values whose squares overflow float16 (max 65504): the sums need float32.
HALF_A = [[300.0, 400.0], [1000.0, -2000.0], [30000.0, 40000.0], [-512.0, 256.0]]
HALF_B = [[400.0, 300.0], [3000.0, 1000.0], [-40000.0, 30000.0], [1024.0, -512.0]]


def _check_half_precision(xp: ModuleType, dtype: Any, rtol: float) -> None:
    x1, x2 = asarray(xp, HALF_A, dtype), asarray(xp, HALF_B, dtype)
    a, b = np.array(HALF_A), np.array(HALF_B)  # exactly representable in float16
    expected = _cosine64(a, b)
    xp_assert_close(
        ck.cosine_similarity(x1, x2), expected, xp=xp, dtype=dtype, rtol=rtol, atol=rtol
    )
    xp_assert_close(
        ck.cosine_distance(x1, x2), 1 - expected, xp=xp, dtype=dtype, rtol=rtol, atol=rtol
    )
    unit = a / np.linalg.norm(a, axis=-1, keepdims=True)
    xp_assert_close(ck.l2_normalize(x1), unit, xp=xp, dtype=dtype, rtol=rtol, atol=rtol)


def test_float16_stays_float16_without_overflow(xp: ModuleType, library: Backend) -> None:
    # Dask arrays hold NumPy dtypes; its array-API namespace just lacks the name.
    dtype = np.float16 if library is Backend.DASK else getattr(xp, "float16", None)
    if dtype is None:
        pytest.skip(f"{library.value} has no float16")
    _check_half_precision(xp, dtype, tolerance("float16"))


def test_bfloat16_stays_bfloat16(xp: ModuleType, library: Backend) -> None:
    if library is Backend.TORCH:
        import torch

        dtype = torch.bfloat16
    elif library is Backend.JAX:
        dtype = xp.bfloat16
    else:
        pytest.skip(f"{library.value} has no bfloat16")
    _check_half_precision(xp, dtype, tolerance("bfloat16"))


# -- zero vectors, NaN and inf ------------------------------------------------


def test_zero_vectors(xp: ModuleType) -> None:
    a = asarray(
        xp, np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [0.0, -0.0, 0.0]])
    )
    b = asarray(
        xp, np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        similarity = ck.cosine_similarity(a, b)
        distance = ck.cosine_distance(a, b)
        unit = ck.l2_normalize(a)
    xp_assert_equal(similarity, np.zeros(4), xp=xp, dtype=xp.float64)
    xp_assert_equal(distance, np.ones(4), xp=xp, dtype=xp.float64)
    s3 = 1 / np.sqrt(14)
    xp_assert_close(
        unit,
        [[0.0, 0.0, 0.0], [s3, 2 * s3, 3 * s3], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        xp=xp,
        dtype=xp.float64,
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_poisons_only_its_row(xp: ModuleType, bad: float) -> None:
    a, b = _random((5, 3), seed=17), _random((5, 3), seed=18)
    a[1, 0] = bad
    b[3, 2] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        similarity = ck.cosine_similarity(asarray(xp, a), asarray(xp, b))
        distance = ck.cosine_distance(asarray(xp, a), asarray(xp, b))
        unit = ck.l2_normalize(asarray(xp, a))
    clean = np.array([0, 2, 4])
    expected = np.full(5, np.nan)
    expected[clean] = _cosine64(a[clean], b[clean])
    xp_assert_close(similarity, expected, xp=xp, dtype=xp.float64, atol=1e-15)
    xp_assert_close(distance, 1 - expected, xp=xp, dtype=xp.float64, atol=1e-15)
    expected_unit = np.full_like(a, np.nan)
    expected_unit[clean] = a[clean] / np.linalg.norm(a[clean], axis=-1, keepdims=True)
    expected_unit[3] = a[3] / np.linalg.norm(a[3])  # the whole vector, not just the bad element
    xp_assert_close(unit, expected_unit, xp=xp, dtype=xp.float64, atol=1e-15)


# -- empty arrays -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 3), (2, 0, 3)])
def test_empty_batch_gives_empty_result(xp: ModuleType, shape: tuple[int, ...]) -> None:
    x = asarray(xp, np.zeros(shape))
    batch = shape[:-1]
    for function in ROW_FUNCTIONS:
        result = function(x, x)
        xp_assert_equal(result, np.zeros(batch), xp=xp, dtype=xp.float64)
        kept = function(x, x, keepdims=True)
        xp_assert_equal(kept, np.zeros((*batch, 1)), xp=xp, dtype=xp.float64)
    xp_assert_equal(ck.l2_normalize(x), np.zeros(shape), xp=xp, dtype=xp.float64)


def test_feature_axis_of_size_zero_means_zero_vectors(xp: ModuleType) -> None:
    x = asarray(xp, np.zeros((2, 0)))
    xp_assert_equal(ck.cosine_similarity(x, x), np.zeros(2), xp=xp, dtype=xp.float64)
    xp_assert_equal(ck.cosine_distance(x, x), np.ones(2), xp=xp, dtype=xp.float64)
    xp_assert_equal(ck.l2_normalize(x), np.zeros((2, 0)), xp=xp, dtype=xp.float64)
    columns = asarray(xp, np.zeros((0, 3)))
    xp_assert_equal(
        ck.cosine_distance(columns, columns, axis=0), np.ones(3), xp=xp, dtype=xp.float64
    )


# -- inputs are left alone ----------------------------------------------------


def _awkward_rows() -> tuple[np.ndarray, np.ndarray]:
    """Rows that take every path: ordinary, zero, huge, tiny and NaN."""
    a = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1e300, -1e300, 1e299], [5e-324, 0.0, 1e-320]])
    b = np.array([[3.0, 2.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [np.nan, 1.0, 1.0]])
    return a, b


def test_inputs_are_not_modified(xp: ModuleType) -> None:
    a, b = _awkward_rows()
    x1, x2 = asarray(xp, a), asarray(xp, b)
    ck.cosine_similarity(x1, x2)
    ck.cosine_distance(x1, x2, eps=1e-8)
    ck.l2_normalize(x1)
    ck.l2_normalize(x2, eps=1e-8)
    ck.cosine_distance_loss(x1, x2, reduction="none")
    ck.cosine_embedding_loss(x1, x2, asarray(xp, np.array([1.0, -1.0, 1.0, -1.0])))
    np.testing.assert_array_equal(to_numpy(x1), a)
    np.testing.assert_array_equal(to_numpy(x2), b)


def test_read_only_numpy_arrays_are_accepted(library: Backend) -> None:
    if library is not Backend.NUMPY:
        pytest.skip("read-only flags are a NumPy feature")
    a, b = _awkward_rows()
    a.setflags(write=False)
    b.setflags(write=False)
    similarity = ck.cosine_similarity(a, b)
    assert np.isnan(similarity[3])
    np.testing.assert_allclose(similarity[:3], [10 / 14, 0.0, 1 / np.sqrt(603)], rtol=1e-15)
    # Subnormals as exact multiples of the smallest one, in normal range.
    subnormal_steps = a[3] / 5e-324
    np.testing.assert_allclose(
        ck.l2_normalize(a)[[0, 3]],
        [[1, 2, 3] / np.sqrt(14), subnormal_steps / np.linalg.norm(subnormal_steps)],
        rtol=1e-15,
    )


# -- bounds -------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_results_are_bounded(xp: ModuleType, dtype_name: str) -> None:
    # Parallel and opposite vectors, where rounding lands on either side of
    # +-1 without a clip.
    base = _random((200, 7), seed=19, dtype=dtype_name)
    factors = np.random.default_rng(20).choice([-7.0, -1.0, -0.3, 0.3, 1.0, 3.0], size=(200, 1))
    other = (base * factors).astype(dtype_name)
    x1, x2 = asarray(xp, base), asarray(xp, other)
    similarity = to_numpy(ck.cosine_similarity(x1, x2))
    distance = to_numpy(ck.cosine_distance(x1, x2))
    assert np.all(np.abs(similarity) <= 1)
    assert np.all((distance >= 0) & (distance <= 2))
    np.testing.assert_allclose(similarity, np.sign(factors[:, 0]), rtol=tolerance(dtype_name))
    np.testing.assert_allclose(distance, 1 - np.sign(factors[:, 0]), atol=tolerance(dtype_name))
