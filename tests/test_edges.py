"""The contract's edges (issue 11): hostile inputs, eps outside the dtype, lazy and meta arrays.

Each test checks against an independent reference: NumPy float64 formulas,
PyTorch's own functions, or the error the contract names.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import Backend, asarray, xp_assert_close

SHAPE = (2, 3)


def _both(*words: str) -> str:
    """A pattern that matches text containing every one of ``words``."""
    return "(?s)" + "".join(f"(?=.*{re.escape(word)})" for word in words)


# -- NumPy masked arrays and np.matrix ----------------------------------------

ARRAY_CALLS = {
    "cosine_similarity": ck.cosine_similarity,
    "cosine_distance": ck.cosine_distance,
    "angular_distance": ck.angular_distance,
    "cosine_distance_loss": ck.cosine_distance_loss,
    "cosine_embedding_loss": lambda a, b: ck.cosine_embedding_loss(a, b, np.ones(SHAPE[0])),
    "l2_normalize": lambda a, b: ck.l2_normalize(a),
    "pairwise_cosine_similarity": ck.pairwise_cosine_similarity,
    "pairwise_cosine_distance": ck.pairwise_cosine_distance,
    "cosine_topk": lambda a, b: ck.cosine_topk(a, b, 1),
}


@pytest.mark.parametrize("name", ARRAY_CALLS)
def test_masked_array_is_type_error(name: str) -> None:
    plain = np.arange(1.0, 7.0).reshape(SHAPE)
    masked = np.ma.array(plain, mask=[[0, 1, 0], [0, 0, 0]])
    call = ARRAY_CALLS[name]
    with pytest.raises(TypeError, match=_both("masked array", "mask")):
        call(masked, plain)
    if name != "l2_normalize":
        with pytest.raises(TypeError, match=_both("masked array", "mask")):
            call(plain, masked)
    # A masked array without any masked value is still refused: its type says
    # the mask matters.
    with pytest.raises(TypeError, match="masked array"):
        call(np.ma.array(plain), np.ma.array(plain))


def test_masked_array_in_side_arguments_is_type_error() -> None:
    x = np.arange(1.0, 7.0).reshape(SHAPE)
    masked_row = np.ma.array(np.ones(SHAPE[0]), mask=[0, 1])
    with pytest.raises(TypeError, match=_both("weights", "masked array")):
        ck.cosine_distance_loss(x, x, weights=masked_row)
    with pytest.raises(TypeError, match=_both("target", "masked array")):
        ck.cosine_embedding_loss(x, x, masked_row)
    masked_features = np.ma.array(np.ones(SHAPE[1]), mask=[0, 1, 0])
    with pytest.raises(TypeError, match=_both("feature_weights", "masked array")):
        ck.cosine_similarity(x, x, feature_weights=masked_features)


def test_masked_array_hint_gives_the_masked_cosine() -> None:
    """The error's suggestion, ``feature_weights=1 - x.mask``, is the masked cosine."""
    x1 = np.ma.array([[1.0, 5.0, 0.0]], mask=[[0, 1, 0]])
    x2 = np.array([[1.0, -7.0, 0.0]])
    weights = 1 - np.ma.getmaskarray(x1)[0]
    result = ck.cosine_similarity(x1.data, x2, feature_weights=weights)
    np.testing.assert_allclose(result, [1.0])


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("name", ARRAY_CALLS)
def test_numpy_matrix_is_type_error(name: str) -> None:
    plain = np.arange(1.0, 7.0).reshape(SHAPE)
    with pytest.raises(TypeError, match=re.escape("numpy.matrix")):
        ARRAY_CALLS[name](np.asmatrix(plain), plain)


# -- cosine_embedding_loss: target dtype and margin ---------------------------


def test_embedding_loss_string_or_object_target_is_type_error(xp: ModuleType) -> None:
    x = asarray(xp, np.arange(1.0, 7.0).reshape(SHAPE))
    if array_api_namespace_is_numpy(xp):
        bad_targets = [np.array(["1", "-1"]), np.array([1, -1], dtype=object)]
        for target in bad_targets:
            with pytest.raises(TypeError, match=_both("target", "dtype")):
                ck.cosine_embedding_loss(x, x, target)
    complex_target = asarray(xp, np.array([1, -1], dtype=np.complex128))
    with pytest.raises(TypeError, match=_both("target", "dtype")):
        ck.cosine_embedding_loss(x, x, complex_target)


