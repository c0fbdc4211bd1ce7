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
from sklearn.metrics.pairwise import cosine_similarity as sklearn_cosine

import cosinekit as ck
from _support import HAS_FLOAT16, Backend, asarray, capabilities, numpy_matrix, xp_assert_close

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
    "cosine_range_search": lambda a, b: ck.cosine_range_search(a, b, 0.5),
    "cosine_similar_pairs": lambda a, b: ck.cosine_similar_pairs(a, 0.5),
    "cosine_communities": lambda a, b: ck.cosine_communities(a, 0.5),
    "mine_hard_negatives": lambda a, b: ck.mine_hard_negatives(
        a, b, np.zeros(SHAPE[0], dtype=np.int64), k=1
    ),
    "info_nce_loss": ck.info_nce_loss,
    "ntxent_loss": lambda a, b: ck.ntxent_loss(a, np.arange(SHAPE[0]) + 0 * b[:, 0]),
    "cosent_loss": lambda a, b: ck.cosent_loss(a, b, np.arange(SHAPE[0])),
    "cosine_triplet_loss": lambda a, b: ck.cosine_triplet_loss(a, b, b),
}


# The functions of one array argument (the second argument above is unused).
ONE_ARRAY = {"l2_normalize", "cosine_similar_pairs", "cosine_communities"}


@pytest.mark.backends("numpy")
def test_every_numpy_function_is_checked_for_masked_arrays() -> None:
    assert sorted(ARRAY_CALLS) == sorted(capabilities(backend="numpy"))


@pytest.mark.backends("numpy")
@pytest.mark.parametrize("name", ARRAY_CALLS)
def test_masked_array_is_type_error(name: str) -> None:
    plain = np.arange(1.0, 7.0).reshape(SHAPE)
    masked = np.ma.array(plain, mask=[[0, 1, 0], [0, 0, 0]])
    call = ARRAY_CALLS[name]
    with pytest.raises(TypeError, match=_both("masked array", "mask")):
        call(masked, plain)
    if name not in ONE_ARRAY:
        with pytest.raises(TypeError, match=_both("masked array", "mask")):
            call(plain, masked)
    # A masked array without any masked value is still refused: its type says
    # the mask matters.
    with pytest.raises(TypeError, match="masked array"):
        call(np.ma.array(plain), np.ma.array(plain))


@pytest.mark.backends("numpy")
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


@pytest.mark.backends("numpy")
def test_masked_array_hint_gives_the_masked_cosine() -> None:
    """The error's suggestion, ``feature_weights=1 - x.mask``, is the masked cosine."""
    x1 = np.ma.array([[1.0, 5.0, 0.0]], mask=[[0, 1, 0]])
    x2 = np.array([[1.0, -7.0, 0.0]])
    weights = 1 - np.ma.getmaskarray(x1)[0]
    result = ck.cosine_similarity(x1.data, x2, feature_weights=weights)
    np.testing.assert_allclose(result, [1.0])


@pytest.mark.backends("numpy")
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


@pytest.mark.parametrize(("name", "eps"), numpy_matrix(list(ROW_REFERENCES), [None, 1e-3]))
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


@pytest.mark.backends("torch")
def test_non_finite_rows_under_torch_compile(xp: ModuleType) -> None:
    import torch

    x1, x2 = _kind_pairs()
    a, b = asarray(xp, x1), asarray(xp, x2)
    for name, reference in ROW_REFERENCES.items():
        compiled = torch.compile(getattr(ck, name), fullgraph=True, backend="eager")
        expected = reference(_reference_cosine(x1, x2))
        xp_assert_close(
            compiled(a, b), expected, xp=xp, dtype=torch.float64, rtol=1e-12, atol=1e-15
        )


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


@pytest.mark.parametrize(
    ("name", "dtype"),
    numpy_matrix(EPS_NAMES, [pytest.param("float16", marks=HAS_FLOAT16), "float32", "float64"]),
)
def test_eps_below_the_dtype_clamps_nothing(xp: ModuleType, name: str, dtype: str) -> None:
    from _support import tolerance

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


# -- Dask arrays of unknown chunk sizes ---------------------------------------


def _with_unit_diagonal(matrix: np.ndarray) -> np.ndarray:
    """scikit-learn's self-similarity with our exact diagonal: 1, or 0 for zero rows."""
    np.fill_diagonal(matrix, (np.abs(np.diagonal(matrix)) > 0.5).astype(float))
    return matrix


