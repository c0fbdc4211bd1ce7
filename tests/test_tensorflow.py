"""`cosine_distance_loss` against TensorFlow's recorded ``cosine_distance``.

The numbers come from ``tests/data/tensorflow_cosine_distance.json``, written
by ``tests/data/record_tensorflow.py`` with TensorFlow itself, so these tests
need no TensorFlow. Every case holds TF's loss on the raw inputs (which
``assume_normalized=True`` must reproduce) and on the l2-normalized inputs
(which the default, normalizing, loss must reproduce).

NumPy runs every case. The reductions and weights are backend-free code on
top of the per-row loss, so the other backends run representatives: every
input group (shape, axis and dtype), every reduction and every weights form
at least once.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import asarray, numpy_full, xp_assert_close

FIXTURE = Path(__file__).parent / "data" / "tensorflow_cosine_distance.json"
RECORDING = json.loads(FIXTURE.read_text())
CASES: list[dict[str, Any]] = RECORDING["cases"]
# Cases with TF-style array weights: input rank, size 1 at the feature axis.
ARRAY_WEIGHT_CASES = [case for case in CASES if isinstance(case["weights"], list)]

# tf.compat.v1's compute_weighted_loss casts losses and weights to float32
# before reducing, so even the float64 cases hold float32-rounded numbers:
# they are compared at float32 accuracy here, and at float64 accuracy against
# float64 NumPy math in `test_float64_cases_match_float64_math`. The small
# atol covers losses near 0, where TF's float32 sums cancel.
RTOL = 1e-5
ATOL = 1e-6


def _group(case: dict[str, Any]) -> str:
    """The inputs a case shares with others: "rand3d_axis0_float32", "seed2d", ..."""
    name: str = case["name"]
    return name.split(f"_{case['reduction']}_", maxsplit=1)[0]


def _weights_form(case: dict[str, Any]) -> str:
    """none, scalar, zero, masked or array (the name's last part; "seed" has none)."""
    name: str = case["name"]
    return name.rsplit("_w", 1)[-1] if "_w" in name else "none"


def _params(cases: list[dict[str, Any]]) -> list[Any]:
    return numpy_full(
        cases,
        _group,
        lambda case: case["reduction"],
        _weights_form,
        lambda case: case["dtype"],
        lambda case: case["axis"],
        ids=lambda case: case["name"],
    )


def _inputs(xp: ModuleType, case: dict[str, Any]) -> tuple[Any, Any, Any]:
    dtype = getattr(xp, case["dtype"])
    return asarray(xp, case["labels"], dtype), asarray(xp, case["predictions"], dtype), dtype


def _weights(xp: ModuleType, weights: Any, dtype: Any) -> Any:
    """Python numbers stay numbers; nested lists become arrays of the backend."""
    if weights is None or isinstance(weights, float):
        return weights
    return asarray(xp, weights, dtype)


def _expected(case: dict[str, Any], key: str) -> np.ndarray:
    """TF's loss; its "none" output keeps the axis with size 1, cosinekit drops it."""
    expected = np.asarray(case[key], dtype=np.float64)
    if case["reduction"] == "none":
        expected = np.squeeze(expected, axis=case["axis"])
    return expected


@pytest.mark.backend_free
def test_fixture_is_complete() -> None:
    # Guards against a truncated or regenerated fixture silently testing less.
    assert RECORDING["tensorflow_version"]
    assert len(CASES) == 126
    assert len({case["name"] for case in CASES}) == len(CASES)
    reductions = {case["reduction"] for case in CASES}
    assert reductions == {"none", "sum", "mean", "sum_over_batch_size", "sum_by_nonzero_weights"}
    assert {case["dtype"] for case in CASES} == {"float32", "float64"}
    assert {case["axis"] for case in CASES} == {0, 1, 2, -1}


@pytest.mark.parametrize(
    ("assume_normalized", "key"),
    [(True, "loss_raw"), (False, "loss_normalized")],
    ids=["assume_normalized-raw_inputs", "default-normalized_inputs"],
)
@pytest.mark.parametrize("case", _params(CASES))
def test_matches_tensorflow(
    xp: ModuleType, case: dict[str, Any], assume_normalized: bool, key: str
) -> None:
    # assume_normalized=True is TensorFlow's formula on the raw inputs; the
    # default equals TensorFlow on inputs it was given already normalized.
    labels, predictions, dtype = _inputs(xp, case)
    loss = ck.cosine_distance_loss(
        labels,
        predictions,
        axis=case["axis"],
        weights=_weights(xp, case["weights"], dtype),
        reduction=case["reduction"],
        assume_normalized=assume_normalized,
    )
    xp_assert_close(loss, _expected(case, key), xp=xp, dtype=dtype, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", _params(ARRAY_WEIGHT_CASES))
def test_batch_shaped_weights_match_tensorflow(xp: ModuleType, case: dict[str, Any]) -> None:
    # TF refuses weights without the feature axis (see the fixture's
    # "weights_without_axis_note"); cosinekit accepts them, with TF's numbers.
    assert RECORDING["weights_without_axis_accepted"] is False
    labels, predictions, dtype = _inputs(xp, case)
    weights = asarray(xp, np.squeeze(np.asarray(case["weights"]), axis=case["axis"]), dtype)
    for assume_normalized, key in ((True, "loss_raw"), (False, "loss_normalized")):
        loss = ck.cosine_distance_loss(
            labels,
            predictions,
            axis=case["axis"],
            weights=weights,
            reduction=case["reduction"],
            assume_normalized=assume_normalized,
        )
        xp_assert_close(loss, _expected(case, key), xp=xp, dtype=dtype, rtol=RTOL, atol=ATOL)


def _float64_reference(case: dict[str, Any], *, normalized: bool) -> np.ndarray:
    """TF's documented formula and reductions, in float64 NumPy."""
    axis = case["axis"]
    labels = np.asarray(case["labels"], dtype=np.float64)
    predictions = np.asarray(case["predictions"], dtype=np.float64)
    if normalized:
        labels = labels / np.linalg.norm(labels, axis=axis, keepdims=True)
        predictions = predictions / np.linalg.norm(predictions, axis=axis, keepdims=True)
    loss = 1 - np.sum(labels * predictions, axis=axis)
    raw_weights = 1.0 if case["weights"] is None else case["weights"]
    weights = np.asarray(raw_weights, dtype=np.float64)
    if weights.ndim:
        weights = np.squeeze(weights, axis=axis)
    weights = np.broadcast_to(weights, loss.shape)
    weighted = weights * loss
    reduction = case["reduction"]
    if reduction == "none":
        return weighted
    denominator = {
        "sum": 1.0,
        "mean": np.sum(weights),
        "sum_over_batch_size": float(loss.size),
        "sum_by_nonzero_weights": float(np.count_nonzero(weights)),
    }[reduction]
    return np.asarray(0.0 if denominator == 0 else np.sum(weighted) / denominator)


FLOAT64_CASES = [case for case in CASES if case["dtype"] == "float64"]


@pytest.mark.parametrize("case", _params(FLOAT64_CASES))
def test_float64_cases_match_float64_math(xp: ModuleType, case: dict[str, Any]) -> None:
    labels, predictions, dtype = _inputs(xp, case)
    weights = _weights(xp, case["weights"], dtype)
    for assume_normalized in (True, False):
        loss = ck.cosine_distance_loss(
            labels,
            predictions,
            axis=case["axis"],
            weights=weights,
            reduction=case["reduction"],
            assume_normalized=assume_normalized,
        )
        expected = _float64_reference(case, normalized=not assume_normalized)
        xp_assert_close(loss, expected, xp=xp, dtype=dtype, rtol=1e-12, atol=1e-14)
