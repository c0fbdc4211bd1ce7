"""Gradients under torch autograd and jax.grad, against independent references.

References: ``torch.autograd.gradcheck`` and ``jax.test_util.check_grads``
(finite differences in float64), and the closed-form gradient of the cosine,
``d cos / d x1 = (u2 - cos u1) / |x1|`` with ``u = x / |x|``, evaluated in
float64 NumPy on rescaled vectors so it holds at every magnitude.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import Backend, asarray, to_numpy

# Automatic differentiation: PyTorch and JAX.
pytestmark = pytest.mark.backends("torch", "jax")

TARGET = [1.0, -1.0, 1.0, -1.0]

# Each case: the number of array arguments and the function of those arrays.
# cosine_embedding_loss uses margin -1.5 so that max(0, cos - margin) is never
# at its kink; gradcheck needs a differentiable point.
CASES: dict[str, tuple[int, Callable[..., Any]]] = {
    "cosine_similarity": (2, ck.cosine_similarity),
    "cosine_distance": (2, ck.cosine_distance),
    "angular_distance": (2, ck.angular_distance),
    "l2_normalize": (1, ck.l2_normalize),
    "cosine_distance_loss": (2, ck.cosine_distance_loss),
    "cosine_embedding_loss": (
        2,
        lambda a, b: ck.cosine_embedding_loss(
            a, b, _like(a, TARGET[: a.shape[0]]), margin=-1.5, reduction="sum"
        ),
    ),
}


def _like(reference: Any, values: Any) -> Any:
    """``values`` as an array of the library (and dtype) of ``reference``."""
    import array_api_compat

    xp = array_api_compat.array_namespace(reference)
    return xp.asarray(
        np.asarray(values), dtype=reference.dtype, device=array_api_compat.device(reference)
    )


def gradients(
    xp: ModuleType, library: Backend, fn: Callable[..., Any], *arrays: np.ndarray
) -> list[np.ndarray]:
    """Gradients of ``sum(fn(*arrays))`` with respect to every array, as NumPy."""
    if library is Backend.TORCH:
        import torch

        tensors = [asarray(xp, a).requires_grad_(True) for a in arrays]
        torch.sum(fn(*tensors)).backward()
        return [t.grad.numpy() for t in tensors]
    import jax

    grads = jax.grad(
        lambda *args: xp.sum(fn(*args)),
        argnums=tuple(range(len(arrays))),
    )(*(asarray(xp, a) for a in arrays))
    return [np.asarray(g) for g in grads]


def _unit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``x`` as unit vectors and their norms, without overflow."""
    scale = np.max(np.abs(x), axis=-1, keepdims=True)
    scaled = x / scale
    norm = np.linalg.norm(scaled, axis=-1, keepdims=True)
    return scaled / norm, scale * norm


