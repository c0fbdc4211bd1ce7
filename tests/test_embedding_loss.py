"""`cosine_embedding_loss` against ``torch.nn.functional.cosine_embedding_loss``.

The reference runs in PyTorch on float64 CPU copies of the inputs, whatever
the backend under test. PyTorch adds ``1e-12`` to each squared norm; the
inputs are scaled so that this changes nothing at float64 accuracy.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import asarray, numpy_matrix, tolerance, xp_assert_close, xp_assert_equal

N, D = 8, 5
# 1 pulls together, -1 pushes apart, anything else contributes 0 (as PyTorch).
TARGETS = {
    "plus-minus": [1, -1, 1, -1, -1, 1, -1, 1],
    "with-0-and-2": [1, -1, 0, 2, -1, 0, 1, 2],
    "all-minus": [-1] * N,
}
MARGINS = [-0.5, 0.0, 0.5]
REDUCTIONS = ["none", "sum", "mean"]


def _inputs(dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = 10 * rng.normal(size=(N, D))
    b = 10 * rng.normal(size=(N, D))
    b[1] = 2.0 * a[1]  # parallel, target -1: loss 1 - margin, clamped at 0
    b[4] = -3.0 * a[4]  # opposite, target -1: loss max(0, -1 - margin)
    b[5] = -a[5]  # opposite, target 1: loss 2
    return a.astype(dtype), b.astype(dtype)


def _torch_reference(
    a: np.ndarray, b: np.ndarray, target: np.ndarray, margin: float, reduction: str
) -> np.ndarray:
    """PyTorch's loss on float64 copies, for 2-D inputs reduced along axis -1."""
    torch = pytest.importorskip("torch", reason="torch is the reference implementation")
    loss = torch.nn.functional.cosine_embedding_loss(
        torch.from_numpy(np.asarray(a, np.float64)),
        torch.from_numpy(np.asarray(b, np.float64)),
        torch.from_numpy(np.asarray(target, np.float64)),
        margin=margin,
        reduction=reduction,
    )
    return loss.numpy()


def _tolerances(dtype: str) -> dict[str, float]:
    # Losses of 0 at the clamp and cos - margin near 0 need an absolute bound.
    return {"rtol": tolerance(dtype), "atol": tolerance(dtype) / 10}


@pytest.mark.parametrize(
    ("dtype", "targets", "margin", "reduction"),
    numpy_matrix(["float32", "float64"], list(TARGETS), MARGINS, REDUCTIONS),
)
def test_matches_torch(
    xp: ModuleType, dtype: str, targets: str, margin: float, reduction: str
) -> None:
    a, b = _inputs(dtype)
    target = np.array(TARGETS[targets], dtype=dtype)
    expected = _torch_reference(a, b, target, margin, reduction)
    xp_dtype = getattr(xp, dtype)
    loss = ck.cosine_embedding_loss(
        asarray(xp, a),
        asarray(xp, b),
        asarray(xp, target),
        margin=margin,
        reduction=reduction,
    )
    xp_assert_close(loss, expected, xp=xp, dtype=xp_dtype, **_tolerances(dtype))


def test_integer_target(xp: ModuleType) -> None:
    a, b = _inputs("float64", seed=1)
    target = np.array(TARGETS["with-0-and-2"], dtype=np.int64)
    expected = _torch_reference(a, b, target, 0.25, "none")
    loss = ck.cosine_embedding_loss(
        asarray(xp, a), asarray(xp, b), asarray(xp, target), margin=0.25, reduction="none"
    )
    xp_assert_close(loss, expected, xp=xp, dtype=xp.float64, **_tolerances("float64"))


@pytest.mark.parametrize("value", [1.0, -1.0])
def test_target_broadcasts(xp: ModuleType, value: float) -> None:
    a, b = _inputs("float64", seed=2)
    expected = _torch_reference(a, b, np.full(N, value), 0.1, "none")
    for shape in [(), (1,)]:
        target = asarray(xp, np.full(shape, value))
        loss = ck.cosine_embedding_loss(
            asarray(xp, a), asarray(xp, b), target, margin=0.1, reduction="none"
        )
        xp_assert_close(loss, expected, xp=xp, dtype=xp.float64, **_tolerances("float64"))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_feature_axis_of_3d_inputs(xp: ModuleType, axis: int) -> None:
    rng = np.random.default_rng(3)
    a, b = 10 * rng.normal(size=(4, 3, 5)), 10 * rng.normal(size=(4, 3, 5))
    rows_a = np.moveaxis(a, axis, -1)
    batch = rows_a.shape[:-1]
    target = rng.choice([1.0, -1.0, 0.0], size=batch)
    flat = _torch_reference(
        rows_a.reshape(-1, rows_a.shape[-1]),
        np.moveaxis(b, axis, -1).reshape(-1, rows_a.shape[-1]),
        target.reshape(-1),
        0.2,
        "none",
    )
    loss = ck.cosine_embedding_loss(
        asarray(xp, a),
        asarray(xp, b),
        asarray(xp, target),
        margin=0.2,
        axis=axis,
        reduction="none",
    )
    xp_assert_close(loss, flat.reshape(batch), xp=xp, dtype=xp.float64, **_tolerances("float64"))


@pytest.mark.parametrize(("reduction", "margin"), numpy_matrix(REDUCTIONS, MARGINS))
def test_zero_vectors_are_safe(xp: ModuleType, margin: float, reduction: str) -> None:
    a, b = _inputs("float64", seed=4)
    a[[0, 1, 6]] = 0.0
    b[[1, 2, 7]] = 0.0
    target = np.array([1, -1, 1, -1, 1, -1, -1, 1], dtype=np.float64)
    # PyTorch's cosine of a zero vector is 0 as well (0 / sqrt(1e-12 ...)).
    expected = _torch_reference(a, b, target, margin, reduction)
    assert not np.any(np.isnan(expected))
    loss = ck.cosine_embedding_loss(
        asarray(xp, a), asarray(xp, b), asarray(xp, target), margin=margin, reduction=reduction
    )
    xp_assert_close(loss, expected, xp=xp, dtype=xp.float64, **_tolerances("float64"))


def test_zero_vector_values(xp: ModuleType) -> None:
    zeros = asarray(xp, np.zeros((2, 3)))
    ones = asarray(xp, np.ones((2, 3)))
    target = asarray(xp, np.array([1.0, -1.0]))
    loss = ck.cosine_embedding_loss(zeros, ones, target, margin=-0.5, reduction="none")
    # cos = 0: 1 - 0 for target 1, max(0, 0 - (-0.5)) for target -1.
    xp_assert_equal(loss, np.array([1.0, 0.5]), xp=xp, dtype=xp.float64)


@pytest.mark.parametrize(
    ("reduction", "expected"),
    [("mean", np.float64(0.0)), ("sum", np.float64(0.0)), ("none", np.zeros(0))],
)
def test_empty_batch(xp: ModuleType, reduction: str, expected: Any) -> None:
    empty = asarray(xp, np.zeros((0, 3)))
    target = asarray(xp, np.zeros(0))
    # PyTorch's mean of no examples is NaN; the contract says 0.
    loss = ck.cosine_embedding_loss(empty, empty, target, reduction=reduction)
    xp_assert_equal(loss, expected, xp=xp, dtype=xp.float64)
