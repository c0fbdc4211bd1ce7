"""The contrastive family against the peers' own code, on every backend.

References: ``torch.nn.functional.cross_entropy`` on the cosine logits (what
sentence-transformers' ``MultipleNegativesRankingLoss`` and CLIP compute),
``optax.ntxent``, pytorch-metric-learning's ``NTXentLoss``, the quadratic
CoSENT formula of sentence-transformers written out in float64, and torch's
``TripletMarginWithDistanceLoss``. Each runs on float64 CPU copies of the
inputs, whatever the backend under test. Gradients are compared with torch
autograd of the reference, from torch and from ``jax.grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import (
    HAS_BFLOAT16,
    HAS_FLOAT16,
    Backend,
    asarray,
    numpy_matrix,
    to_numpy,
    tolerance,
    xp_assert_close,
)

Array = Any
N, M, D = 6, 9, 5


def _torch() -> ModuleType:
    return pytest.importorskip("torch", reason="torch is the reference implementation")


def _t(x: np.ndarray, grad: bool = False) -> Any:
    torch = _torch()
    return torch.tensor(np.asarray(x, np.float64), requires_grad=grad)


def _unit_torch(x: Any) -> Any:
    return _torch().nn.functional.normalize(x, dim=-1)


def _data(seed: int = 0, n: int = N, m: int = M, d: int = D) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 3 * rng.standard_normal((n, d)), 3 * rng.standard_normal((m, d))


# --- references ----------------------------------------------------------------


def torch_info_nce(
    q: Any, k: Any, temperature: Any, labels: Any = None, symmetric: bool = False
) -> Any:
    """sentence-transformers' MNRL (scale = 1/temperature) and CLIP's loss, in torch."""
    torch = _torch()
    functional = torch.nn.functional
    logits = _unit_torch(q) @ _unit_torch(k).T / temperature
    target = torch.arange(q.shape[0]) if labels is None else torch.as_tensor(labels)
    loss = functional.cross_entropy(logits, target, reduction="none")
    if symmetric:
        loss = (loss + functional.cross_entropy(logits.T, target, reduction="none")) / 2
    return loss


def quadratic_cosent(x1: Any, x2: Any, scores: np.ndarray, scale: float) -> Any:
    """sentence-transformers' CoSENTLoss formula: the n x n matrix, in torch float64."""
    torch = _torch()
    cos = torch.nn.functional.cosine_similarity(x1, x2, dim=-1)
    diff = scale * (cos[None, :] - cos[:, None])  # [i, j] = scale * (c_j - c_i)
    s = torch.as_tensor(scores)
    mask = s[:, None] > s[None, :]
    terms = torch.cat([torch.zeros(1, dtype=cos.dtype), diff[mask]])
    return torch.logsumexp(terms, dim=0)


def torch_triplet(a: Any, p: Any, n: Any, margin: float, swap: bool, reduction: str) -> Any:
    torch = _torch()
    loss = torch.nn.TripletMarginWithDistanceLoss(
        distance_function=lambda x, y: 1 - torch.nn.functional.cosine_similarity(x, y),
        margin=margin,
        swap=swap,
        reduction=reduction,
    )
    return loss(a, p, n)


