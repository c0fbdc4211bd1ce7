"""Angular distance against exact angles, and feature weights against SciPy and optax."""

from __future__ import annotations

import warnings
from types import ModuleType

import mpmath
import numpy as np
import pytest

import cosinekit as ck
from _support import asarray, to_numpy, tolerance, xp_assert_close


def exact_angle(u: np.ndarray, v: np.ndarray) -> float:
    """Angle between ``u`` and ``v`` over pi, in mpmath at 60 digits."""
    with mpmath.workdps(60):
        a = [mpmath.mpf(float(t)) for t in u]
        b = [mpmath.mpf(float(t)) for t in v]
        dot = mpmath.fsum(s * t for s, t in zip(a, b, strict=True))
        n1 = mpmath.sqrt(mpmath.fsum(t * t for t in a))
        n2 = mpmath.sqrt(mpmath.fsum(t * t for t in b))
        return float(mpmath.acos(dot / (n1 * n2)) / mpmath.pi)


@pytest.mark.parametrize("theta", [1e-8, 1e-6, 1e-3])
def test_nearly_parallel_and_nearly_opposite(xp: ModuleType, theta: float) -> None:
    # (1, 0) against (1, t) and (-1, t): angles atan(t) and pi - atan(t),
    # both exact in mpmath from the float64 inputs.
    x1 = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    x2 = np.array([[1.0, theta], [-1.0, theta], [-3.0, -3.0 * theta]])
    expected = np.array([exact_angle(u, v) for u, v in zip(x1, x2, strict=True)])
    a, b = asarray(xp, x1), asarray(xp, x2)
    result = ck.angular_distance(a, b)
    # Relative accuracy even for the tiny angle of the first row.
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=tolerance("float64"))
    # The formula cosinekit avoids: arccos of the float64 cosine.
    cosine = np.sum(x1 * x2, axis=-1) / (np.linalg.norm(x1, axis=-1) * np.linalg.norm(x2, axis=-1))
    naive = np.arccos(np.clip(cosine, -1, 1)) / np.pi
    if theta <= 1e-6:
        # cos(1e-8) rounds to 1: arccos says 0; at 1e-6 it keeps ~5 digits.
        assert np.max(np.abs(naive - expected) / expected) > 1e-5


def test_nearly_parallel_float32(xp: ModuleType) -> None:
    x1 = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=np.float32)
    x2 = np.array([[1.0, 1e-4, 0.0], [-0.5, -0.5, 1e-3]], dtype=np.float32)
    expected = np.array([exact_angle(u, v) for u, v in zip(x1, x2, strict=True)])
    result = ck.angular_distance(asarray(xp, x1), asarray(xp, x2))
    xp_assert_close(result, expected, xp=xp, dtype=xp.float32, rtol=tolerance("float32"))


@pytest.mark.parametrize(
    ("angle", "x2"),
    [
        (0.0, [2.0, 0.0]),
        (1 / 6, [np.sqrt(3), 1.0]),
        (1 / 4, [1.0, 1.0]),
        (1 / 3, [1.0, np.sqrt(3)]),
        (1 / 2, [0.0, 5.0]),
        (2 / 3, [-1.0, np.sqrt(3)]),
        (3 / 4, [-1.0, 1.0]),
        (1.0, [-7.0, 0.0]),
    ],
)
def test_known_angles(xp: ModuleType, angle: float, x2: list[float]) -> None:
    result = ck.angular_distance(asarray(xp, np.array([[1.0, 0.0]])), asarray(xp, np.array([x2])))
    # sqrt(3) is rounded: its error moves the angle by less than 1e-16.
    xp_assert_close(result, [angle], xp=xp, dtype=xp.float64, rtol=1e-15, atol=1e-16)


def test_well_conditioned_angles_match_arccos(xp: ModuleType) -> None:
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((50, 6))
    x2 = rng.standard_normal((50, 6))
    cosine = np.sum(x1 * x2, axis=-1) / (np.linalg.norm(x1, axis=-1) * np.linalg.norm(x2, axis=-1))
    assert np.all(np.abs(cosine) < 0.95)  # arccos is accurate to ~1e-16 here
    result = ck.angular_distance(asarray(xp, x1), asarray(xp, x2))
    xp_assert_close(result, np.arccos(cosine) / np.pi, xp=xp, dtype=xp.float64, rtol=1e-14)


