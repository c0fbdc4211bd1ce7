"""Record TensorFlow's ``tf.compat.v1.losses.cosine_distance`` as a JSON fixture.

The tests compare cosinekit against these numbers without needing TensorFlow.
To regenerate the fixture, run from the repository root, in an environment
that has ``tensorflow`` (or ``tensorflow-cpu``) and ``numpy`` installed::

    python tests/data/record_tensorflow.py

It writes ``tensorflow_cosine_distance.json`` next to this script. The inputs
are deterministic (fixed numpy seed, small integers and simple weights), so a
rerun changes the file only if TensorFlow's results change.

Every case records TensorFlow's loss twice: ``loss_raw`` on the raw inputs (as
TF documents, it expects unit-normalized inputs but does not normalize them)
and ``loss_normalized`` on ``tf.math.l2_normalize`` of both inputs along
``axis``. Results keep TF's shape: with reduction "none" the axis stays, with
size 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

OUTPUT = Path(__file__).with_name("tensorflow_cosine_distance.json")
GENERATOR = "tests/data/record_tensorflow.py"
SEED = 20240601

REDUCTIONS: dict[str, str] = {
    "none": tf.compat.v1.losses.Reduction.NONE,
    "sum": tf.compat.v1.losses.Reduction.SUM,
    "mean": tf.compat.v1.losses.Reduction.MEAN,
    "sum_over_batch_size": tf.compat.v1.losses.Reduction.SUM_OVER_BATCH_SIZE,
    "sum_by_nonzero_weights": tf.compat.v1.losses.Reduction.SUM_BY_NONZERO_WEIGHTS,
}
DEFAULT_REDUCTION = "sum_by_nonzero_weights"

SEED_LABELS = [[1.0, 4.0, 5.0], [5.0, 5.0, 7.0]]
SEED_PREDICTIONS = [[3.0, 2.0, 5.0], [3.0, 2.0, 7.0]]
SEED_LOSS_RAW = -54.0
SEED_LOSS_NORMALIZED = 0.077168673

# A loss is a Python number or a nested list, in TF's shape.
Loss = float | list[Any]
# Weights are None (TF's default 1.0), a Python number or a nested list.
Weights = Loss | None


def cosine_distance(
    labels: np.ndarray,
    predictions: np.ndarray,
    axis: int,
    weights: Weights,
    reduction: str,
) -> Loss:
    """Return TF's loss as a Python number or nested list."""
    dtype = labels.dtype
    tf_weights = 1.0 if weights is None else tf.constant(weights, dtype=dtype)
    loss = tf.compat.v1.losses.cosine_distance(
        tf.constant(labels),
        tf.constant(predictions),
        axis=axis,
        weights=tf_weights,
        reduction=REDUCTIONS[reduction],
    )
    return to_json(loss.numpy())


def to_json(values: np.ndarray) -> Loss:
    """Nested lists of Python floats; float32 keeps its shortest round-trip repr."""
    if values.dtype == np.float32:
        values = values.astype(str).astype(np.float64)
    return values.tolist()


def make_case(
    name: str,
    labels: np.ndarray,
    predictions: np.ndarray,
    axis: int,
    weights: Weights,
    reduction: str,
) -> dict[str, Any]:
    """Evaluate one case on the raw and on the l2-normalized inputs."""
    normalized_labels = tf.math.l2_normalize(labels, axis).numpy()
    normalized_predictions = tf.math.l2_normalize(predictions, axis).numpy()
    return {
        "name": name,
        "dtype": labels.dtype.name,
        "axis": axis,
        "labels": labels.tolist(),
        "predictions": predictions.tolist(),
        "weights": weights,
        "reduction": reduction,
        "loss_raw": cosine_distance(labels, predictions, axis, weights, reduction),
        "loss_normalized": cosine_distance(
            normalized_labels, normalized_predictions, axis, weights, reduction
        ),
    }


def sweep(
    prefix: str,
    labels: np.ndarray,
    predictions: np.ndarray,
    axis: int,
    weight_options: dict[str, Weights],
) -> list[dict[str, Any]]:
    """One case per reduction and weight option."""
    return [
        make_case(
            f"{prefix}_{reduction}_w{weight_name}",
            labels,
            predictions,
            axis,
            weights,
            reduction,
        )
        for reduction in REDUCTIONS
        for weight_name, weights in weight_options.items()
    ]