@pytest.mark.backends("dask")
def test_dask_unknown_chunk_sizes_name_the_fix() -> None:
    import dask.array as da

    data = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [-1.0, 0.5, 2.0], [0.0, 0.0, 0.0]])
    x = da.from_array(data, chunks=2)
    filtered = x[x[:, 0] >= 0]  # shape (nan, 3)
    assert np.isnan(filtered.shape[0])
    calls = {
        "cosine_similarity": lambda a: ck.cosine_similarity(a, a),
        "l2_normalize": ck.l2_normalize,
        "cosine_distance_loss": lambda a: ck.cosine_distance_loss(a, a),
        "cosine_embedding_loss": lambda a: ck.cosine_embedding_loss(a, a, da.ones(1)),
        "pairwise_cosine_similarity": ck.pairwise_cosine_similarity,
    }
    for name, call in calls.items():
        with pytest.raises(
            ValueError, match=_both("unknown chunk sizes", "compute_chunk_sizes()")
        ):
            call(filtered)
        # The fix the message names works, and gives the eager result.
        known = filtered.copy()
        known.compute_chunk_sizes()
        kept = data[data[:, 0] >= 0]
        self_cosine = np.diagonal(sklearn_cosine(kept))  # 1, and 0 for the zero row
        expected = {
            "cosine_similarity": self_cosine,
            "l2_normalize": kept
            / np.maximum(np.linalg.norm(kept, axis=-1, keepdims=True), 1e-300),
            "cosine_distance_loss": np.mean(1 - self_cosine),
            "cosine_embedding_loss": np.mean(1 - self_cosine),
            "pairwise_cosine_similarity": _with_unit_diagonal(sklearn_cosine(kept)),
        }[name]
        np.testing.assert_allclose(call(known).compute(), expected, rtol=1e-15, atol=1e-15)
    # In a side argument too.
    weights = da.ones(4, chunks=2)
    with pytest.raises(ValueError, match=_both("weights", "compute_chunk_sizes()")):
        ck.cosine_distance_loss(x, x, weights=weights[weights > 0])


# -- torch meta tensors: shapes only ------------------------------------------


@pytest.mark.backends("torch")
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_torch_meta_tensors_give_meta_results(dtype: str) -> None:
    import torch

    torch_dtype = getattr(torch, dtype)
    x = torch.empty((5, 3), device="meta", dtype=torch_dtype)
    y = torch.empty((4, 3), device="meta", dtype=torch_dtype)
    rows = torch.empty(5, device="meta", dtype=torch_dtype)
    features = torch.ones(3, device="meta")
    functional = torch.nn.functional
    # Each call and PyTorch's own function on the same meta tensors (the reference
    # shape), or the shape the contract gives where PyTorch has no equivalent.
    cases = {
        "cosine_similarity": (
            ck.cosine_similarity(x, x, eps=1e-3),
            functional.cosine_similarity(x, x),
        ),
        "cosine_distance": (ck.cosine_distance(x, x), (5,)),
        "angular_distance": (ck.angular_distance(x, x, feature_weights=features), (5,)),
        "l2_normalize": (ck.l2_normalize(x), functional.normalize(x)),
        "cosine_distance_loss": (ck.cosine_distance_loss(x, x, weights=rows), ()),
        "cosine_embedding_loss": (
            ck.cosine_embedding_loss(x, x, rows, reduction="none"),
            functional.cosine_embedding_loss(x, x, rows, reduction="none"),
        ),
        "pairwise_cosine_similarity": (ck.pairwise_cosine_similarity(x), x @ x.T),
        "pairwise zero_diagonal": (ck.pairwise_cosine_similarity(x, zero_diagonal=True), (5, 5)),
        "pairwise_cosine_distance": (ck.pairwise_cosine_distance(x, y), x @ y.T),
        "cosine_topk": (ck.cosine_topk(x, y, 2)[0], (5, 2)),
    }
    for name, (got, reference) in cases.items():
        shape = tuple(reference.shape) if isinstance(reference, torch.Tensor) else reference
        assert got.device.type == "meta", name
        assert tuple(got.shape) == shape, name
        assert got.dtype == torch_dtype, name
    # Under autograd too: a meta result that backpropagates shapes.
    leaf = torch.empty((5, 3), device="meta", requires_grad=True)
    ck.cosine_similarity(leaf, torch.empty((5, 3), device="meta")).sum().backward()
    assert leaf.grad is not None
    assert leaf.grad.device.type == "meta"
    assert tuple(leaf.grad.shape) == (5, 3)


# -- gradients do not cross rows -------------------------------------------------


