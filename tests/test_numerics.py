"""Hand-written numerical edge cases, each against an exact or float64 reference.

References are computed with mpmath at 60 significant digits from the exact
binary values of the inputs (``mpmath.mpf(float)`` is exact), so they are the
true cosine of the vectors the backend received. Tolerances per result dtype
are ``_support.tolerance``: float64 1e-13, float32 1e-5, float16 1e-3,
bfloat16 8e-3 (relative; absolute for values near 0).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import mpmath
import numpy as np
import pytest

import cosinekit as ck
from _support import Backend, asarray, to_numpy, tolerance, xp_assert_close

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).smallest_subnormal)
F64_TINY = float(np.finfo(np.float64).smallest_subnormal)


def mp_cosine(u: Any, v: Any) -> float:
    """The true cosine of the float vectors ``u`` and ``v`` (0 for a zero vector)."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(v))):
        return float("nan")
    with mpmath.workdps(60):
        a = [mpmath.mpf(float(t)) for t in u]
        b = [mpmath.mpf(float(t)) for t in v]
        n1 = mpmath.sqrt(mpmath.fsum(t * t for t in a))
        n2 = mpmath.sqrt(mpmath.fsum(t * t for t in b))
        if n1 == 0 or n2 == 0:
            return 0.0
        return float(mpmath.fsum(s * t for s, t in zip(a, b, strict=True)) / (n1 * n2))


def mp_angle(u: Any, v: Any) -> float:
    """The true angle between ``u`` and ``v`` over pi (0.5 for a zero vector)."""
    with mpmath.workdps(60):
        a = [mpmath.mpf(float(t)) for t in np.asarray(u, np.float64)]
        b = [mpmath.mpf(float(t)) for t in np.asarray(v, np.float64)]
        n1 = mpmath.sqrt(mpmath.fsum(t * t for t in a))
        n2 = mpmath.sqrt(mpmath.fsum(t * t for t in b))
        if n1 == 0 or n2 == 0:
            return 0.5
        # atan2 of |u/|u| - v/|v|| and |u/|u| + v/|v||, at 60 digits, is exact
        # for parallel and opposite vectors too.
        minus = mpmath.sqrt(mpmath.fsum((s / n1 - t / n2) ** 2 for s, t in zip(a, b, strict=True)))
        plus = mpmath.sqrt(mpmath.fsum((s / n1 + t / n2) ** 2 for s, t in zip(a, b, strict=True)))
        return float(2 * mpmath.atan2(minus, plus) / mpmath.pi)


def mp_rows(x1: Any, x2: Any) -> np.ndarray:
    x1, x2 = np.broadcast_arrays(np.asarray(x1, np.float64), np.asarray(x2, np.float64))
    return np.array([mp_cosine(u, v) for u, v in zip(x1, x2, strict=True)])


def half_dtype(library: Backend, xp: ModuleType, name: str) -> Any:
    """``float16`` or ``bfloat16`` of the backend (see `HALF_DTYPES` for where they exist)."""
    if library in (Backend.NUMPY, Backend.DASK):
        return np.float16
    return getattr(xp, name)


# Dask arrays take NumPy's float16; array-api-strict has no half precision (and
# CuPy's is not tested here).
HALF_DTYPES = [
    pytest.param("float16", marks=pytest.mark.backends("numpy", "dask", "torch", "jax")),
    pytest.param("bfloat16", marks=pytest.mark.backends("torch", "jax")),
]


def flushes_subnormals(library: Backend) -> bool:
    """XLA on the CPU treats subnormal inputs as zero (documented in docs/numerics.md)."""
    return library is Backend.JAX


# Rows chosen so the cosine is a simple fraction: (3, 4) . (4, 3) / 25 = 24/25.
U = [3.0, 4.0, 0.0]
V = [4.0, 3.0, 0.0]


