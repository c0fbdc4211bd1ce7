"""Every error the contract promises, with its exception type and message.

The argument checks run before any backend computes, so NumPy runs each
function with each bad value, and the other backends each function and each
bad value at least once (`numpy_matrix`).
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import Backend, asarray, numpy_matrix, to_numpy

# Every function that takes two arrays; the embedding loss also takes a target.
TWO_INPUT = [
    "cosine_similarity",
    "cosine_distance",
    "angular_distance",
    "cosine_distance_loss",
    "cosine_embedding_loss",
]
ROW_WISE = ["cosine_similarity", "cosine_distance", "angular_distance"]
SHAPE = (2, 3)


NOT_NUMPY = ["torch", "jax", "dask", "array_api_strict", "array_api_strictest", "cupy"]


def _call(name: str, x1: Any, x2: Any, target: Any, **kwargs: Any) -> Any:
    """Call the function ``name`` on its arrays among ``x1``, ``x2`` and ``target``."""
    if name == "l2_normalize":
        return ck.l2_normalize(x1, **kwargs)
    if name == "cosine_embedding_loss":
        return ck.cosine_embedding_loss(x1, x2, target, **kwargs)
    return getattr(ck, name)(x1, x2, **kwargs)


def _target(xp: ModuleType) -> Any:
    """A valid target for inputs of shape `SHAPE`."""
    return asarray(xp, np.ones(SHAPE[0]))


def _both(*words: str) -> str:
    """A pattern that matches text containing every one of ``words``."""
    return "(?s)" + "".join(f"(?=.*{re.escape(word)})" for word in words)


def _inputs(xp: ModuleType, shape: tuple[int, ...] = SHAPE) -> Any:
    return asarray(xp, np.arange(1.0, 1.0 + np.prod(shape)).reshape(shape))


# -- arrays of the wrong kind -------------------------------------------------


@pytest.mark.backends("torch")
@pytest.mark.parametrize("name", TWO_INPUT)
def test_numpy_mixed_with_torch_names_both(name: str) -> None:
    import torch

    a = np.ones(SHAPE)
    t = torch.ones(SHAPE, dtype=torch.float64)
    pattern = _both("numpy.ndarray", "torch.Tensor")
    with pytest.raises(TypeError, match=pattern):
        _call(name, a, t, np.ones(SHAPE[0]))
    with pytest.raises(TypeError, match=pattern):
        _call(name, t, a, np.ones(SHAPE[0]))


@pytest.mark.backends("torch")
def test_numpy_mixed_with_torch_in_side_arguments() -> None:
    import torch

    a = np.ones(SHAPE)
    pattern = _both("numpy.ndarray", "torch.Tensor")
    with pytest.raises(TypeError, match=pattern):
        ck.cosine_embedding_loss(a, a, torch.ones(SHAPE[0]))
    with pytest.raises(TypeError, match=pattern):
        ck.cosine_distance_loss(a, a, weights=torch.ones(SHAPE[0]))
    for name in ROW_WISE:
        with pytest.raises(TypeError, match=pattern):
            getattr(ck, name)(a, a, feature_weights=torch.ones(SHAPE[1]))


# NumPy with NumPy is one library: see test_numpy_mixed_with_torch_names_both.
@pytest.mark.backends(*NOT_NUMPY)
@pytest.mark.parametrize("name", TWO_INPUT)
def test_backend_mixed_with_numpy_names_both(xp: ModuleType, name: str) -> None:
    x = _inputs(xp)
    a = np.ones(SHAPE)
    pattern = _both(type(x).__name__, "numpy.ndarray")
    with pytest.raises(TypeError, match=pattern):
        _call(name, x, a, _target(xp))
    with pytest.raises(TypeError, match=pattern):
        _call(name, a, x, _target(xp))


NOT_ARRAYS = {"list": [1.0, 2.0, 3.0], "float": 1.0, "int": 3, "NoneType": None}


@pytest.mark.parametrize(("name", "kind"), numpy_matrix(TWO_INPUT, list(NOT_ARRAYS)))
def test_non_array_is_type_error(xp: ModuleType, name: str, kind: str) -> None:
    x, bad = _inputs(xp), NOT_ARRAYS[kind]
    pattern = _both("must be an array", kind)
    with pytest.raises(TypeError, match=pattern):
        _call(name, x, bad, _target(xp))
    with pytest.raises(TypeError, match=pattern):
        _call(name, bad, x, _target(xp))


@pytest.mark.parametrize("kind", NOT_ARRAYS)
def test_non_array_is_type_error_single_input(xp: ModuleType, kind: str) -> None:
    x, bad = _inputs(xp), NOT_ARRAYS[kind]
    pattern = _both("must be an array", kind)
    with pytest.raises(TypeError, match=pattern):
        ck.l2_normalize(bad)
    with pytest.raises(TypeError, match=pattern):
        ck.cosine_embedding_loss(x, x, bad)


def _complex(xp: ModuleType) -> Any:
    return asarray(xp, np.ones(SHAPE, dtype=np.complex128))


@pytest.mark.parametrize("name", TWO_INPUT)
def test_complex_input_is_type_error(xp: ModuleType, name: str) -> None:
    x, z = _inputs(xp), _complex(xp)
    with pytest.raises(TypeError, match="complex"):
        _call(name, x, z, _target(xp))
    with pytest.raises(TypeError, match="complex"):
        _call(name, z, x, _target(xp))


def test_complex_in_other_arguments_is_type_error(xp: ModuleType) -> None:
    x, z = _inputs(xp), _complex(xp)
    with pytest.raises(TypeError, match="complex"):
        ck.l2_normalize(z)
    with pytest.raises(TypeError, match="complex"):
        ck.cosine_embedding_loss(x, x, z[:, 0])
    with pytest.raises(TypeError, match="complex"):
        ck.cosine_distance_loss(x, x, weights=z[:, 0])
    with pytest.raises(TypeError, match="complex"):
        ck.cosine_similarity(x, x, feature_weights=z[0, :])


# -- axis ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "axis"), numpy_matrix([*TWO_INPUT, "l2_normalize"], [2, -3, 10]))
def test_axis_out_of_range(xp: ModuleType, name: str, axis: int) -> None:
    x = _inputs(xp)
    # The contract allows the namespace's own IndexError as well.
    with pytest.raises((ValueError, IndexError), match="axis"):
        _call(name, x, x, _target(xp), axis=axis)


@pytest.mark.parametrize(
    ("name", "axis"),
    numpy_matrix(
        [*TWO_INPUT, "l2_normalize"],
        [1.0, "1", None, pytest.param((0, 1), id="(0, 1)")],
    ),
)
def test_axis_not_an_integer(xp: ModuleType, name: str, axis: Any) -> None:
    x = _inputs(xp)
    with pytest.raises(TypeError, match="axis"):
        _call(name, x, x, _target(xp), axis=axis)


# -- shapes -------------------------------------------------------------------


@pytest.mark.parametrize("name", TWO_INPUT)
def test_shapes_that_do_not_broadcast(xp: ModuleType, name: str) -> None:
    a, b = _inputs(xp, (2, 3)), _inputs(xp, (4, 3))
    with pytest.raises(ValueError, match=_both("(2, 3)", "(4, 3)")):
        _call(name, a, b, _target(xp))
    c = _inputs(xp, (2, 5))
    with pytest.raises(ValueError, match=_both("(2, 3)", "(2, 5)")):
        _call(name, a, c, _target(xp))


@pytest.mark.parametrize(
    "shape",
    [(3,), (2, 3), (4, 2), (2, 2, 1)],
    ids=["wrong-length", "feature-axis-kept-full", "broadcasts-to-larger", "too-many-dims"],
)
def test_weights_that_do_not_broadcast_to_the_loss(xp: ModuleType, shape: tuple[int, ...]) -> None:
    # The per-example loss of (2, 3) inputs along axis -1 has shape (2,).
    x = _inputs(xp)
    weights = asarray(xp, np.ones(shape))
    with pytest.raises(ValueError, match="weights"):
        ck.cosine_distance_loss(x, x, weights=weights)


@pytest.mark.parametrize("shape", [(3,), (4, 2), (2, 3)])
def test_target_that_does_not_broadcast(xp: ModuleType, shape: tuple[int, ...]) -> None:
    x = _inputs(xp)
    target = asarray(xp, np.ones(shape))
    with pytest.raises(ValueError, match="target"):
        ck.cosine_embedding_loss(x, x, target)


# -- options ------------------------------------------------------------------


DISTANCE_REDUCTIONS = ["none", "sum", "mean", "sum_over_batch_size", "sum_by_nonzero_weights"]
EMBEDDING_REDUCTIONS = ["none", "sum", "mean"]


@pytest.mark.parametrize("reduction", ["average", "Mean", "", None, "sum_by_nonzero"])
def test_unknown_reduction_lists_the_valid_ones(xp: ModuleType, reduction: Any) -> None:
    x = _inputs(xp)
    quoted = [f"'{name}'" for name in DISTANCE_REDUCTIONS]
    with pytest.raises(ValueError, match=_both("reduction", *quoted)):
        ck.cosine_distance_loss(x, x, reduction=reduction)
    quoted = [f"'{name}'" for name in EMBEDDING_REDUCTIONS]
    with pytest.raises(ValueError, match=_both("reduction", *quoted)):
        ck.cosine_embedding_loss(x, x, _target(xp), reduction=reduction)


@pytest.mark.parametrize(
    ("name", "eps"),
    numpy_matrix([*TWO_INPUT, "l2_normalize"], [0.0, -1e-8, float("nan"), -float("inf")]),
)
def test_eps_must_be_positive(xp: ModuleType, name: str, eps: float) -> None:
    x = _inputs(xp)
    with pytest.raises(ValueError, match="eps"):
        _call(name, x, x, _target(xp), eps=eps)


# The check reads the weights' values: Dask and JAX arrays may be lazy or
# traced, and the strictest array-api-strict flags refuse data-dependent reads.
@pytest.mark.backends("numpy", "torch", "array_api_strict", "cupy")
@pytest.mark.parametrize("name", ROW_WISE)
def test_negative_feature_weights(xp: ModuleType, name: str) -> None:
    x = _inputs(xp)
    weights = asarray(xp, np.array([1.0, -0.5, 2.0]))
    with pytest.raises(ValueError, match="non-negative"):
        getattr(ck, name)(x, x, feature_weights=weights)


@pytest.mark.parametrize("margin", ["0.5", None, [0.5], 1j, object()])
def test_margin_must_be_a_real_number(xp: ModuleType, margin: Any) -> None:
    x = _inputs(xp)
    with pytest.raises(TypeError, match="margin"):
        ck.cosine_embedding_loss(x, x, _target(xp), margin=margin)


# -- flags, hyperparameters that overflow, public argument names (issue 19) ----

# (function, option, a truthy value that is no bool): each call gets the
# option by keyword; the arrays are SHAPE rows, the labels and scores SHAPE[0].
FLAGS: dict[str, tuple[str, Any]] = {
    "info_nce_loss": ("symmetric", "no"),
    "cosine_triplet_loss": ("swap", "no"),
    "cosine_topk": ("exclude_self", "yes"),
    "cosine_range_search": ("exclude_self", "yes"),
    "cosine_similarity": ("keepdims", 1),
    "cosine_distance": ("keepdims", 1),
    "angular_distance": ("keepdims", 1),
    "pairwise_cosine_similarity": ("zero_diagonal", "x"),
    "cosine_distance_loss": ("assume_normalized", 0),
}


def _flagged(xp: ModuleType, name: str, value: Any) -> Any:
    x = _inputs(xp)
    y = asarray(xp, np.array([[1.0, 0.5, -1.0], [2.0, -1.0, 0.5]]))
    option = {FLAGS[name][0]: value}
    if name == "cosine_triplet_loss":
        return ck.cosine_triplet_loss(x, y, -x, **option)
    if name == "cosine_topk":
        return ck.cosine_topk(x, y, 1, **option)
    if name == "cosine_range_search":
        return ck.cosine_range_search(x, y, 0.5, **option)
    if name == "pairwise_cosine_similarity":
        return ck.pairwise_cosine_similarity(x, **option)
    return getattr(ck, name)(x, y, **option)


# A range search without data-dependent shapes is a TypeError before any flag is read.
EAGER_OR_LAZY = pytest.mark.backends(
    *(b.value for b in Backend if b is not Backend.ARRAY_API_STRICTEST)
)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=EAGER_OR_LAZY) if name == "cosine_range_search" else name
        for name in FLAGS
    ],
)
def test_flags_refuse_truthy_values_and_accept_numpy_booleans(xp: ModuleType, name: str) -> None:
    option, truthy = FLAGS[name]
    with pytest.raises(TypeError, match=_both(option, "True or False")):
        _flagged(xp, name, truthy)
    for numpy_bool, plain in ((np.True_, True), (np.False_, False)):
        got = _flagged(xp, name, numpy_bool)
        want = _flagged(xp, name, plain)
        for a, b in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, want)), strict=True):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


@pytest.mark.parametrize(
    ("dtype", "temperature"), [("float64", 1e-320), ("float32", 1e-40)], ids=["float64", "float32"]
)
def test_a_temperature_whose_inverse_overflows_is_a_value_error(
    xp: ModuleType, dtype: str, temperature: float
) -> None:
    x = asarray(xp, np.array([[1.0, 2.0], [3.0, -1.0]]), dtype=getattr(xp, dtype))
    labels = asarray(xp, np.array([0, 0]))
    with pytest.raises(ValueError, match=_both("temperature", dtype)):
        ck.info_nce_loss(x, x, temperature=temperature)
    with pytest.raises(ValueError, match=_both("temperature", dtype)):
        ck.ntxent_loss(x, labels, temperature=temperature)


def test_a_scale_above_the_compute_dtype_is_a_value_error(xp: ModuleType) -> None:
    x = asarray(xp, np.array([[1.0, 2.0], [3.0, -1.0]]), dtype=xp.float32)
    scores = asarray(xp, np.array([1, 0]))
    with pytest.raises(ValueError, match=_both("scale", "float32")):
        ck.cosent_loss(x, x, scores, scale=1e39)


@pytest.mark.backends("numpy")
def test_an_array_temperature_that_overflows_is_a_value_error_where_readable() -> None:
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    with pytest.raises(ValueError, match=_both("temperature", "float64")):
        ck.info_nce_loss(x, x, temperature=np.asarray(1e-320))
    # A float64 array against float32 inputs: checked before the cast (to inf).
    single = x.astype(np.float32)
    with pytest.raises(ValueError, match=_both("scale", "float32")):
        ck.cosent_loss(single, single, np.array([1, 0]), scale=np.asarray(1e39))
    with pytest.raises(ValueError, match=_both("temperature", "float32")):
        ck.info_nce_loss(single, single, temperature=np.asarray(1e-40))
    # float16 is computed in float32: the bound is float32's.
    half = x.astype(np.float16)
    with pytest.raises(ValueError, match=_both("scale", "float32")):
        ck.cosent_loss(half, half, np.array([1, 0]), scale=1e39)


# Each call with feature sizes 3 and 5: the error names both public arguments.
MISMATCHED: dict[str, tuple[tuple[str, str], Any]] = {
    "info_nce_loss": (("queries", "keys"), ck.info_nce_loss),
    "cosine_topk": (("queries", "keys"), lambda a, b: ck.cosine_topk(a, b, 1)),
    "cosine_range_search": (("queries", "keys"), lambda a, b: ck.cosine_range_search(a, b, 0.5)),
    "pairwise_cosine_similarity": (("x", "y"), ck.pairwise_cosine_similarity),
    "cosent_loss": (("x1", "x2"), lambda a, b: ck.cosent_loss(a, b, np.arange(2))),
    "cosine_triplet_loss": (("anchor", "negative"), lambda a, b: ck.cosine_triplet_loss(a, a, b)),
    "cosine_distance_loss": (("labels", "predictions"), ck.cosine_distance_loss),
}


@pytest.mark.backends("numpy")
@pytest.mark.parametrize("name", MISMATCHED)
def test_mismatched_feature_sizes_name_the_public_arguments(name: str) -> None:
    (first, second), call = MISMATCHED[name]
    with pytest.raises(ValueError, match=_both(first, second, "3", "5")):
        call(np.ones((2, 3)), np.ones((2, 5)))