def _scipy_cosine(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> float:
    from scipy.spatial import distance

    return float(distance.cosine(u, v, w))


def test_feature_weights_match_scipy(xp: ModuleType) -> None:
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((6, 5))
    x2 = rng.standard_normal((6, 5))
    w = rng.uniform(0.0, 3.0, (6, 5))
    w[0, 1] = 0.0
    expected = np.array([_scipy_cosine(u, v, r) for u, v, r in zip(x1, x2, w, strict=True)])
    a, b, weights = asarray(xp, x1), asarray(xp, x2), asarray(xp, w)
    tol = tolerance("float64")
    distance = ck.cosine_distance(a, b, feature_weights=weights)
    xp_assert_close(distance, expected, xp=xp, dtype=xp.float64, rtol=tol, atol=tol)
    similarity = ck.cosine_similarity(a, b, feature_weights=weights)
    xp_assert_close(similarity, 1 - expected, xp=xp, dtype=xp.float64, rtol=tol, atol=tol)
    angle = ck.angular_distance(a, b, feature_weights=weights)
    assert np.all(np.abs(1 - expected) < 0.95)  # arccos well conditioned
    xp_assert_close(angle, np.arccos(1 - expected) / np.pi, xp=xp, dtype=xp.float64, rtol=1e-14)


def test_one_dimensional_weights_along_axis_0(xp: ModuleType) -> None:
    rng = np.random.default_rng(2)
    x1 = rng.standard_normal((5, 3))  # features along axis 0
    x2 = rng.standard_normal((5, 3))
    w = np.array([1.0, 0.0, 2.0, 0.5, 4.0])
    expected = np.array([_scipy_cosine(x1[:, j], x2[:, j], w) for j in range(3)])
    result = ck.cosine_distance(
        asarray(xp, x1), asarray(xp, x2), axis=0, feature_weights=asarray(xp, w)
    )
    tol = tolerance("float64")
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=tol, atol=tol)


def test_zero_weights_on_zero_vector_match_scipy_nan_free(xp: ModuleType) -> None:
    # Weights that remove every nonzero feature leave a zero vector: SciPy
    # returns NaN with a RuntimeWarning, cosinekit the contract's distance 1.
    x1 = np.array([[1.0, 0.0, 0.0]])
    x2 = np.array([[1.0, 1.0, 1.0]])
    w = np.array([0.0, 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.isnan(_scipy_cosine(x1[0], x2[0], w))
    result = ck.cosine_distance(asarray(xp, x1), asarray(xp, x2), feature_weights=asarray(xp, w))
    xp_assert_close(result, [1.0], xp=xp, dtype=xp.float64, rtol=0)


def _optax_cosine(x1: np.ndarray, x2: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_enable_x64", True)
    # optax.cosine_similarity(predictions, targets, *, epsilon, axis, where):
    # entries where `where` is False are left out of every sum.
    return np.asarray(
        optax.cosine_similarity(jnp.asarray(x1), jnp.asarray(x2), where=jnp.asarray(mask))
    )


# optax is installed with JAX, in its session only; elsewhere SciPy's weights
# with zeros are the reference (test_feature_weights_match_scipy).
@pytest.mark.backends("jax")
def test_mask_matches_optax_where(xp: ModuleType) -> None:
    rng = np.random.default_rng(3)
    x1 = rng.standard_normal((5, 6))
    x2 = rng.standard_normal((5, 6))
    mask = rng.uniform(size=(5, 6)) < 0.6
    mask[:, 0] = True  # no row fully masked: optax gives NaN there
    expected = _optax_cosine(x1, x2, mask)
    a, b = asarray(xp, x1), asarray(xp, x2)
    result = ck.cosine_similarity(a, b, feature_weights=asarray(xp, mask.astype(np.float64)))
    tol = tolerance("float64")
    xp_assert_close(result, expected, xp=xp, dtype=xp.float64, rtol=tol, atol=tol)


def test_masked_features_are_ignored_even_when_nan(xp: ModuleType) -> None:
    x1 = np.array([[1.0, 2.0, np.nan], [3.0, np.inf, 4.0]])
    x2 = np.array([[2.0, 1.0, 5.0], [4.0, 1.0, 3.0]])
    mask = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    # With the masked entries removed: (1, 2).(2, 1) / 5 and (3, 4).(4, 3) / 25.
    result = ck.cosine_similarity(
        asarray(xp, x1), asarray(xp, x2), feature_weights=asarray(xp, mask)
    )
    tol = tolerance("float64")
    xp_assert_close(result, [0.8, 0.96], xp=xp, dtype=xp.float64, rtol=tol)


@pytest.mark.backends("torch")
def test_torch_mask_under_autograd_matches_scipy(xp: ModuleType) -> None:
    # The weighted path under torch autograd. The reference is SciPy's
    # weighted cosine with 0/1 weights (optax, the mask reference above, is
    # installed with JAX only).
    rng = np.random.default_rng(4)
    x1 = rng.standard_normal((3, 4))
    x2 = rng.standard_normal((3, 4))
    mask = np.array([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    expected = [1 - _scipy_cosine(u, v, w) for u, v, w in zip(x1, x2, mask, strict=True)]
    a = asarray(xp, x1).requires_grad_(True)
    result = ck.cosine_similarity(a, asarray(xp, x2), feature_weights=asarray(xp, mask))
    np.testing.assert_allclose(to_numpy(result), expected, rtol=1e-13)
    result.sum().backward()
    # A masked feature does not influence the result: its gradient is 0.
    np.testing.assert_array_equal(to_numpy(a.grad)[mask == 0], 0.0)