@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e150, 1e300])
def test_float64_extreme_magnitudes(xp: ModuleType, scale: float) -> None:
    x1 = np.array([U, [1.0, -2.0, 3.0]]) * scale
    x2 = np.array([V, [-2.0, 0.5, 1.5]]) * scale
    # One input at the other extreme too: scale invariance per vector.
    x2[1] = x2[1] / scale / scale
    result = ck.cosine_similarity(asarray(xp, x1), asarray(xp, x2))
    tol = tolerance("float64")
    xp_assert_close(result, mp_rows(x1, x2), xp=xp, dtype=xp.float64, rtol=tol, atol=tol)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e30, F32_MAX / 5])
def test_float32_extreme_magnitudes(xp: ModuleType, scale: float) -> None:
    x1 = (np.array([U, [1.0, -2.0, 3.0]]) * scale).astype(np.float32)
    x2 = (np.array([V, [-2.0, 0.5, 1.5]]) * scale).astype(np.float32)
    result = ck.cosine_similarity(asarray(xp, x1), asarray(xp, x2))
    tol = tolerance("float32")
    xp_assert_close(result, mp_rows(x1, x2), xp=xp, dtype=xp.float32, rtol=tol, atol=tol)


def test_largest_finite_float32(xp: ModuleType) -> None:
    # Every element is the largest float32: the sum of squares is ~3 * 1.2e77.
    x1 = np.full((2, 3), F32_MAX, dtype=np.float32)
    x2 = np.array([[F32_MAX, F32_MAX, F32_MAX], [F32_MAX, -F32_MAX, 0.0]], dtype=np.float32)
    result = ck.cosine_similarity(asarray(xp, x1), asarray(xp, x2))
    xp_assert_close(result, [1.0, 0.0], xp=xp, dtype=xp.float32, rtol=0, atol=1e-7)
    distance = ck.cosine_distance(asarray(xp, x1), asarray(xp, x2))
    xp_assert_close(distance, [0.0, 1.0], xp=xp, dtype=xp.float32, rtol=0, atol=1e-7)