def pml_ntxent(embeddings: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    torch = _torch()
    losses = pytest.importorskip(
        "pytorch_metric_learning.losses", reason="pytorch-metric-learning is a reference"
    )
    loss = losses.NTXentLoss(temperature=temperature)
    return float(loss(_t(embeddings), torch.as_tensor(labels)))


def optax_ntxent(embeddings: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    optax = pytest.importorskip("optax", reason="optax is a reference")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    return float(optax.ntxent(jnp.asarray(embeddings), jnp.asarray(labels), temperature))


def _tol(dtype: str) -> dict[str, float]:
    return {"rtol": 10 * tolerance(dtype), "atol": 10 * tolerance(dtype)}


# --- info_nce_loss -----------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "reduction", "dtype"),
    numpy_matrix(
        ["in-batch", "hard-negatives", "labels", "symmetric", "temperature-1"],
        ["none", "sum", "mean"],
        ["float64", "float32"],
    ),
)
def test_info_nce_matches_torch_cross_entropy(
    xp: ModuleType, variant: str, reduction: str, dtype: str
) -> None:
    q, k = _data()
    temperature = 1.0 if variant == "temperature-1" else 0.05
    kwargs: dict[str, Any] = {"temperature": temperature}
    labels = None
    if variant in ("in-batch", "symmetric", "temperature-1"):
        k = k[:N]
    if variant == "labels":
        labels = np.array([3, 0, 8, 8, 1, 5])
        kwargs["labels"] = asarray(xp, labels)
    if variant == "symmetric":
        kwargs["symmetric"] = True
    expected = torch_info_nce(_t(q), _t(k), temperature, labels, variant == "symmetric")
    if reduction != "none":
        expected = getattr(expected, reduction)()
    loss = ck.info_nce_loss(
        asarray(xp, q, getattr(xp, dtype)),
        asarray(xp, k, getattr(xp, dtype)),
        reduction=reduction,
        **kwargs,
    )
    xp_assert_close(
        loss, expected.detach().numpy(), xp=xp, dtype=getattr(xp, dtype), **_tol(dtype)
    )


def test_info_nce_temperature_array(xp: ModuleType) -> None:
    q, k = _data()
    expected = torch_info_nce(_t(q), _t(k), 0.2).mean()
    loss = ck.info_nce_loss(
        asarray(xp, q), asarray(xp, k), temperature=asarray(xp, np.asarray(0.2))
    )
    xp_assert_close(loss, expected.detach().numpy(), xp=xp, dtype=xp.float64, rtol=1e-12)


# --- ntxent_loss -------------------------------------------------------------

LABELINGS = {
    "two-views": np.array([0, 1, 2, 3, 0, 1, 2, 3]),
    "groups": np.array([0, 0, 0, 1, 1, 2, 2, 2]),
    "singletons-too": np.array([0, 0, 5, 1, 1, 7, 2, 2]),
}


PEERS = {"optax.ntxent": optax_ntxent, "pytorch-metric-learning": pml_ntxent}
JAX_SESSION = pytest.mark.backends("jax")


@pytest.mark.parametrize(
    ("labeling", "temperature", "peer"),
    numpy_matrix(
        list(LABELINGS),
        [0.07, 0.5],
        # optax is installed with JAX, in its session only.
        [pytest.param("optax.ntxent", marks=JAX_SESSION), "pytorch-metric-learning"],
    ),
)
def test_ntxent_matches_the_peers(
    xp: ModuleType, labeling: str, temperature: float, peer: str
) -> None:
    labels = LABELINGS[labeling]
    z = _data(1, n=len(labels))[0]
    expected = PEERS[peer](z, labels, temperature)
    loss = ck.ntxent_loss(asarray(xp, z), asarray(xp, labels), temperature=temperature)
    xp_assert_close(loss, expected, xp=xp, dtype=xp.float64, rtol=1e-12)
    z32 = asarray(xp, z, xp.float32)
    loss32 = ck.ntxent_loss(z32, asarray(xp, labels), temperature=temperature)
    xp_assert_close(loss32, expected, xp=xp, dtype=xp.float32, **_tol("float32"))


def test_ntxent_without_positive_pairs_is_zero(xp: ModuleType) -> None:
    z = _data(2, n=4)[0]
    labels = np.arange(4)
    loss = ck.ntxent_loss(asarray(xp, z), asarray(xp, labels))
    xp_assert_close(loss, 0.0, xp=xp, dtype=xp.float64, rtol=0)
    # pytorch-metric-learning agrees.
    assert pml_ntxent(z, labels, 0.07) == 0.0


@JAX_SESSION
def test_optax_ntxent_without_positive_pairs_is_nan() -> None:
    # Where the contract says 0 (above), optax divides 0 by 0.
    z = _data(2, n=4)[0]
    assert np.isnan(optax_ntxent(z, np.arange(4), 0.07))


def test_ntxent_positive_far_below_the_row_best(xp: ModuleType) -> None:
    # Positives at cosine 1 and -1 of the anchor, negatives at -1, t = 0.01:
    # a single shift per row (optax's) underflows exp(-200) in float32.
    z = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    labels = np.array([0, 0, 0, 1])
    expected = pml_ntxent(z, labels, 0.01)  # exact in float64
    loss = ck.ntxent_loss(asarray(xp, z, xp.float32), asarray(xp, labels), temperature=0.01)
    xp_assert_close(loss, expected, xp=xp, dtype=xp.float32, rtol=1e-5)


# --- cosent_loss -------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "scale"),
    numpy_matrix(["distinct", "ties", "all-equal", "integers"], [1.0, 20.0, 60.0]),
)
def test_cosent_matches_the_quadratic_formula(xp: ModuleType, scores: str, scale: float) -> None:
    x1, x2 = _data(3, n=40, m=40)
    rng = np.random.default_rng(4)
    gold = {
        "distinct": rng.random(40),
        "ties": rng.integers(0, 4, 40) / 4,
        "all-equal": np.full(40, 0.5),
        "integers": rng.integers(0, 6, 40),
    }[scores]
    expected = quadratic_cosent(_t(x1), _t(x2), gold, scale).numpy()
    loss = ck.cosent_loss(asarray(xp, x1), asarray(xp, x2), asarray(xp, gold), scale=scale)
    xp_assert_close(loss, expected, xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-13)
    loss32 = ck.cosent_loss(
        asarray(xp, x1, xp.float32),
        asarray(xp, x2, xp.float32),
        asarray(xp, gold),
        scale=scale,
    )
    xp_assert_close(loss32, expected, xp=xp, dtype=xp.float32, rtol=1e-5, atol=1e-6)


