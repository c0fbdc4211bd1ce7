"""Property tests on every backend: symmetry, scale invariance, bounds, accuracy.

Inputs are drawn as NumPy float64 or float32 arrays over the whole exponent
range (subnormals, values near the largest finite number, zeros) and
converted with ``asarray``. The reference is the cosine of the exact binary
values in mpmath at 60 digits. On JAX, XLA flushes subnormals to zero on the
CPU, so its reference flushes them too (see docs/numerics.md).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import mpmath
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cosinekit as ck
from _support import Backend, asarray, property_settings, to_numpy, tolerance

EXAMPLES = 30


def _elements(dtype: str) -> st.SearchStrategy[float]:
    width = 64 if dtype == "float64" else 32
    return st.floats(allow_nan=False, allow_infinity=False, width=width)


@st.composite
def pairs(draw: st.DrawFn, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray]:
    """Two arrays of shape (n, d), with whole exponent range and some zero rows."""
    n = draw(st.integers(1, 4))
    d = draw(st.integers(1, 5))
    shape = (n, d)
    x1 = draw(hnp.arrays(dtype, shape, elements=_elements(dtype)))
    x2 = draw(hnp.arrays(dtype, shape, elements=_elements(dtype)))
    return x1, x2


def _effective(x: np.ndarray, library: Backend) -> np.ndarray:
    """The values the backend computes with: XLA on the CPU flushes subnormals."""
    if library is not Backend.JAX:
        return x
    return np.where(np.abs(x) < np.finfo(x.dtype).smallest_normal, 0, x).astype(x.dtype)


def _mp_unit(u: np.ndarray) -> list[Any]:
    a = [mpmath.mpf(float(t)) for t in u]
    norm = mpmath.sqrt(mpmath.fsum(t * t for t in a))
    return [t / norm for t in a] if norm != 0 else [mpmath.mpf(0)] * len(a)


def mp_cosine(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    with mpmath.workdps(60):
        return np.array(
            [
                float(mpmath.fsum(s * t for s, t in zip(_mp_unit(u), _mp_unit(v), strict=True)))
                for u, v in zip(x1, x2, strict=True)
            ]
        )


def mp_angle(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Angle over pi, 0.5 where a vector is zero (the contract's convention)."""
    out = []
    with mpmath.workdps(60):
        for u, v in zip(x1, x2, strict=True):
            a, b = _mp_unit(u), _mp_unit(v)
            if not (any(a) and any(b)):
                out.append(0.5)
                continue
            minus = mpmath.sqrt(mpmath.fsum((s - t) ** 2 for s, t in zip(a, b, strict=True)))
            plus = mpmath.sqrt(mpmath.fsum((s + t) ** 2 for s, t in zip(a, b, strict=True)))
            out.append(float(2 * mpmath.atan2(minus, plus) / mpmath.pi))
    return np.array(out)