def test_largest_finite_float64(xp: ModuleType) -> None:
    big = float(np.finfo(np.float64).max)
    x1 = np.array([[big, big], [big, 0.0]])
    x2 = np.array([[big, -big], [big, big]])
    result = ck.cosine_similarity(asarray(xp, x1), asarray(xp, x2))
    xp_assert_close(result, [0.0, np.sqrt(0.5)], xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", HALF_DTYPES)
@pytest.mark.parametrize("magnitude", [1.0, 300.0, 4096.0, 60000.0])
def test_half_precision_large_values(
    xp: ModuleType, library: Backend, name: str, magnitude: float
) -> None:
    dtype = half_dtype(library, xp, name)
    # 60000**2 overflows float16 (max 65504): only computing in float32 saves it.
    x1 = np.array([[3.0, 4.0], [1.0, 1.0], [1.0, -0.5]]) * magnitude / 4
    x2 = np.array([[4.0, 3.0], [1.0, -1.0], [1.0, -0.5]]) * magnitude / 4
    a, b = asarray(xp, x1, dtype=dtype), asarray(xp, x2, dtype=dtype)
    # The reference is the true cosine of the half-precision values received.
    expected = mp_rows(to_numpy(a), to_numpy(b))
    result = ck.cosine_similarity(a, b)
    xp_assert_close(result, expected, xp=xp, dtype=dtype, rtol=tolerance(name), atol=1e-3)
    assert np.all(np.isfinite(to_numpy(result)))
    unit = ck.l2_normalize(a)
    norms = np.linalg.norm(to_numpy(unit).astype(np.float64), axis=-1)
    np.testing.assert_allclose(norms, 1.0, rtol=2 * tolerance(name))


@pytest.mark.backends("torch")
def test_torch_float16_overflows_where_cosinekit_does_not(xp: ModuleType) -> None:
    import torch

    a = asarray(xp, [60000.0, 30000.0], dtype=torch.float16)
    b = asarray(xp, [30000.0, 60000.0], dtype=torch.float16)
    # PyTorch squares in float16: 60000**2 is inf and the result collapses.
    peer = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    ours = float(ck.cosine_similarity(a, b))
    assert abs(peer - 0.8) > 0.5
    assert ours == pytest.approx(0.8, rel=tolerance("float16"))


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_subnormal_vectors(xp: ModuleType, library: Backend, dtype_name: str) -> None:
    dtype = getattr(xp, dtype_name)
    tiny = F32_TINY if dtype_name == "float32" else F64_TINY
    # Integer multiples of the smallest subnormal are exact; the cosine of
    # (3, 4, 1) and (4, 3, 2) is 26 / (sqrt(26) sqrt(29)) whatever the scale.
    x1 = np.array([[3.0, 4.0, 1.0], [1.0, 0.0, 0.0]]) * tiny
    x2 = np.array([[4.0, 3.0, 2.0], [5.0, 0.0, 0.0]]) * tiny
    a, b = asarray(xp, x1, dtype=dtype), asarray(xp, x2, dtype=dtype)
    exact = np.array([26 / np.sqrt(26 * 29), 1.0])
    if flushes_subnormals(library):
        # XLA flushes subnormals to zero on the CPU: these are zero vectors.
        xp_assert_close(ck.cosine_similarity(a, b), [0.0, 0.0], xp=xp, dtype=dtype, rtol=0)
        xp_assert_close(ck.cosine_distance(a, b), [1.0, 1.0], xp=xp, dtype=dtype, rtol=0)
        xp_assert_close(ck.angular_distance(a, b), [0.5, 0.5], xp=xp, dtype=dtype, rtol=0)
        xp_assert_close(ck.l2_normalize(a), np.zeros((2, 3)), xp=xp, dtype=dtype, rtol=0)
        return
    rtol = tolerance(dtype_name)
    xp_assert_close(ck.cosine_similarity(a, b), exact, xp=xp, dtype=dtype, rtol=rtol)
    unit = ck.l2_normalize(a)
    expected_unit = np.array([[3.0, 4.0, 1.0], [1.0, 0.0, 0.0]])
    expected_unit /= np.linalg.norm(expected_unit, axis=-1, keepdims=True)
    xp_assert_close(unit, expected_unit, xp=xp, dtype=dtype, rtol=rtol, atol=rtol)


def test_mixed_magnitudes_in_one_batch(xp: ModuleType) -> None:
    # Ordinary rows take the fast path; the others are repaired (eager) or
    # everything is rescaled (lazy): each row must come out right either way.
    x1 = np.array(
        [
            [1.0, 2.0, 3.0],
            [1e-300, 2e-300, -3e-300],
            [5.0, -1.0, 2.0],
            [1e300, -1e300, 2e300],
            [0.0, 0.0, 0.0],
            [np.nan, 1.0, 1.0],
            [np.inf, 1.0, 1.0],
            [1e-300, 1.0, 1e300],
            [2.0, 0.5, -1.0],
        ]
    )
    x2 = np.array(
        [
            [3.0, 2.0, 1.0],
            [3e-300, -1e-300, 1e-300],
            [1.0, 1.0, 1.0],
            [1.0, 2.0, 3.0],
            [1.0, 2.0, 3.0],
            [1.0, 1.0, 1.0],
            [1.0, 1.0, 1.0],
            [1.0, 1.0, 1.0],
            [2e-300, 0.5e-300, -1e-300],
        ]
    )
    expected = mp_rows(x1, x2)
    assert np.isnan(expected[5:7]).all()
    a, b = asarray(xp, x1), asarray(xp, x2)
    tol = tolerance("float64")
    similarity, distance = ck.cosine_similarity(a, b), ck.cosine_distance(a, b)
    xp_assert_close(similarity, expected, xp=xp, dtype=xp.float64, rtol=tol, atol=tol)
    xp_assert_close(distance, 1 - expected, xp=xp, dtype=xp.float64, rtol=tol, atol=tol)
    # The last row is exactly parallel: its angle is 0, which arccos gets
    # right only by luck; the true angle of every row is computed in mpmath.
    angle = np.array(
        [
            np.nan if np.isnan(c) else mp_angle(u, v)
            for c, u, v in zip(expected, x1, x2, strict=True)
        ]
    )
    xp_assert_close(ck.angular_distance(a, b), angle, xp=xp, dtype=xp.float64, rtol=tol, atol=tol)


def test_nan_and_inf_stay_in_their_row(xp: ModuleType) -> None:
    x1 = np.array([[1.0, 2.0], [np.nan, 0.0], [-np.inf, 1.0], [3.0, 4.0], [0.0, 0.0]])
    x2 = np.array([[2.0, 1.0], [1.0, 1.0], [1.0, 1.0], [4.0, 3.0], [np.nan, 1.0]])
    a, b = asarray(xp, x1), asarray(xp, x2)
    expected = np.array([0.8, np.nan, np.nan, 0.96, np.nan])
    tol = tolerance("float64")
    xp_assert_close(ck.cosine_similarity(a, b), expected, xp=xp, dtype=xp.float64, rtol=tol)
    unit = to_numpy(ck.l2_normalize(a))
    assert np.isnan(unit[1:3]).all()
    np.testing.assert_allclose(unit[[0, 3, 4]], [[1 / 5**0.5, 2 / 5**0.5], [0.6, 0.8], [0, 0]])


@pytest.mark.parametrize(
    ("scale", "dtype_name"),
    [(1e-300, "float64"), (1e300, "float64"), (1e-30, "float32"), (1e30, "float32")],
)
def test_l2_normalize_unit_norm_at_extremes(xp: ModuleType, scale: float, dtype_name: str) -> None:
    dtype = getattr(xp, dtype_name)
    base = np.array([[1.0, -2.0, 2.0], [3.0, 0.0, 4.0], [0.0, 0.0, 0.0]])
    x = (base * scale).astype(dtype_name)
    unit = ck.l2_normalize(asarray(xp, x))
    norms = np.linalg.norm(base, axis=-1, keepdims=True)
    expected = np.divide(base, norms, out=np.zeros_like(base), where=norms != 0)
    tol = tolerance(dtype_name)
    xp_assert_close(unit, expected, xp=xp, dtype=dtype, rtol=tol, atol=tol)


def test_mixed_dtypes_promote(xp: ModuleType) -> None:
    x1 = np.array([[0.1, 0.2, 0.7]], dtype=np.float32)
    x2 = np.array([[0.3, -0.1, 0.5]])
    result = ck.cosine_similarity(asarray(xp, x1, dtype=xp.float32), asarray(xp, x2))
    # float32 meets float64: computed on the float32 values, in float64.
    xp_assert_close(result, mp_rows(x1, x2), xp=xp, dtype=xp.float64, rtol=tolerance("float64"))


def test_integer_inputs_become_default_float(xp: ModuleType) -> None:
    a = asarray(xp, [[3, 4], [0, 0]])
    b = asarray(xp, [[4, 3], [1, 2]])
    default = xp.__array_namespace_info__().default_dtypes()["real floating"]
    result = ck.cosine_similarity(a, b)
    xp_assert_close(result, [0.96, 0.0], xp=xp, dtype=default, rtol=tolerance(default))


def _clamped_reference(x1: np.ndarray, x2: np.ndarray, eps: float) -> np.ndarray:
    """PyTorch's documented semantics: ``x1.x2 / (max(|x1|, eps) max(|x2|, eps))``."""
    n1 = np.maximum(np.linalg.norm(x1, axis=-1), eps)
    n2 = np.maximum(np.linalg.norm(x2, axis=-1), eps)
    return np.sum(x1 * x2, axis=-1) / (n1 * n2)


@pytest.mark.parametrize("eps", [1e-8, 1e-3, 0.5])
def test_explicit_eps_clamps_each_norm(xp: ModuleType, eps: float) -> None:
    x1 = np.array([[1e-4, 0.0], [3.0, 4.0], [1e-9, 1e-9], [0.0, 0.0], [0.3, 0.1]])
    x2 = np.array([[1.0, 1.0], [1e-5, 0.0], [2e-9, 1e-9], [1.0, 0.0], [0.2, 0.4]])
    expected = _clamped_reference(x1, x2, eps)
    a, b = asarray(xp, x1), asarray(xp, x2)
    tol = tolerance("float64")
    result = ck.cosine_similarity(a, b, eps=eps)
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=tol, atol=1e-300)
    xp_assert_close(
        ck.cosine_distance(a, b, eps=eps), 1 - expected, xp=xp, dtype=xp.float64, rtol=tol
    )
    angle = np.arccos(expected) / np.pi  # the clamped cosines are well inside (-1, 1)
    clamped = (np.linalg.norm(x1, axis=-1) < eps) | (np.linalg.norm(x2, axis=-1) < eps)
    actual_angle = to_numpy(ck.angular_distance(a, b, eps=eps))
    np.testing.assert_allclose(actual_angle[clamped], angle[clamped], rtol=tol)
    norms = np.maximum(np.linalg.norm(x1, axis=-1, keepdims=True), eps)
    xp_assert_close(ck.l2_normalize(a, eps=eps), x1 / norms, xp=xp, dtype=xp.float64, rtol=tol)