def test_cosent_feature_axis_and_broadcasting(xp: ModuleType) -> None:
    x1, x2 = _data(5, n=7, m=7)
    gold = np.arange(7.0)[::-1].copy()
    expected = quadratic_cosent(_t(x1), _t(x2), gold, 20.0).numpy()
    loss = ck.cosent_loss(asarray(xp, x1.T), asarray(xp, x2.T), asarray(xp, gold), axis=0)
    xp_assert_close(loss, expected, xp=xp, dtype=xp.float64, rtol=1e-12)


# --- cosine_triplet_loss -------------------------------------------------------


@pytest.mark.parametrize(
    ("margin", "swap", "reduction"),
    numpy_matrix([0.2, 1.0], [False, True], ["none", "sum", "mean"]),
)
def test_triplet_matches_torch(xp: ModuleType, margin: float, swap: bool, reduction: str) -> None:
    rng = np.random.default_rng(6)
    a, p, n = (rng.standard_normal((10, D)) for _ in range(3))
    expected = torch_triplet(_t(a), _t(p), _t(n), margin, swap, reduction).numpy()
    loss = ck.cosine_triplet_loss(
        asarray(xp, a),
        asarray(xp, p),
        asarray(xp, n),
        margin=margin,
        swap=swap,
        reduction=reduction,
    )
    xp_assert_close(loss, expected, xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-14)


def test_triplet_swap_changes_the_result(xp: ModuleType) -> None:
    # The positive is closer to the negative than the anchor is: swap matters.
    a = np.array([[1.0, 0.0]])
    p = np.array([[0.0, 1.0]])
    n = np.array([[0.1, 1.0]])
    plain = ck.cosine_triplet_loss(asarray(xp, a), asarray(xp, p), asarray(xp, n), margin=0.1)
    swapped = ck.cosine_triplet_loss(
        asarray(xp, a), asarray(xp, p), asarray(xp, n), margin=0.1, swap=True
    )
    assert float(to_numpy(swapped)) > float(to_numpy(plain))


# --- gradients -----------------------------------------------------------------


AUTODIFF = pytest.mark.backends("torch", "jax")


def _grads(
    xp: ModuleType, library: Backend, fn: Callable[..., Any], arrays: list[np.ndarray]
) -> list[np.ndarray]:
    """Gradients of ``fn(*arrays)`` (a 0-d result) w.r.t. every array, by the backend."""
    if library is Backend.JAX:
        import jax

        inputs = [asarray(xp, a) for a in arrays]
        grads = jax.grad(fn, argnums=tuple(range(len(arrays))))(*inputs)
        return [np.asarray(g) for g in grads]
    inputs = [asarray(xp, a).requires_grad_(True) for a in arrays]
    fn(*inputs).backward()
    # An input the loss does not use (ntxent_loss's second array) gets None.
    return [np.zeros(x.shape) if x.grad is None else x.grad.numpy() for x in inputs]