def array_api_namespace_is_numpy(xp: ModuleType) -> bool:
    import array_api_compat

    return array_api_compat.is_numpy_namespace(xp)


@pytest.mark.parametrize("margin", [float("nan"), float("inf"), -float("inf")])
def test_embedding_loss_non_finite_margin_is_value_error(xp: ModuleType, margin: float) -> None:
    x = asarray(xp, np.arange(1.0, 7.0).reshape(SHAPE))
    target = asarray(xp, np.array([1, -1]))
    with pytest.raises(ValueError, match=_both("margin", "finite")):
        ck.cosine_embedding_loss(x, x, target, margin=margin)


@pytest.mark.parametrize("target_dtype", ["int64", "float32", "bool"])
def test_embedding_loss_numeric_targets_match_torch(xp: ModuleType, target_dtype: str) -> None:
    torch = pytest.importorskip("torch", reason="PyTorch is the reference")
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    target = np.array([1, -1, 1, -1, 0, 1]).astype(target_dtype)
    torch_target = torch.from_numpy(np.where(target.astype(np.float64) == 1, 1.0, -1.0))
    reference = torch.nn.functional.cosine_embedding_loss(
        torch.from_numpy(x1), torch.from_numpy(x2), torch_target, margin=0.25, reduction="none"
    ).numpy()
    if target_dtype != "bool":
        # PyTorch's "other" targets give 0, as ours.
        reference = np.where(target.astype(np.float64) == 0, 0.0, reference)
    else:
        # A boolean False is no -1: it is "any other value", loss 0.
        reference = np.where(target, reference, 0.0)
    got = ck.cosine_embedding_loss(
        asarray(xp, x1), asarray(xp, x2), asarray(xp, target), margin=0.25, reduction="none"
    )
    xp_assert_close(got, reference, xp=xp, dtype=got.dtype, rtol=1e-10, atol=1e-12)


# -- NaN is never hidden (angular_distance and every comparison) --------------

KINDS = {
    "finite": [1.0, -2.0, 0.5],
    "other": [0.3, 4.0, -1.0],
    "zero": [0.0, 0.0, 0.0],
    "nan": [1.0, np.nan, 0.0],
    "inf": [np.inf, 1.0, 0.0],
    "neg_inf": [0.0, -np.inf, 0.0],
    "nan_only": [np.nan, np.nan, np.nan],
}


