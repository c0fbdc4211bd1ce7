"""The contrastive losses under every transform, with each argument traced in turn.

For every loss and every one of its array arguments, that argument alone is
traced (``jax.jit``, ``jax.grad``, ``jax.vmap``, ``torch.compile`` with
``fullgraph=True``, ``torch.func.grad`` and ``torch.func.vmap``) while the
others stay concrete, closed over; then all of them at once. The
temperature (or CoSENT's scale) is a 0-d array argument like the others, so
a learnable temperature is traced too. Values are checked against float64
NumPy formulas written here, derivatives against central finite
differences of those formulas. The embeddings hold an ordinary row, a zero
row and a row of magnitude 1e-200, so zero vectors and the rescaled path
run under every transform.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import Backend, asarray, to_numpy

Array = Any
TOL = {"rtol": 1e-11, "atol": 1e-12}


def _unit(x: np.ndarray) -> np.ndarray:
    scale = np.max(np.abs(x), axis=-1, keepdims=True)
    scaled = np.divide(x, scale, out=np.zeros_like(x), where=scale != 0)
    norm = np.linalg.norm(scaled, axis=-1, keepdims=True)
    return np.divide(scaled, norm, out=np.zeros_like(x), where=norm != 0)


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    return np.log(np.sum(np.exp(x - top), axis=axis)) + np.squeeze(top, axis=axis)


def _info_nce(q, k, t, labels=None, symmetric=False) -> np.ndarray:
    logits = _unit(q) @ _unit(k).T / t
    rows = np.arange(q.shape[0])
    target = rows if labels is None else labels
    picked = logits[rows, target]
    loss = _lse(logits, 1) - picked
    if symmetric:
        loss = (loss + _lse(logits, 0) - picked) / 2
    return np.mean(loss)


def _ntxent(z, labels, t) -> np.ndarray:
    s = _unit(z) @ _unit(z).T / t
    total, count = 0.0, 0
    for i in range(len(z)):
        negatives = s[i][labels != labels[i]]
        for j in range(len(z)):
            if i != j and labels[i] == labels[j]:
                total += _lse(np.concatenate([[s[i, j]], negatives]), 0) - s[i, j]
                count += 1
    return np.asarray(total / count)


def _cosent(x1, x2, scores, scale) -> np.ndarray:
    c = np.sum(_unit(x1) * _unit(x2), axis=-1)
    diff = scale * (c[None, :] - c[:, None])
    return _lse(np.concatenate([[0.0], diff[scores[:, None] > scores[None, :]]]), 0)


def _triplet(a, p, n) -> np.ndarray:
    def d(x, y):
        return 1 - np.sum(_unit(x) * _unit(y), axis=-1)

    return np.mean(np.maximum(d(a, p) - np.minimum(d(a, n), d(p, n)) + 0.5, 0))


def _embeddings(seed: int, n: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 5))
    x[1] = 0.0
    x[2] *= 1e-200
    return x


def _cases() -> dict[str, tuple[list[np.ndarray], Callable[..., Any], Callable[..., Any]]]:
    """name -> (arguments, call on arrays, NumPy reference on arrays)."""
    q, k = _embeddings(0, 4), np.random.default_rng(1).standard_normal((6, 5))
    t = np.asarray(0.2)
    labels = np.array([0, 1, 0, 2, 1, 2])
    gold = np.array([3, 9, 1, 3, 5, 7])  # integers: no gradient to take, tie included
    return {
        "info_nce": (
            [q, k, t],
            lambda a, b, s: ck.info_nce_loss(a, b, temperature=s),
            _info_nce,
        ),
        "info_nce_symmetric": (
            [q, k[:4], t],
            lambda a, b, s: ck.info_nce_loss(a, b, temperature=s, symmetric=True),
            lambda a, b, s: _info_nce(a, b, s, symmetric=True),
        ),
        "info_nce_labels": (
            [q, k, labels[:4] + 1, t],
            lambda a, b, lab, s: ck.info_nce_loss(a, b, labels=lab, temperature=s),
            lambda a, b, lab, s: _info_nce(a, b, s, labels=lab),
        ),
        "ntxent": (
            [_embeddings(2, 6), labels, t],
            lambda z, lab, s: ck.ntxent_loss(z, lab, temperature=s),
            _ntxent,
        ),
        "cosent": (
            [_embeddings(3, 6), k, gold, np.asarray(20.0)],
            lambda a, b, g, s: ck.cosent_loss(a, b, g, scale=s),
            _cosent,
        ),
        "triplet": (
            [_embeddings(4, 6), k, np.flip(k, axis=0).copy()],
            lambda a, p, n: ck.cosine_triplet_loss(a, p, n, margin=0.5, swap=True),
            _triplet,
        ),
    }


CASES = list(_cases())
POSITIONS = [0, 1, 2, 3, "all"]


def _setup(name: str, position: int | str) -> tuple[list[np.ndarray], Callable, Callable, list]:
    args, call, ref = _cases()[name]
    if position == "all":
        return args, call, ref, list(range(len(args)))
    if position >= len(args):
        pytest.skip(f"{name} has {len(args)} arguments")
    return args, call, ref, [position]


def _partial(call: Callable, concrete: list[Array], traced: list[int]) -> Callable:
    """``call`` as a function of the arguments at ``traced`` only."""

    def partial(*values: Array) -> Array:
        full = list(concrete)
        for index, value in zip(traced, values, strict=True):
            full[index] = value
        return call(*full)

    return partial


def _differentiable(
    name: str, position: int | str
) -> tuple[list[np.ndarray], Callable, Callable, list]:
    """`_setup`, keeping only the floating arguments (labels have no gradient)."""
    args, call, ref, traced = _setup(name, position)
    traced = [i for i in traced if args[i].dtype.kind == "f"]
    if not traced:
        pytest.skip("integer labels have no gradient")
    return args, call, ref, traced


def _batches(
    name: str, args: list[np.ndarray], traced: list[int]
) -> tuple[list[np.ndarray], Callable[[Callable], list[Any]]]:
    """Two values stacked for each argument at ``traced``, and the expected results."""
    second = _cases()[name][0]
    for i in traced:
        second[i] = second[i][::-1].copy() if second[i].ndim else second[i] * 1.5
    stacked = [np.stack([args[i], second[i]]) for i in traced]
    other = [second[i] if i in traced else a for i, a in enumerate(args)]
    return stacked, lambda ref: [ref(*args), ref(*other)]


def _directional(args: list[np.ndarray], ref: Callable, index: int, grad: np.ndarray) -> None:
    """``grad`` against central differences along the ordinary rows (or the scalar)."""
    direction = np.random.default_rng(5).standard_normal(args[index].shape)
    if args[index].ndim == 2:
        direction[1:3] = 0.0  # the zero row (subgradient 0) and the 1e-200 row
    h = 1e-6 * max(1.0, float(np.max(np.abs(args[index]))))

    def at(step: float) -> float:
        moved = list(args)
        moved[index] = args[index] + step * direction
        return float(ref(*moved))

    expected = (at(h) - at(-h)) / (2 * h)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(np.sum(grad * direction), expected, rtol=1e-5, atol=1e-7)


def _require(library: Backend, wanted: Backend) -> None:
    if library is not wanted:
        pytest.skip(f"a {wanted.value} transform")


# --- JAX -------------------------------------------------------------------------


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name", CASES)
def test_jax_jit(xp: ModuleType, library: Backend, name: str, position: int | str) -> None:
    _require(library, Backend.JAX)
    import jax

    args, call, ref, traced = _setup(name, position)
    arrays = [asarray(xp, a) for a in args]
    result = jax.jit(_partial(call, arrays, traced))(*(arrays[i] for i in traced))
    np.testing.assert_allclose(to_numpy(result), ref(*args), **TOL)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name", CASES)
def test_jax_grad(xp: ModuleType, library: Backend, name: str, position: int | str) -> None:
    _require(library, Backend.JAX)
    import jax

    args, call, ref, traced = _differentiable(name, position)
    arrays = [asarray(xp, a) for a in args]
    grads = jax.jit(jax.grad(_partial(call, arrays, traced), argnums=tuple(range(len(traced)))))(
        *(arrays[i] for i in traced)
    )
    for index, grad in zip(traced, grads, strict=True):
        _directional(args, ref, index, np.asarray(grad))


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name", CASES)
def test_jax_vmap(xp: ModuleType, library: Backend, name: str, position: int | str) -> None:
    _require(library, Backend.JAX)
    import jax

    args, call, ref, traced = _setup(name, position)
    stacked, expected = _batches(name, args, traced)
    arrays = [asarray(xp, a) for a in args]
    result = jax.vmap(_partial(call, arrays, traced))(*(asarray(xp, b) for b in stacked))
    np.testing.assert_allclose(to_numpy(result), expected(ref), **TOL)


# --- PyTorch -----------------------------------------------------------------------


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name", CASES)
def test_torch_compile(xp: ModuleType, library: Backend, name: str, position: int | str) -> None:
    _require(library, Backend.TORCH)
    import torch

    args, call, ref, traced = _setup(name, position)
    arrays = [asarray(xp, a) for a in args]
    torch._dynamo.reset()
    compiled = torch.compile(
        _partial(call, arrays, traced), fullgraph=True, backend="eager", dynamic=False
    )
    result = compiled(*(arrays[i] for i in traced))
    np.testing.assert_allclose(to_numpy(result), ref(*args), **TOL)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name", CASES)
def test_torch_compile_backward(
    xp: ModuleType, library: Backend, name: str, position: int | str
) -> None:
    _require(library, Backend.TORCH)
    import torch

    args, call, ref, traced = _differentiable(name, position)
    arrays = [asarray(xp, a) for a in args]
    inputs = [arrays[i].clone().requires_grad_(True) for i in traced]
    torch._dynamo.reset()
    compiled = torch.compile(_partial(call, arrays, traced), fullgraph=True, backend="aot_eager")
    compiled(*inputs).backward()
    for index, x in zip(traced, inputs, strict=True):
        _directional(args, ref, index, x.grad.numpy())


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name", CASES)
def test_torch_func_grad(xp: ModuleType, library: Backend, name: str, position: int | str) -> None:
    _require(library, Backend.TORCH)
    import torch

    args, call, ref, traced = _differentiable(name, position)
    arrays = [asarray(xp, a) for a in args]
    grads = torch.func.grad(_partial(call, arrays, traced), argnums=tuple(range(len(traced))))(
        *(arrays[i] for i in traced)
    )
    for index, grad in zip(traced, grads, strict=True):
        _directional(args, ref, index, grad.numpy())


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name", CASES)
def test_torch_func_vmap(xp: ModuleType, library: Backend, name: str, position: int | str) -> None:
    _require(library, Backend.TORCH)
    import torch

    args, call, ref, traced = _setup(name, position)
    stacked, expected = _batches(name, args, traced)
    arrays = [asarray(xp, a) for a in args]
    result = torch.func.vmap(_partial(call, arrays, traced))(*(asarray(xp, b) for b in stacked))
    np.testing.assert_allclose(to_numpy(result), expected(ref), **TOL)


# --- Dask --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_dask_stays_lazy(xp: ModuleType, library: Backend, name: str) -> None:
    _require(library, Backend.DASK)
    import dask
    import dask.array as da

    args, call, ref = _cases()[name]
    computes: list[int] = []

    def counting_scheduler(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        computes.append(1)
        return dask.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=counting_scheduler):
        result = call(*(asarray(xp, a) for a in args))
        assert len(computes) == 0, "building the result computed the graph"
        assert isinstance(result, da.Array)
        (value,) = dask.compute(result)
    np.testing.assert_allclose(value, ref(*args), **TOL)


def _out_of_range_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Queries, keys, labels with rows 1 and 3 out of range (-1 and m), and the reference."""
    rng = np.random.default_rng(7)
    q, k = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    labels = np.array([2, -1, 0, 5])
    logits = _unit(q) @ _unit(k).T / 0.5
    rows = np.arange(4)
    expected = _lse(logits, 1) - logits[rows, np.clip(labels, 0, 4)]
    expected[[1, 3]] = np.nan
    return q, k, labels, expected