def _torch_grads(fn: Callable[..., Any], arrays: list[np.ndarray]) -> list[np.ndarray]:
    inputs = [_t(a, grad=True) for a in arrays]
    fn(*inputs).backward()
    return [x.grad.numpy() for x in inputs]


def _check_grads(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    for got, want in zip(actual, expected, strict=True):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@AUTODIFF
@pytest.mark.parametrize("variant", ["hard-negatives", "symmetric", "labels"])
def test_info_nce_gradients_including_temperature(
    xp: ModuleType, library: Backend, variant: str
) -> None:
    q, k = _data(7)
    if variant != "hard-negatives":
        k = k[:N]
    labels = np.array([2, 0, 1, 1, 4, 5]) if variant == "labels" else None
    symmetric = variant == "symmetric"

    def ours(a: Array, b: Array, t: Array) -> Array:
        kwargs: dict[str, Any] = {"temperature": t, "symmetric": symmetric}
        if labels is not None:
            kwargs["labels"] = asarray(xp, labels)
        return ck.info_nce_loss(a, b, **kwargs)

    arrays = [q, k, np.asarray(0.1)]
    expected = _torch_grads(
        lambda a, b, t: torch_info_nce(a, b, t, labels, symmetric).mean(), arrays
    )
    _check_grads(_grads(xp, library, ours, arrays), expected)


@AUTODIFF
def test_ntxent_gradients_including_temperature(xp: ModuleType, library: Backend) -> None:
    labels = LABELINGS["singletons-too"]
    z = _data(8, n=len(labels))[0]
    torch = _torch()
    losses = pytest.importorskip("pytorch_metric_learning.losses", reason="a reference")

    def pml(e: Any, t: Any) -> Any:
        return losses.NTXentLoss(temperature=t)(e, torch.as_tensor(labels))

    expected = _torch_grads(pml, [z, np.asarray(0.3)])
    actual = _grads(
        xp,
        library,
        lambda e, t: ck.ntxent_loss(e, asarray(xp, labels), temperature=t),
        [z, np.asarray(0.3)],
    )
    _check_grads(actual, expected)


@AUTODIFF
def test_cosent_gradients(xp: ModuleType, library: Backend) -> None:
    x1, x2 = _data(9, n=30, m=30)
    gold = np.random.default_rng(10).integers(0, 5, 30) / 5
    expected = _torch_grads(lambda a, b, s: quadratic_cosent(a, b, gold, s), [x1, x2, 20.0])
    actual = _grads(
        xp,
        library,
        lambda a, b, s: ck.cosent_loss(a, b, asarray(xp, gold), scale=s),
        [x1, x2, np.asarray(20.0)],
    )
    _check_grads(actual, expected)


@AUTODIFF
@pytest.mark.parametrize("swap", [False, True])
def test_triplet_gradients(xp: ModuleType, library: Backend, swap: bool) -> None:
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal((8, D)) for _ in range(3)]
    expected = _torch_grads(lambda a, p, n: torch_triplet(a, p, n, 0.5, swap, "mean"), arrays)
    actual = _grads(
        xp, library, lambda a, p, n: ck.cosine_triplet_loss(a, p, n, margin=0.5, swap=swap), arrays
    )
    _check_grads(actual, expected)


# --- the shared rules ------------------------------------------------------------


def _calls(xp: ModuleType) -> dict[str, Callable[..., Any]]:
    """Each loss as a function of float arrays ``(a, b)`` of shape (6, 5)."""
    labels = asarray(xp, np.array([0, 1, 2, 0, 1, 2]))
    gold = asarray(xp, np.array([0.1, 0.5, 0.5, 0.9, 0.0, 0.3]))
    return {
        "info_nce_loss": ck.info_nce_loss,
        "ntxent_loss": lambda a, b, **kw: ck.ntxent_loss(a, labels, **kw),
        "cosent_loss": lambda a, b, **kw: ck.cosent_loss(
            a, b, gold, **({"scale": 1 / kw["temperature"]} if kw else {})
        ),
        "cosine_triplet_loss": lambda a, b, **kw: ck.cosine_triplet_loss(a, b, xp.flip(b, axis=0)),
    }


LOSSES = ["info_nce_loss", "ntxent_loss", "cosent_loss", "cosine_triplet_loss"]