@pytest.mark.backends("torch")
@pytest.mark.parametrize("eps", [1e-8, 1e-3, 0.5])
def test_explicit_eps_matches_torch(xp: ModuleType, eps: float) -> None:
    import torch

    x1 = asarray(xp, [[1e-4, 0.0], [3.0, 4.0], [1e-9, 1e-9], [0.3, 0.1]], dtype=torch.float64)
    x2 = asarray(xp, [[1.0, 1.0], [1e-5, 0.0], [2e-9, 1e-9], [0.2, 0.4]], dtype=torch.float64)
    peer = torch.nn.functional.cosine_similarity(x1, x2, dim=-1, eps=eps)
    torch.testing.assert_close(ck.cosine_similarity(x1, x2, eps=eps), peer, rtol=1e-13, atol=0)
    peer_unit = torch.nn.functional.normalize(x1, dim=-1, eps=eps)
    torch.testing.assert_close(ck.l2_normalize(x1, eps=eps), peer_unit, rtol=1e-13, atol=0)


def test_default_eps_never_clamps_a_nonzero_norm(xp: ModuleType) -> None:
    # eps=None is a floor that only zero norms reach: tiny vectors keep their
    # true cosine, while any fixed eps (PyTorch's 1e-8) would shrink it.
    x1 = np.array([[1e-200, 1e-200], [1e-20, 0.0]])
    x2 = np.array([[1.0, 1.0], [1e-20, 1e-20]])
    a, b = asarray(xp, x1), asarray(xp, x2)
    expected = np.array([1.0, np.sqrt(0.5)])
    tol = tolerance("float64")
    xp_assert_close(ck.cosine_similarity(a, b), expected, xp=xp, dtype=xp.float64, rtol=tol)
    clamped = to_numpy(ck.cosine_similarity(a, b, eps=1e-8))
    np.testing.assert_array_less(np.abs(clamped), 1e-11)


def test_bounds_hold_for_parallel_rows(xp: ModuleType) -> None:
    # Rounding pushes dot / (|x| |x|) above 1 for many vectors with themselves.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 7))
    a = asarray(xp, x)
    similarity = to_numpy(ck.cosine_similarity(a, a))
    squares = np.sum(x * x, axis=-1)
    assert np.any(squares / (np.sqrt(squares) * np.sqrt(squares)) > 1)  # the case is real
    assert np.all(similarity <= 1.0)
    # A few ulp below 1 is rounding (d = 7 terms); above 1 is never allowed.
    assert np.all(similarity >= 1.0 - 8 * np.finfo(np.float64).eps)
    distance = to_numpy(ck.cosine_distance(a, -a))
    assert np.all(distance <= 2.0)
    assert np.all(distance >= 2.0 - 8 * np.finfo(np.float64).eps)
    angle = to_numpy(ck.angular_distance(a, -a))
    assert np.all((angle <= 1.0) & (angle >= 1.0 - 1e-15))