@pytest.mark.backends("jax")
def test_labels_out_of_range_give_nan_rows_under_jit() -> None:
    import jax

    jnp = Backend.JAX.namespace()  # 64-bit enabled

    q, k, labels, expected = _out_of_range_case()

    def loss(q: Array, k: Array, labels: Array) -> Array:
        return ck.info_nce_loss(q, k, labels=labels, temperature=0.5, reduction="none")

    got = jax.jit(loss)(jnp.asarray(q), jnp.asarray(k), jnp.asarray(labels))
    np.testing.assert_allclose(np.asarray(got), expected, **TOL)
    # The rows with a valid label keep finite gradients.
    grad = jax.grad(lambda q: jnp.nansum(loss(q, jnp.asarray(k), jnp.asarray(labels))))(
        jnp.asarray(q)
    )
    assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.backends("torch")
def test_labels_out_of_range_give_nan_rows_under_torch_compile() -> None:
    import torch

    q, k, labels, expected = _out_of_range_case()

    def loss(q: Array, k: Array, labels: Array) -> Array:
        return ck.info_nce_loss(q, k, labels=labels, temperature=0.5, reduction="none")

    compiled = torch.compile(loss, fullgraph=True, backend="eager")
    got = compiled(torch.asarray(q), torch.asarray(k), torch.asarray(labels))
    np.testing.assert_allclose(got.numpy(), expected, **TOL)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        loss(torch.asarray(q), torch.asarray(k), torch.asarray(labels))