@pytest.mark.parametrize("name", LOSSES)
def test_scale_invariance_at_extreme_magnitudes(xp: ModuleType, name: str) -> None:
    a, b = _data(12, n=6, m=6)
    call = _calls(xp)[name]
    expected = to_numpy(call(asarray(xp, a), asarray(xp, b)))
    for factor in (1e-300, 1e300):
        scaled = call(asarray(xp, a * factor), asarray(xp, b * factor))
        xp_assert_close(scaled, expected, xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-14)
    big = np.float32(3e38) / max(np.max(np.abs(a)), np.max(np.abs(b)))
    scaled32 = call(asarray(xp, a * big, xp.float32), asarray(xp, b * big, xp.float32))
    xp_assert_close(scaled32, expected, xp=xp, dtype=xp.float32, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_zero_vectors_are_finite(xp: ModuleType, library: Backend, name: str) -> None:
    a, b = _data(13, n=6, m=6)
    a[1] = 0.0
    b[2] = 0.0
    call = _calls(xp)[name]
    loss = call(asarray(xp, a), asarray(xp, b))
    assert np.isfinite(to_numpy(loss))
    if library in (Backend.TORCH, Backend.JAX):
        for grad in _grads(xp, library, call, [a, b]):
            assert np.all(np.isfinite(grad))


def test_info_nce_zero_query_sees_uniform_logits(xp: ModuleType) -> None:
    q, k = _data(14, n=3, m=5)
    q[0] = 0.0
    loss = ck.info_nce_loss(asarray(xp, q), asarray(xp, k), reduction="none")
    # Similarity 0 with every key: the cross-entropy of uniform logits, log(m).
    np.testing.assert_allclose(to_numpy(loss)[0], np.log(5), rtol=1e-12)


@pytest.mark.parametrize(
    "dtype",
    [pytest.param("float16", marks=HAS_FLOAT16), pytest.param("bfloat16", marks=HAS_BFLOAT16)],
)
@pytest.mark.parametrize("name", LOSSES)
def test_half_precision_with_temperature_001(xp: ModuleType, name: str, dtype: str) -> None:
    a, b = _data(15, n=6, m=6)
    call = _calls(xp)[name]
    kwargs = {} if name == "cosine_triplet_loss" else {"temperature": 0.01}
    half = getattr(xp, dtype)
    # The reference sees the same half-precision inputs, in float64.
    a_half = to_numpy(asarray(xp, a, getattr(xp, dtype))).astype(np.float64)
    b_half = to_numpy(asarray(xp, b, getattr(xp, dtype))).astype(np.float64)
    expected = to_numpy(call(asarray(xp, a_half), asarray(xp, b_half), **kwargs))
    assert np.isfinite(expected)
    loss = call(xp.astype(asarray(xp, a), half), xp.astype(asarray(xp, b), half), **kwargs)
    rtol = {"float16": 2e-3, "bfloat16": 1e-2}[dtype]
    xp_assert_close(loss, expected, xp=xp, dtype=half, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", LOSSES)
def test_nan_propagates(xp: ModuleType, name: str) -> None:
    a, b = _data(16, n=6, m=6)
    a[0, 2] = np.nan
    loss = _calls(xp)[name](asarray(xp, a), asarray(xp, b))
    assert np.isnan(to_numpy(loss))


def test_info_nce_nan_per_query(xp: ModuleType) -> None:
    q, k = _data(17)
    q[1, 0] = np.nan
    loss = to_numpy(ck.info_nce_loss(asarray(xp, q), asarray(xp, k), reduction="none"))
    assert np.isnan(loss[1])
    assert np.all(np.isfinite(np.delete(loss, 1)))
    k[7, 0] = np.inf  # a hard negative seen by every query
    loss = to_numpy(ck.info_nce_loss(asarray(xp, q), asarray(xp, k), reduction="none"))
    assert np.all(np.isnan(loss))


def test_empty_batches(xp: ModuleType) -> None:
    empty = asarray(xp, np.zeros((0, D)))
    xp_assert_close(ck.info_nce_loss(empty, empty), 0.0, xp=xp, dtype=xp.float64)
    xp_assert_close(
        ck.info_nce_loss(empty, empty, reduction="none"), np.zeros(0), xp=xp, dtype=xp.float64
    )
    xp_assert_close(ck.cosine_triplet_loss(empty, empty, empty), 0.0, xp=xp, dtype=xp.float64)
    xp_assert_close(
        ck.cosent_loss(empty, empty, asarray(xp, np.zeros(0))), 0.0, xp=xp, dtype=xp.float64
    )


# --- errors --------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf")])
def test_non_positive_temperature_is_a_value_error(
    xp: ModuleType, library: Backend, temperature: float
) -> None:
    q, k = _data()
    with pytest.raises(ValueError, match="temperature"):
        ck.info_nce_loss(asarray(xp, q), asarray(xp, k), temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        ck.ntxent_loss(asarray(xp, q), asarray(xp, np.arange(N)), temperature=temperature)
    if library not in (Backend.DASK, Backend.ARRAY_API_STRICTEST):  # values readable
        with pytest.raises(ValueError, match="temperature"):
            ck.info_nce_loss(asarray(xp, q), asarray(xp, k), temperature=asarray(xp, temperature))
    with pytest.raises(ValueError, match="scale"):
        ck.cosent_loss(asarray(xp, q), asarray(xp, q), asarray(xp, np.arange(N)), scale=0)


def test_argument_errors(xp: ModuleType) -> None:
    q, k = _data()
    qa, ka = asarray(xp, q), asarray(xp, k)
    with pytest.raises(ValueError, match="at least as many keys"):
        ck.info_nce_loss(ka, qa)
    with pytest.raises(ValueError, match="symmetric"):
        ck.info_nce_loss(qa, ka, symmetric=True)
    with pytest.raises(ValueError, match="symmetric"):
        ck.info_nce_loss(qa, ka, symmetric=True, labels=asarray(xp, np.arange(N)))
    with pytest.raises(ValueError, match="labels"):
        ck.info_nce_loss(qa, ka, labels=asarray(xp, np.arange(N - 1)))
    with pytest.raises(TypeError, match="labels"):
        ck.info_nce_loss(qa, ka, labels=asarray(xp, np.arange(N, dtype=np.float64)))
    with pytest.raises(ValueError, match="reduction"):
        ck.info_nce_loss(qa, ka, reduction="batchmean")
    with pytest.raises(ValueError, match="queries"):
        ck.info_nce_loss(asarray(xp, q[0]), ka)
    with pytest.raises(ValueError, match="temperature"):
        ck.info_nce_loss(qa, ka, temperature=asarray(xp, np.array([0.1, 0.2])))
    with pytest.raises(TypeError, match="temperature"):
        ck.info_nce_loss(qa, ka, temperature=[0.1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels"):
        ck.ntxent_loss(qa, asarray(xp, np.arange(N + 1)))
    with pytest.raises(ValueError, match="scores"):
        ck.cosent_loss(qa, qa, asarray(xp, np.arange(N + 1)))
    with pytest.raises(ValueError, match="one vector per pair"):
        ck.cosent_loss(asarray(xp, q[None]), asarray(xp, q[None]), asarray(xp, np.arange(N)))
    with pytest.raises(TypeError, match="margin"):
        ck.cosine_triplet_loss(qa, qa, qa, margin="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="array"):
        ck.cosine_triplet_loss(qa, qa, q.tolist())


# Lazy Dask and the strictest array-api-strict flags allow no look at the labels.
@pytest.mark.backends("numpy", "torch", "jax", "array_api_strict", "cupy")
def test_labels_out_of_range(xp: ModuleType) -> None:
    q, k = _data()
    with pytest.raises(ValueError, match=r"\[0, 9\)"):
        ck.info_nce_loss(asarray(xp, q), asarray(xp, k), labels=asarray(xp, np.arange(4, 10)))


# NumPy with NumPy is one library.
@pytest.mark.backends("torch", "jax", "dask", "array_api_strict", "array_api_strictest", "cupy")
def test_mixed_libraries_are_a_type_error(xp: ModuleType) -> None:
    q, k = _data()
    with pytest.raises(TypeError, match=r"one array library|temperature"):
        ck.info_nce_loss(asarray(xp, q), asarray(xp, k), temperature=np.asarray(0.1))
    with pytest.raises(TypeError, match="one array library"):
        ck.ntxent_loss(asarray(xp, q), np.arange(N))