def cosine_gradient(x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The closed-form gradients of ``sum(cos(x1, x2))`` (nonzero rows only)."""
    u1, n1 = _unit(x1)
    u2, n2 = _unit(x2)
    cosine = np.sum(u1 * u2, axis=-1, keepdims=True)
    return (u2 - cosine * u1) / n1, (u1 - cosine * u2) / n2


def _data(seed: int, shape: tuple[int, ...] = (4, 5)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.backends("torch")
@pytest.mark.parametrize("name", CASES)
def test_torch_gradcheck(xp: ModuleType, name: str) -> None:
    import torch

    count, fn = CASES[name]
    inputs = tuple(asarray(xp, _data(i)).requires_grad_(True) for i in range(count))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.backends("jax")
@pytest.mark.parametrize("name", CASES)
def test_jax_check_grads(xp: ModuleType, name: str) -> None:
    from jax.test_util import check_grads

    count, fn = CASES[name]
    inputs = tuple(asarray(xp, _data(i)) for i in range(count))
    check_grads(fn, inputs, order=1, modes=("rev",), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-300, 1e-20, 1.0, 1e20, 1e300])
def test_cosine_gradient_matches_closed_form(
    xp: ModuleType, library: Backend, scale: float
) -> None:
    x1 = _data(1) * scale
    x2 = _data(2)  # one input ordinary, the other extreme: both paths run
    x1[0] = [1.0, 2.0, 3.0, 4.0, 5.0]  # an ordinary row among extreme ones
    g1, g2 = gradients(xp, library, CASES["cosine_similarity"][1], x1, x2)
    e1, e2 = cosine_gradient(x1, x2)
    np.testing.assert_allclose(g1, e1, rtol=1e-12, atol=1e-14 * np.max(np.abs(e1)))
    np.testing.assert_allclose(g2, e2, rtol=1e-12, atol=1e-14 * np.max(np.abs(e2)))


@functools.cache
def _compiled_similarity() -> Callable[..., Any]:
    """One compiled graph for every scale: the branch is chosen when it runs, not traced."""
    import torch

    return torch.compile(ck.cosine_similarity, fullgraph=True, backend="aot_eager")


@pytest.mark.backends("torch")
@pytest.mark.parametrize("scale", [1e-300, 1e-20, 1.0, 1e300])
def test_torch_compile_gradient_matches_closed_form(
    xp: ModuleType, library: Backend, scale: float
) -> None:
    # Under torch.compile the closed-form backward runs with the parts of
    # whichever branch ran: the rescaled one here, except at scale 1. The
    # inputs have one shape and dtype, so the four scales share one graph
    # (fullgraph=True: a recompile past Dynamo's limit would be an error).
    x1 = _data(1) * scale
    x2 = _data(2)
    x1[0] = [1.0, 2.0, 3.0, 4.0, 5.0]
    g1, g2 = gradients(xp, library, _compiled_similarity(), x1, x2)
    e1, e2 = cosine_gradient(x1, x2)
    np.testing.assert_allclose(g1, e1, rtol=1e-12, atol=1e-14 * np.max(np.abs(e1)))
    np.testing.assert_allclose(g2, e2, rtol=1e-12, atol=1e-14 * np.max(np.abs(e2)))


@pytest.mark.backends("jax")
@pytest.mark.parametrize("eps", [None, 0.5])
def test_jax_forward_mode_and_second_order(xp: ModuleType, eps: float | None) -> None:
    # The JAX derivative is a custom jvp rule: jacfwd and the Hessian go
    # through it. Reference: optax's plain formula, differentiated by JAX
    # (optax clamps each squared norm by epsilon, so epsilon = eps**2 is
    # the same clamp; eps=0.5 clamps x1[0], whose norm is 0.19).
    import jax
    import optax

    x1, x2 = _data(5), _data(6)
    x1[0] *= 0.1
    weights = asarray(xp, _data(7, (4,)))

    def ours(a: Any, b: Any) -> Any:
        return xp.sum(ck.cosine_similarity(a, b, eps=eps) * weights)

    def peer(a: Any, b: Any) -> Any:
        return xp.sum(optax.cosine_similarity(a, b, epsilon=(eps or 0.0) ** 2) * weights)

    arrays = (asarray(xp, x1), asarray(xp, x2))
    for transform in (
        lambda f: jax.jacfwd(f, argnums=(0, 1)),
        lambda f: jax.jit(jax.hessian(f, argnums=(0, 1))),
    ):
        actual = jax.tree.leaves(transform(ours)(*arrays))
        expected = jax.tree.leaves(transform(peer)(*arrays))
        for a, e in zip(actual, expected, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-300, 1.0, 1e300])
def test_l2_normalize_gradient_matches_closed_form(
    xp: ModuleType, library: Backend, scale: float
) -> None:
    x = _data(3) * scale
    weights = _data(4)
    # d/dx sum(w * x / |x|) = (w - (w . u) u) / |x|
    (grad,) = gradients(xp, library, lambda a: ck.l2_normalize(a) * _like(a, weights), x)
    u, n = _unit(x)
    expected = (weights - np.sum(weights * u, axis=-1, keepdims=True) * u) / n
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-14 * np.max(np.abs(expected)))


@pytest.mark.parametrize("name", CASES)
def test_zero_vectors_have_zero_gradient(xp: ModuleType, library: Backend, name: str) -> None:
    count, fn = CASES[name]
    x1 = _data(5)
    x2 = _data(6)
    x1[1] = 0.0  # zero against a nonzero vector
    x2[2] = 0.0  # nonzero against zero
    x1[3] = 0.0  # both zero
    x2[3] = 0.0
    grads = gradients(xp, library, fn, *(x1, x2)[:count])
    for grad in grads:
        assert np.all(np.isfinite(grad)), grad
        # The subgradient 0, not 1/eps (PyTorch's normalize gives 1e12 here).
        np.testing.assert_array_equal(grad[1:] if count == 2 else grad[[1, 3]], 0.0)
    if count == 2:
        # The ordinary row 0 still gets its real gradient.
        assert np.all(np.abs(grads[0][0]) > 0)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_angular_distance_gradient_finite_when_parallel(
    xp: ModuleType, library: Backend, sign: float
) -> None:
    x1 = _data(7)
    x2 = sign * 2.0 * x1  # exactly parallel (or opposite): scaling by 2 is exact
    grads = gradients(xp, library, CASES["angular_distance"][1], x1, x2)
    for grad in grads:
        # arccos(cos) has an infinite derivative here; Kahan's form gives the
        # subgradient 0 of |u - v| (or |u + v|) at its minimum.
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_clip_passes_gradient_straight_through(xp: ModuleType, library: Backend) -> None:
    # Nearly parallel pairs: the computed cosine rounds to 1 or just above it
    # in many rows, where the clip is active, while the true gradient
    # (u2 - cos u1) / |x1| is small but nonzero. A clip that zeroes gradients
    # (jnp.clip, torch.clamp) would return exactly 0 in those rows.
    rng = np.random.default_rng(8)
    x1 = rng.standard_normal((64, 3))
    x2 = x1 * (1 + 1e-7 * rng.standard_normal((64, 3)))
    squares = np.sum(x1 * x1, axis=-1)
    naive = squares / (np.sqrt(squares) * np.sqrt(squares))
    assert np.sum(naive > 1) > 3  # rounding above 1 is common here
    forward = to_numpy(ck.cosine_similarity(asarray(xp, x1), asarray(xp, x2)))
    clipped = forward == 1.0
    assert np.sum(clipped) > 3  # the clip is at its bound in these rows
    g1, _ = gradients(xp, library, CASES["cosine_similarity"][1], x1, x2)
    e1, _ = cosine_gradient(x1, x2)
    assert np.all(np.abs(e1[clipped]) > 1e-12)
    np.testing.assert_allclose(g1[clipped], e1[clipped], rtol=1e-3, atol=1e-14)


def test_distance_gradient_is_negated_similarity_gradient(
    xp: ModuleType, library: Backend
) -> None:
    x1, x2 = _data(9), _data(10)
    (g_distance,) = gradients(xp, library, lambda a: ck.cosine_distance(a, _like(a, x2)), x1)
    e1, _ = cosine_gradient(x1, x2)
    np.testing.assert_allclose(g_distance, -e1, rtol=1e-12, atol=1e-15)


def _clamped_cosine(x1: np.ndarray, x2: np.ndarray, eps: float) -> np.ndarray:
    """PyTorch's definition: ``x1 . x2 / (max(|x1|, eps) max(|x2|, eps))`` (ordinary rows)."""
    n1 = np.linalg.norm(x1, axis=-1)
    n2 = np.linalg.norm(x2, axis=-1)
    return np.sum(x1 * x2, axis=-1) / (np.maximum(n1, eps) * np.maximum(n2, eps))


@pytest.mark.parametrize("eps", [1e-8, 1.0])
def test_gradient_with_eps_matches_finite_differences(
    xp: ModuleType, library: Backend, eps: float
) -> None:
    # Central differences of the clamped formula in float64, element by
    # element; eps=1.0 clamps the norm of x1[0] (0.19) and of x2[2] (0.22),
    # where the gradient is x_other / (eps max(|x_other|, eps)).
    x1, x2 = _data(11), _data(12)
    x1[0] *= 0.1
    x2[2] *= 0.1
    g1, g2 = gradients(xp, library, lambda a, b: ck.cosine_similarity(a, b, eps=eps), x1, x2)
    h = 1e-6
    for grad, which in ((g1, 0), (g2, 1)):
        expected = np.zeros_like(grad)
        for index in np.ndindex(grad.shape):
            step = np.zeros_like(grad)
            step[index] = h
            plus = [x1, x2]
            minus = [x1, x2]
            plus[which] = plus[which] + step
            minus[which] = minus[which] - step
            expected[index] = np.sum(
                _clamped_cosine(*plus, eps) - _clamped_cosine(*minus, eps)
            ) / (2 * h)
        np.testing.assert_allclose(grad, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.backends("torch")
@pytest.mark.parametrize("eps", [None, 1.0])
def test_torch_second_derivatives(xp: ModuleType, eps: float | None) -> None:
    # Gradient penalties differentiate a gradient (create_graph=True); the
    # eager fast path's closed-form backward must then be differentiable too.
    import torch

    x1, x2 = _data(13), _data(14)
    x1[0] *= 0.1  # below eps=1.0
    inputs = tuple(asarray(xp, x).requires_grad_(True) for x in (x1, x2))
    assert torch.autograd.gradgradcheck(
        lambda a, b: ck.cosine_similarity(a, b, eps=eps), inputs, eps=1e-6, atol=1e-6, rtol=1e-5
    )