def _kind_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair of row kinds, as two (k, 3) float64 arrays."""
    names = list(KINDS)
    pairs = [(a, b) for a in names for b in names]
    x1 = np.array([KINDS[a] for a, _ in pairs])
    x2 = np.array([KINDS[b] for _, b in pairs])
    return x1, x2


def _reference_cosine(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """float64 cosine, 0 at zero rows, NaN where a row holds NaN or inf."""
    finite = np.isfinite(x1).all(-1) & np.isfinite(x2).all(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Rows scaled by their largest magnitude, so that no square underflows.
        x1, x2 = (
            x / np.where(np.isfinite(x) & (x != 0), abs(x), 1).max(-1, keepdims=True)
            for x in (x1, x2)
        )
        n1, n2 = np.linalg.norm(x1, axis=-1), np.linalg.norm(x2, axis=-1)
        cosine = np.where((n1 == 0) | (n2 == 0), 0.0, np.sum(x1 * x2, -1) / (n1 * n2))
    return np.where(finite, cosine, np.nan)


ROW_REFERENCES = {
    "cosine_similarity": lambda c: c,
    "cosine_distance": lambda c: 1 - c,
    "angular_distance": lambda c: np.arccos(np.clip(c, -1, 1)) / np.pi,
}


@pytest.mark.parametrize("eps", [None, 1e-3])
@pytest.mark.parametrize("name", list(ROW_REFERENCES))
def test_non_finite_rows_give_nan_whatever_the_other_row(
    xp: ModuleType, library: Backend, name: str, eps: float | None
) -> None:
    x1, x2 = _kind_pairs()
    expected = ROW_REFERENCES[name](_reference_cosine(x1, x2))
    function = getattr(ck, name)
    got = function(asarray(xp, x1), asarray(xp, x2), eps=eps)
    xp_assert_close(got, expected, xp=xp, dtype=got.dtype, rtol=1e-12, atol=1e-15)
    if library is Backend.JAX:
        import jax

        a, b = asarray(xp, x1), asarray(xp, x2)
        traced_results = [
            jax.jit(lambda u: function(u, b, eps=eps))(a),
            jax.jit(lambda v: function(a, v, eps=eps))(b),
            jax.jit(lambda u, v: function(u, v, eps=eps))(a, b),
        ]
        for result in traced_results:
            xp_assert_close(result, expected, xp=xp, dtype=got.dtype, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(ROW_REFERENCES))
def test_nan_feature_weight_gives_nan(xp: ModuleType, name: str) -> None:
    x1, x2 = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), np.array([[1.0, 2.0, 3.0]] * 2)
    weights = np.array([1.0, np.nan, 1.0])
    got = getattr(ck, name)(asarray(xp, x1), asarray(xp, x2), feature_weights=asarray(xp, weights))
    xp_assert_close(got, [np.nan, np.nan], xp=xp, dtype=got.dtype)
    # A weight 0 masks a NaN feature (optax's where); a NaN weight never masks.
    masked = np.array([[1.0, np.nan, 3.0]])
    got = getattr(ck, name)(
        asarray(xp, masked), asarray(xp, x2[:1]), feature_weights=asarray(xp, [1.0, 0.0, 1.0])
    )
    expected = ROW_REFERENCES[name](_reference_cosine(masked[:, [0, 2]], x2[:1, [0, 2]]))
    # arccos of a cosine near 1 keeps only half the digits: the reference's own error.
    xp_assert_close(got, expected, xp=xp, dtype=got.dtype, rtol=1e-12, atol=1e-7)


def test_non_finite_rows_under_torch_compile() -> None:
    torch = pytest.importorskip("torch")
    x1, x2 = _kind_pairs()
    a, b = torch.from_numpy(x1), torch.from_numpy(x2)
    for name, reference in ROW_REFERENCES.items():
        compiled = torch.compile(getattr(ck, name), fullgraph=True, backend="eager")
        expected = reference(_reference_cosine(x1, x2))
        np.testing.assert_allclose(compiled(a, b).numpy(), expected, rtol=1e-12, atol=1e-15)


# -- eps outside the compute dtype --------------------------------------------


def _eps_calls() -> dict[str, Any]:
    """Each function that takes ``eps``, as ``(call(x1, x2, eps), float64 reference)``."""

    def normalize_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a / np.where(a != 0, abs(a), 1).max(-1, keepdims=True)
        norm = np.linalg.norm(a, axis=-1, keepdims=True)
        return np.where(norm == 0, 0.0, a / np.where(norm == 0, 1.0, norm))

    def pairwise_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ua, ub = normalize_reference(a, a), normalize_reference(b, b)
        return np.clip(ua @ ub.T, -1, 1)

    return {
        "cosine_similarity": (
            lambda a, b, eps: ck.cosine_similarity(a, b, eps=eps),
            _reference_cosine,
        ),
        "cosine_distance": (
            lambda a, b, eps: ck.cosine_distance(a, b, eps=eps),
            lambda a, b: 1 - _reference_cosine(a, b),
        ),
        "angular_distance": (
            lambda a, b, eps: ck.angular_distance(a, b, eps=eps),
            lambda a, b: np.arccos(np.clip(_reference_cosine(a, b), -1, 1)) / np.pi,
        ),
        "l2_normalize": (lambda a, b, eps: ck.l2_normalize(a, eps=eps), normalize_reference),
        "cosine_distance_loss": (
            lambda a, b, eps: ck.cosine_distance_loss(a, b, eps=eps, reduction="none"),
            lambda a, b: 1 - _reference_cosine(a, b),
        ),
        "cosine_embedding_loss": (
            lambda a, b, eps: ck.cosine_embedding_loss(
                a, b, _like(a, np.ones(a.shape[0])), eps=eps, reduction="none"
            ),
            lambda a, b: 1 - _reference_cosine(a, b),
        ),
        "pairwise_cosine_similarity": (
            lambda a, b, eps: ck.pairwise_cosine_similarity(a, b, eps=eps),
            pairwise_reference,
        ),
        "pairwise_cosine_distance": (
            lambda a, b, eps: ck.pairwise_cosine_distance(a, b, eps=eps),
            lambda a, b: 1 - pairwise_reference(a, b),
        ),
    }


def _like(x: Any, values: np.ndarray) -> Any:
    """``values`` as an array of ``x``'s library and device."""
    import array_api_compat

    xp = array_api_compat.array_namespace(x)
    if array_api_compat.is_dask_array(x):
        import dask.array as da

        return da.from_array(values)
    return xp.asarray(values, device=array_api_compat.device(x))