def seed_cases() -> list[dict[str, Any]]:
    """The documented seed example, then every reduction and weight form."""
    labels = np.array(SEED_LABELS, dtype=np.float32)
    predictions = np.array(SEED_PREDICTIONS, dtype=np.float32)
    seed = make_case("seed", labels, predictions, 1, None, DEFAULT_REDUCTION)
    assert seed["loss_raw"] == SEED_LOSS_RAW, seed["loss_raw"]
    assert math.isclose(seed["loss_normalized"], SEED_LOSS_NORMALIZED, rel_tol=1e-6)
    weight_options: dict[str, Weights] = {
        "none": None,
        "scalar": 2.5,
        "zero": 0.0,
        "masked": [[0.0], [3.0]],
        "array": [[1.5], [0.5]],
    }
    return [seed, *sweep("seed2d", labels, predictions, 1, weight_options)]


def nonzero_integers(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Integers in -5..5 with no all-zero vector along any axis."""
    while True:
        values = rng.integers(-5, 6, size=shape).astype(np.float64)
        if all(np.any(values != 0, axis=axis).all() for axis in range(len(shape))):
            return values


def tf_style_weights(rng: np.random.Generator, shape: tuple[int, ...], axis: int) -> list[Any]:
    """Weights of the input rank with size 1 at ``axis``; the first one is zero."""
    weight_shape = list(shape)
    weight_shape[axis] = 1
    weights = rng.choice([0.5, 1.0, 2.0], size=weight_shape)
    weights.flat[0] = 0.0
    return weights.tolist()


def random_3d_cases(rng: np.random.Generator) -> list[dict[str, Any]]:
    """(4, 3, 5) inputs for every axis; float64 as well for axes -1 and 0."""
    shape = (4, 3, 5)
    labels = nonzero_integers(rng, shape)
    predictions = nonzero_integers(rng, shape)
    cases: list[dict[str, Any]] = []
    for axis, dtypes in (
        (0, ("float32", "float64")),
        (1, ("float32",)),
        (2, ("float32",)),
        (-1, ("float32", "float64")),
    ):
        weight_options: dict[str, Weights] = {
            "none": None,
            "array": tf_style_weights(rng, shape, axis),
            "scalar": 2.5,
        }
        for dtype in dtypes:
            cases += sweep(
                f"rand3d_axis{axis}_{dtype}",
                labels.astype(dtype),
                predictions.astype(dtype),
                axis,
                weight_options,
            )
    return cases


def vector_cases(rng: np.random.Generator) -> list[dict[str, Any]]:
    """1-D inputs of shape (6,) reduced along axis 0."""
    labels = nonzero_integers(rng, (6,)).astype(np.float32)
    predictions = nonzero_integers(rng, (6,)).astype(np.float32)
    weight_options: dict[str, Weights] = {"none": None, "scalar": 0.5}
    return sweep("vector1d", labels, predictions, 0, weight_options)


def weights_without_axis() -> tuple[bool, str]:
    """Whether TF accepts weights of shape [batch] for 2-D inputs and axis=1."""
    try:
        loss = tf.compat.v1.losses.cosine_distance(
            tf.constant(SEED_LABELS),
            tf.constant(SEED_PREDICTIONS),
            axis=1,
            weights=tf.constant([0.0, 3.0]),
        )
    except (ValueError, tf.errors.InvalidArgumentError) as error:
        message = str(error).split(" Received")[0]
        return False, f"{type(error).__name__}: {message}"
    return True, f"accepted, loss={float(loss.numpy())!r}"


def dump(payload: dict[str, Any]) -> str:
    """Indented JSON with one case per line, to keep the file small and diffable."""
    header = {key: value for key, value in payload.items() if key != "cases"}
    cases = ",\n".join("  " + json.dumps(case, separators=(",", ":")) for case in payload["cases"])
    head = json.dumps(header, indent=1).removesuffix("\n}")
    return f'{head},\n "cases": [\n{cases}\n ]\n}}\n'


def main() -> None:
    assert tf.executing_eagerly(), "record with TensorFlow 2 in eager mode"
    rng = np.random.default_rng(SEED)
    cases = seed_cases() + random_3d_cases(rng) + vector_cases(rng)
    names = [case["name"] for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    accepted, note = weights_without_axis()
    payload = {
        "generator": GENERATOR,
        "tensorflow_version": tf.__version__,
        "weights_without_axis_accepted": accepted,
        "weights_without_axis_note": note,
        "cases": cases,
    }
    OUTPUT.write_text(dump(payload))
    print(f"wrote {len(cases)} cases to {OUTPUT}")


if __name__ == "__main__":
    main()