def _masked_pairwise_reference_grad(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """d/dx of sum(w * S) over the finite columns of S = cos(x, y), from plain torch."""
    torch = pytest.importorskip("torch", reason="torch is the gradient reference")
    keep = np.isfinite(y).all(-1)
    t = torch.tensor(x, requires_grad=True)
    unit_y = torch.nn.functional.normalize(torch.tensor(y[keep]), dim=-1)
    similarity = torch.nn.functional.normalize(t, dim=-1) @ unit_y.T
    (similarity * torch.tensor(w[:, keep])).sum().backward()
    assert t.grad is not None
    return t.grad.numpy()


@pytest.mark.backends("torch", "jax")
def test_pairwise_nan_row_of_y_does_not_spread_into_gradients(
    library: Backend, xp: ModuleType
) -> None:
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    y[2, 1] = np.nan
    y[4, 0] = np.inf
    w = rng.standard_normal((4, 5))
    expected = _masked_pairwise_reference_grad(x, y, w)

    def loss(a: Any, b: Any, weights: Any) -> Any:
        s = ck.pairwise_cosine_similarity(a, b)
        keep = xp.isfinite(s)
        return xp.sum(xp.where(keep, s, xp.zeros_like(s)) * weights)

    if library is Backend.TORCH:
        import torch

        b, weights = torch.tensor(y), torch.tensor(w)
        a = torch.tensor(x, requires_grad=True)
        value = ck.pairwise_cosine_similarity(a, b)
        assert np.isnan(value.detach().numpy()[:, [2, 4]]).all()  # NaN still shows
        loss(a, b, weights).backward()
        grads = [a.grad, torch.func.grad(lambda u: loss(u, b, weights))(torch.tensor(x))]
        compiled_input = torch.tensor(x, requires_grad=True)
        torch.compile(lambda u: loss(u, b, weights), backend="eager")(compiled_input).backward()
        grads.append(compiled_input.grad)
        got = [g.numpy() for g in grads]
    else:
        import jax

        b, weights = xp.asarray(y), xp.asarray(w)
        gradient = jax.grad(lambda u: loss(u, b, weights))
        jitted = jax.jit(jax.grad(loss))  # y an argument of the jit, concrete under grad
        got = [np.asarray(gradient(xp.asarray(x))), np.asarray(jitted(xp.asarray(x), b, weights))]
        # y traced too: the NaN row is then a tracer's.
        both = jax.grad(lambda u, v: loss(u, v, weights))(xp.asarray(x), b)
        got.append(np.asarray(both))
    for grad in got:
        np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.backends("torch", "jax")
def test_row_wise_non_finite_partner_affects_only_its_row(
    library: Backend, xp: ModuleType
) -> None:
    """A finite x1 paired with an inf x2: that row's gradient is NaN or 0; other rows exact."""
    torch = pytest.importorskip("torch", reason="torch is the gradient reference")
    x1 = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 0.0], [-2.0, 0.5, 1.0]])
    x2 = np.array([[np.inf, 1.0, 0.0], [2.0, 1.0, 1.0], [1.0, np.nan, 1.0]])
    reference = torch.tensor(x1, requires_grad=True)
    torch.nn.functional.cosine_similarity(reference[1:2], torch.tensor(x2[1:2])).sum().backward()
    assert reference.grad is not None
    expected_row = reference.grad.numpy()[1]

    def nan_free_sum(s: Any) -> Any:
        return xp.sum(xp.where(xp.isnan(s), xp.zeros_like(s), s))

    if library is Backend.TORCH:
        a = torch.tensor(x1, requires_grad=True)
        nan_free_sum(ck.cosine_similarity(a, torch.tensor(x2))).backward()
        assert a.grad is not None
        grads = [
            a.grad.numpy(),
            torch.func.grad(lambda u: nan_free_sum(ck.cosine_similarity(u, torch.tensor(x2))))(
                torch.tensor(x1)
            ).numpy(),
        ]
    else:
        import jax

        gradient = jax.grad(lambda u: nan_free_sum(ck.cosine_similarity(u, xp.asarray(x2))))
        grads = [
            np.asarray(gradient(xp.asarray(x1))),
            np.asarray(
                jax.jit(jax.grad(lambda u, v: nan_free_sum(ck.cosine_similarity(u, v))))(
                    xp.asarray(x1), xp.asarray(x2)
                )
            ),
        ]
    for grad in grads:
        np.testing.assert_allclose(grad[1], expected_row, rtol=1e-12)
        for row in (0, 2):
            # Each entry NaN (the fast paths, as torch's own) or 0 (the branch-free path).
            assert (np.isnan(grad[row]) | (grad[row] == 0)).all(), grad[row]
