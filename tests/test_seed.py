"""The seed tutorial's example on every backend."""

from __future__ import annotations

from types import ModuleType

import pytest

import cosinekit as ck
from _support import asarray, xp_assert_close

LABELS = [[1.0, 4.0, 5.0], [5.0, 5.0, 7.0]]
PREDICTIONS = [[3.0, 2.0, 5.0], [3.0, 2.0, 7.0]]
TUTORIAL_LOSS = 0.077168673  # recorded from TensorFlow by the tutorial


def test_seed_example(xp: ModuleType) -> None:
    labels = asarray(xp, LABELS, dtype=xp.float32)
    predictions = asarray(xp, PREDICTIONS, dtype=xp.float32)
    loss = ck.cosine_distance_loss(labels, predictions, axis=1)
    xp_assert_close(loss, TUTORIAL_LOSS, xp=xp, dtype=xp.float32, rtol=1e-6)


def test_seed_example_unnormalized_as_tensorflow(xp: ModuleType) -> None:
    labels = asarray(xp, LABELS, dtype=xp.float32)
    predictions = asarray(xp, PREDICTIONS, dtype=xp.float32)
    loss = ck.cosine_distance_loss(labels, predictions, axis=1, assume_normalized=True)
    xp_assert_close(loss, -54.0, xp=xp, dtype=xp.float32, rtol=0)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_seed_matches_float64_math(xp: ModuleType, axis: int) -> None:
    import numpy as np

    a, b = np.array(LABELS), np.array(PREDICTIONS)
    expected = 1 - np.sum(a * b, axis=axis) / (
        np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis)
    )
    loss = ck.cosine_distance_loss(asarray(xp, a), asarray(xp, b), axis=axis, reduction="none")
    xp_assert_close(loss, expected, xp=xp, dtype=xp.float64, rtol=0, atol=1e-15)