EPS_NAMES = list(_eps_calls())


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("name", EPS_NAMES)
def test_eps_below_the_dtype_clamps_nothing(xp: ModuleType, name: str, dtype: str) -> None:
    from _support import tolerance

    if not hasattr(xp, dtype):
        pytest.skip(f"this namespace has no {dtype}")
    magnitude = {"float16": 1e-4, "float32": 1e-30, "float64": 1e-300}[dtype]
    x1 = np.array([[1.0, 2.0, -3.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [3.0, -1.0, 2.0]])
    x2 = np.array([[2.0, 1.0, 1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 2.0, 0.5]])
    x1 = (x1 * magnitude).astype(dtype)
    x2 = x2.astype(dtype)
    call, reference = _eps_calls()[name]
    expected = reference(x1.astype(np.float64), x2.astype(np.float64))
    tiny_values = {"float16": [1e-50, 1e-40], "float32": [1e-50, 1e-40], "float64": [1e-320]}
    for tiny in tiny_values[dtype]:
        got = call(asarray(xp, x1), asarray(xp, x2), tiny)
        rtol = tolerance(getattr(xp, dtype))
        xp_assert_close(got, expected, xp=xp, dtype=getattr(xp, dtype), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", EPS_NAMES)
def test_eps_above_the_dtype_is_value_error(xp: ModuleType, name: str) -> None:
    call = _eps_calls()[name][0]
    x32 = asarray(xp, np.ones(SHAPE, dtype=np.float32))
    with pytest.raises(ValueError, match=_both("eps", "float32")):
        call(x32, x32, 1e39)
    # float16 is computed in float32: an eps beyond float16's 65504 is allowed
    # and clamps every norm here (similarity 1 * 3 / 1e5**2).
    if hasattr(xp, "float16"):
        x16 = asarray(xp, np.ones(SHAPE, dtype=np.float16))
        result = call(x16, x16, 1e5)
        assert result.dtype == xp.float16
    x64 = asarray(xp, np.ones(SHAPE))
    call(x64, x64, 1e39)  # fine in float64, whose largest value is a Python float's


@pytest.mark.parametrize("name", ["cosine_similarity", "l2_normalize"])
def test_large_eps_matches_torch(xp: ModuleType, name: str) -> None:
    torch = pytest.importorskip("torch", reason="PyTorch is the reference")
    x1 = np.array([[1.0, 2.0, -3.0], [3e30, -1e30, 2e30]], dtype=np.float32)
    x2 = np.array([[2.0, 1.0, 1.0], [-1.0, 2.0, 0.5]], dtype=np.float32)
    eps = 1e30
    if name == "cosine_similarity":
        got = ck.cosine_similarity(asarray(xp, x1), asarray(xp, x2), eps=eps)
        n1 = np.maximum(np.linalg.norm(x1.astype(np.float64), axis=-1), eps)
        n2 = np.maximum(np.linalg.norm(x2.astype(np.float64), axis=-1), eps)
        expected = np.sum(x1.astype(np.float64) * x2, -1) / (n1 * n2)
    else:
        got = ck.l2_normalize(asarray(xp, x1), eps=eps)
        expected = torch.nn.functional.normalize(
            torch.from_numpy(x1.astype(np.float64)), eps=eps
        ).numpy()
    xp_assert_close(got, expected, xp=xp, dtype=xp.float32, rtol=1e-5, atol=1e-37)