def _dtype(xp: ModuleType, name: str) -> Any:
    return getattr(xp, name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_similarity_matches_exact_reference(xp: ModuleType, library: Backend, dtype: str) -> None:
    @property_settings(library, EXAMPLES)
    @given(pairs(dtype))
    def check(pair: tuple[np.ndarray, np.ndarray]) -> None:
        x1, x2 = pair
        result = ck.cosine_similarity(asarray(xp, x1), asarray(xp, x2))
        expected = mp_cosine(_effective(x1, library), _effective(x2, library))
        tol = tolerance(dtype)
        assert result.dtype == _dtype(xp, dtype)
        np.testing.assert_allclose(to_numpy(result), expected, rtol=0, atol=tol)

    check()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_angular_distance_matches_exact_reference(
    xp: ModuleType, library: Backend, dtype: str
) -> None:
    @property_settings(library, EXAMPLES)
    @given(pairs(dtype))
    def check(pair: tuple[np.ndarray, np.ndarray]) -> None:
        x1, x2 = pair
        result = ck.angular_distance(asarray(xp, x1), asarray(xp, x2))
        expected = mp_angle(_effective(x1, library), _effective(x2, library))
        np.testing.assert_allclose(to_numpy(result), expected, rtol=0, atol=tolerance(dtype))

    check()


def test_symmetry_and_bounds(xp: ModuleType, library: Backend) -> None:
    @property_settings(library, EXAMPLES)
    @given(pairs("float64"))
    def check(pair: tuple[np.ndarray, np.ndarray]) -> None:
        a, b = (asarray(xp, x) for x in pair)
        s_ab = to_numpy(ck.cosine_similarity(a, b))
        s_ba = to_numpy(ck.cosine_similarity(b, a))
        np.testing.assert_array_equal(s_ab, s_ba)
        assert np.all((s_ab >= -1) & (s_ab <= 1))
        d = to_numpy(ck.cosine_distance(a, b))
        assert np.all((d >= 0) & (d <= 2))
        np.testing.assert_array_equal(d, to_numpy(ck.cosine_distance(b, a)))
        angle = to_numpy(ck.angular_distance(a, b))
        assert np.all((angle >= 0) & (angle <= 1))
        np.testing.assert_array_equal(angle, to_numpy(ck.angular_distance(b, a)))

    check()


def test_scale_invariance_by_powers_of_two(xp: ModuleType, library: Backend) -> None:
    @property_settings(library, EXAMPLES)
    @given(pairs("float64"), st.integers(-1000, 1000), st.integers(-1000, 1000))
    def check(pair: tuple[np.ndarray, np.ndarray], k1: int, k2: int) -> None:
        x1, x2 = pair
        with np.errstate(over="ignore", under="ignore"):
            y1, y2 = np.ldexp(x1, k1), np.ldexp(x2, k2)
        # Only exact scalings: no overflow, no bits lost to underflow.
        assume(np.all(np.isfinite(y1)) and np.all(np.isfinite(y2)))
        assume(np.array_equal(np.ldexp(y1, -k1), x1) and np.array_equal(np.ldexp(y2, -k2), x2))
        assume(np.all(np.abs(y1[y1 != 0]) >= np.finfo(np.float64).smallest_normal))
        assume(np.all(np.abs(y2[y2 != 0]) >= np.finfo(np.float64).smallest_normal))
        assume(np.all(np.abs(x1[x1 != 0]) >= np.finfo(np.float64).smallest_normal))
        assume(np.all(np.abs(x2[x2 != 0]) >= np.finfo(np.float64).smallest_normal))
        before = to_numpy(ck.cosine_similarity(asarray(xp, x1), asarray(xp, x2)))
        after = to_numpy(ck.cosine_similarity(asarray(xp, y1), asarray(xp, y2)))
        # The true cosines are identical; the two may take different paths
        # (fast or rescaled), each within a few ulp.
        np.testing.assert_allclose(after, before, rtol=0, atol=tolerance("float64"))
        unit_before = to_numpy(ck.l2_normalize(asarray(xp, x1)))
        unit_after = to_numpy(ck.l2_normalize(asarray(xp, y1)))
        np.testing.assert_allclose(unit_after, unit_before, rtol=0, atol=tolerance("float64"))

    check()


@st.composite
def triples(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    shape = (draw(st.integers(1, 4)), draw(st.integers(2, 4)))
    elements = st.floats(-1e6, 1e6, allow_nan=False)
    return tuple(draw(hnp.arrays("float64", shape, elements=elements)) for _ in range(3))


def test_angular_triangle_inequality(xp: ModuleType, library: Backend) -> None:
    @property_settings(library, EXAMPLES)
    @given(triples())
    def check(triple: tuple[np.ndarray, ...]) -> None:
        a, b, c = (asarray(xp, x) for x in triple)
        ab = to_numpy(ck.angular_distance(a, b))
        bc = to_numpy(ck.angular_distance(b, c))
        ac = to_numpy(ck.angular_distance(a, c))
        # A zero vector is at 0.5 from everything, which keeps the inequality.
        assert np.all(ac <= ab + bc + 1e-12), (ab, bc, ac)

    check()
