"""Tiled InfoNCE and NT-Xent (``block_size``), and the losses' NaN and empty-batch contract.

References: the full logit matrix in float64 NumPy, written here; torch's
``F.cross_entropy`` (values and gradients, to second order), ``optax.ntxent``
and pytorch-metric-learning's ``NTXentLoss``. Tiles of 1, 2 and 3 rows
leave ragged edges on every shape below (7 queries, 11 keys). NumPy runs the
full matrix of variants and tile sizes; the other backends one tile size.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from _support import Backend, asarray, to_numpy, xp_assert_close

Array = Any
D = 5


def _unit(x: np.ndarray) -> np.ndarray:
    top = np.max(np.abs(x), axis=-1, keepdims=True)
    scaled = np.divide(x, top, out=np.zeros_like(x), where=top != 0)
    norm = np.linalg.norm(scaled, axis=-1, keepdims=True)
    return np.divide(scaled, norm, out=np.zeros_like(x), where=norm != 0)


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis=axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def ref_info_nce(
    q: np.ndarray,
    k: np.ndarray,
    t: float,
    labels: np.ndarray | None = None,
    offset: int = 0,
    symmetric: bool = False,
) -> np.ndarray:
    """Per-query InfoNCE from the whole logit matrix, float64."""
    logits = _unit(q) @ _unit(k).T / t
    rows = np.arange(len(q))
    picked = logits[rows, rows + offset if labels is None else labels]
    loss = _lse(logits, 1) - picked
    return (loss + _lse(logits, 0) - picked) / 2 if symmetric else loss


def ref_ntxent(z: np.ndarray, labels: np.ndarray, t: float) -> float:
    """NT-Xent pair by pair, float64; 0 without positive pairs."""
    s = _unit(z) @ _unit(z).T / t
    total, count = 0.0, 0
    for i in range(len(z)):
        negatives = s[i][labels != labels[i]]
        for j in range(len(z)):
            if i != j and labels[i] == labels[j]:
                total += _lse(np.concatenate([[s[i, j]], negatives]), 0) - s[i, j]
                count += 1
    return total / count if count else 0.0


def _data(seed: int, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [3 * rng.standard_normal(shape) for shape in shapes]


def _blocks(library: Backend) -> list[int | None]:
    return [1, 2, 3, 5, None] if library is Backend.NUMPY else [3]


# Each variant: (n, m, keyword arguments beyond the temperature, reference keywords).
VARIANTS: dict[str, tuple[int, int, dict[str, Any]]] = {
    "in-batch": (7, 7, {}),
    "hard-negatives": (7, 11, {}),
    "labels": (7, 11, {"labels": np.array([3, 0, 10, 10, 1, 5, 3])}),
    "symmetric": (7, 7, {"symmetric": True}),
    "offset": (4, 11, {"positive_offset": 5}),
}


def _info_nce_call(xp: ModuleType, variant: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The variant's keywords for cosinekit (arrays on ``xp``) and for the reference."""
    _, _, extra = VARIANTS[variant]
    ours = {
        key: asarray(xp, value) if isinstance(value, np.ndarray) else value
        for key, value in extra.items()
    }
    reference = {"offset" if key == "positive_offset" else key: v for key, v in extra.items()}
    return ours, reference


# --- values ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_info_nce_tiles_match_the_full_matrix(
    xp: ModuleType, library: Backend, variant: str
) -> None:
    n, m, _ = VARIANTS[variant]
    q, k = _data(0, (n, D), (m, D))
    q[2] = 0.0  # a zero row: similarity 0 with every key
    ours, reference = _info_nce_call(xp, variant)
    expected = ref_info_nce(q, k, 0.1, **reference)
    for block in _blocks(library):
        for dtype, rtol in ((xp.float64, 1e-12), (xp.float32, 1e-5)):
            loss = ck.info_nce_loss(
                asarray(xp, q, dtype),
                asarray(xp, k, dtype),
                temperature=0.1,
                reduction="none",
                block_size=block,
                **ours,
            )
            xp_assert_close(loss, expected, xp=xp, dtype=dtype, rtol=rtol, atol=rtol)


LABELINGS = {
    "two-views": np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4]),
    "groups": np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1]),
    "singletons-too": np.array([0, 0, 5, 1, 1, 7, 2, 2, 9, 8]),
    "one-label": np.zeros(10, dtype=np.int64),  # no negatives: every pair costs 0
}


@pytest.mark.parametrize("labeling", LABELINGS)
def test_ntxent_tiles_match_the_peers(xp: ModuleType, library: Backend, labeling: str) -> None:
    labels = LABELINGS[labeling]
    (z,) = _data(1, (len(labels), D))
    expected = ref_ntxent(z, labels, 0.2)
    # The reference against the peer, once (optax divides 0 by 0 without negatives).
    if library is Backend.NUMPY and labeling != "one-label":
        optax = pytest.importorskip("optax", reason="optax is a reference")
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        peer = float(optax.ntxent(jnp.asarray(z), jnp.asarray(labels), 0.2))
        np.testing.assert_allclose(peer, expected, rtol=1e-12)
    for block in _blocks(library):
        for dtype, rtol in ((xp.float64, 1e-12), (xp.float32, 1e-5)):
            loss = ck.ntxent_loss(
                asarray(xp, z, dtype), asarray(xp, labels), temperature=0.2, block_size=block
            )
            xp_assert_close(loss, expected, xp=xp, dtype=dtype, rtol=rtol, atol=rtol)


def test_ntxent_sums_of_anchor_blocks_add_up(xp: ModuleType, library: Backend) -> None:
    """The private core for gathered batches: the anchors' sums add up to the loss."""
    from cosinekit._lib._contrastive_core import ntxent_sums
    from cosinekit._lib._validation import resolve

    labels = LABELINGS["singletons-too"]
    (z,) = _data(2, (len(labels), D))
    embeddings, every_label = asarray(xp, z), asarray(xp, labels)
    xp_, mode = resolve(embeddings, names=("embeddings",), xp=None)
    totals, counts = [], []
    for start, stop in ((0, 3), (3, 4), (4, 10)):
        total, count = ntxent_sums(
            xp_,
            mode,
            asarray(xp, z[start:stop]),
            asarray(xp, labels[start:stop]),
            embeddings,
            every_label,
            start,
            0.2,
            2,
        )
        totals.append(float(to_numpy(total)))
        counts.append(float(to_numpy(count)))
    pairs = sum(np.sum(labels == label) - 1 for label in labels)
    assert sum(counts) == pairs
    np.testing.assert_allclose(sum(totals) / sum(counts), ref_ntxent(z, labels, 0.2), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.backends("torch", "jax")
def test_half_precision_tiles(xp: ModuleType, dtype: str) -> None:
    q, k = _data(3, (7, D), (11, D))
    half = getattr(xp, dtype)
    q_half, k_half = asarray(xp, q, half), asarray(xp, k, half)
    # The reference sees the same half-precision inputs, in float64.
    expected = ref_info_nce(to_numpy(q_half), to_numpy(k_half), 0.01)
    loss = ck.info_nce_loss(q_half, k_half, temperature=0.01, reduction="none", block_size=2)
    rtol = {"float16": 2e-3, "bfloat16": 1e-2}[dtype]
    xp_assert_close(loss, expected, xp=xp, dtype=half, rtol=rtol, atol=rtol)
    labels = LABELINGS["groups"]
    z = asarray(xp, _data(4, (10, D))[0], half)
    expected_nt = ref_ntxent(to_numpy(z), labels, 0.01)
    loss_nt = ck.ntxent_loss(z, asarray(xp, labels), temperature=0.01, block_size=3)
    xp_assert_close(loss_nt, expected_nt, xp=xp, dtype=half, rtol=rtol, atol=rtol)


def test_block_size_is_checked(xp: ModuleType) -> None:
    q, k = (asarray(xp, a) for a in _data(5, (3, D), (3, D)))
    with pytest.raises(ValueError, match="block_size"):
        ck.info_nce_loss(q, k, block_size=0)
    with pytest.raises(TypeError, match="block_size"):
        ck.info_nce_loss(q, k, block_size=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="block_size"):
        ck.ntxent_loss(q, asarray(xp, np.arange(3)), block_size=True)  # type: ignore[arg-type]


# --- gradients ---------------------------------------------------------------------


def _torch() -> ModuleType:
    return pytest.importorskip("torch", reason="torch is the reference implementation")


def torch_info_nce(q: Any, k: Any, t: Any, **kw: Any) -> Any:
    """Per-query InfoNCE with ``F.cross_entropy`` on float64 tensors (any derivative order)."""
    torch = _torch()
    functional = torch.nn.functional
    logits = functional.normalize(q, dim=-1) @ functional.normalize(k, dim=-1).T / t
    labels, offset = kw.get("labels"), kw.get("offset", 0)
    target = torch.arange(q.shape[0]) + offset if labels is None else torch.as_tensor(labels)
    loss = functional.cross_entropy(logits, target, reduction="none")
    if kw.get("symmetric"):
        loss = (loss + functional.cross_entropy(logits.T, target, reduction="none")) / 2
    return loss


def torch_ntxent(z: Any, labels: np.ndarray, t: Any) -> Any:
    """NT-Xent over the masked logit matrix in torch (every row needs a negative)."""
    torch = _torch()
    unit = torch.nn.functional.normalize(z, dim=-1)
    s = unit @ unit.T / t
    lab = torch.as_tensor(labels)
    same = lab[:, None] == lab[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool)
    negatives = torch.logsumexp(torch.where(same, -torch.inf, s), dim=1, keepdim=True)
    pairs = torch.logaddexp(s, negatives) - s
    return pairs[positive].mean()


def _t(x: Any) -> Any:
    return _torch().tensor(np.asarray(x, np.float64), requires_grad=True)


def _torch_grads(fn: Callable[..., Any], arrays: list[Any]) -> list[np.ndarray]:
    inputs = [_t(a) for a in arrays]
    fn(*inputs).backward()
    return [x.grad.numpy() for x in inputs]


def _grads(
    xp: ModuleType, library: Backend, fn: Callable[..., Any], arrays: list[Any]
) -> list[np.ndarray]:
    """Gradients of the 0-d ``fn(*arrays)``: ``jit(grad)`` on JAX, eager autograd on torch."""
    if library is Backend.JAX:
        import jax

        inputs = [asarray(xp, a) for a in arrays]
        grads = jax.jit(jax.grad(fn, argnums=tuple(range(len(arrays)))))(*inputs)
        return [np.asarray(g) for g in grads]
    inputs = [asarray(xp, np.asarray(a, np.float64)).requires_grad_(True) for a in arrays]
    fn(*inputs).backward()
    # An input the loss does not use gets None: its gradient is 0.
    return [np.zeros(x.shape) if x.grad is None else x.grad.numpy() for x in inputs]


def _close(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float = 1e-10) -> None:
    for got, want in zip(actual, expected, strict=True):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12)


@pytest.mark.backends("torch", "jax")
@pytest.mark.parametrize("variant", VARIANTS)
def test_info_nce_tiled_gradients(xp: ModuleType, library: Backend, variant: str) -> None:
    n, m, _ = VARIANTS[variant]
    q, k = _data(6, (n, D), (m, D))
    ours, reference = _info_nce_call(xp, variant)
    arrays = [q, k, np.asarray(0.1)]
    expected = _torch_grads(lambda a, b, t: torch_info_nce(a, b, t, **reference).mean(), arrays)

    def loss(a: Array, b: Array, t: Array) -> Array:
        return ck.info_nce_loss(a, b, temperature=t, block_size=2, **ours)

    _close(_grads(xp, library, loss, arrays), expected)


@pytest.mark.backends("torch", "jax")
def test_ntxent_tiled_gradients(xp: ModuleType, library: Backend) -> None:
    labels = LABELINGS["singletons-too"]
    (z,) = _data(7, (len(labels), D))
    arrays = [z, np.asarray(0.3)]
    expected = _torch_grads(lambda e, t: torch_ntxent(e, labels, t), arrays)
    losses = pytest.importorskip("pytorch_metric_learning.losses", reason="a reference")
    torch = _torch()
    pml = _torch_grads(
        lambda e, t: losses.NTXentLoss(temperature=t)(e, torch.as_tensor(labels)), arrays
    )
    _close(pml, expected)

    def loss(e: Array, t: Array) -> Array:
        return ck.ntxent_loss(e, asarray(xp, labels), temperature=t, block_size=3)

    _close(_grads(xp, library, loss, arrays), expected)


def _second(fn: Callable[..., Any], arrays: list[Any], seed: int) -> list[np.ndarray]:
    """A Hessian-vector product of the 0-d ``fn`` by torch double backward."""
    torch = _torch()
    inputs = [_t(a) if isinstance(a, np.ndarray) else a for a in arrays]
    grads = torch.autograd.grad(fn(*inputs), inputs, create_graph=True)
    rng = np.random.default_rng(seed)
    direction = sum((g * torch.as_tensor(rng.standard_normal(g.shape))).sum() for g in grads)
    return [h.numpy() for h in torch.autograd.grad(direction, inputs)]


@pytest.mark.backends("torch")
@pytest.mark.parametrize("variant", ["hard-negatives", "symmetric"])
def test_info_nce_second_derivative_torch(xp: ModuleType, variant: str) -> None:
    n, m, _ = VARIANTS[variant]
    q, k = _data(8, (n, D), (m, D))
    ours, reference = _info_nce_call(xp, variant)
    arrays = [q, k, np.asarray(0.2)]
    expected = _second(lambda a, b, t: torch_info_nce(a, b, t, **reference).mean(), arrays, 9)
    for block in (2, None):
        actual = _second(
            lambda a, b, t, block=block: ck.info_nce_loss(
                a, b, temperature=t, block_size=block, **ours
            ),
            arrays,
            9,
        )
        _close(actual, expected, rtol=1e-9)


@pytest.mark.backends("torch")
def test_ntxent_second_derivative_torch(xp: ModuleType) -> None:
    labels = LABELINGS["groups"]
    (z,) = _data(10, (len(labels), D))
    arrays = [z, np.asarray(0.4)]
    expected = _second(lambda e, t: torch_ntxent(e, labels, t), arrays, 11)
    for block in (3, None):
        actual = _second(
            lambda e, t, block=block: ck.ntxent_loss(
                e, asarray(xp, labels), temperature=t, block_size=block
            ),
            arrays,
            11,
        )
        _close(actual, expected, rtol=1e-9)


@pytest.mark.backends("jax")
def test_second_derivative_jax(xp: ModuleType) -> None:
    import jax
    import jax.numpy as jnp

    q, k = _data(12, (4, D), (7, D))
    arrays = [q, k, np.asarray(0.2)]
    expected = _second(lambda a, b, t: torch_info_nce(a, b, t).mean(), arrays, 13)
    rng = np.random.default_rng(13)
    directions = [jnp.asarray(rng.standard_normal(np.shape(a))) for a in arrays]

    def along(a: Array, b: Array, t: Array) -> Array:
        grads = jax.grad(
            lambda a, b, t: ck.info_nce_loss(a, b, temperature=t, block_size=3), argnums=(0, 1, 2)
        )(a, b, t)
        return sum(jnp.sum(g * v) for g, v in zip(grads, directions, strict=True))

    actual = jax.jit(jax.grad(along, argnums=(0, 1, 2)))(*(jnp.asarray(a) for a in arrays))
    _close([np.asarray(h) for h in actual], expected, rtol=1e-9)


# --- transforms ----------------------------------------------------------------------


@pytest.mark.backends("torch")
def test_torch_compile_fullgraph_tiles(xp: ModuleType) -> None:
    torch = _torch()
    q, k = _data(14, (7, D), (11, D))
    labels = LABELINGS["groups"]
    (z,) = _data(15, (10, D))

    def both(a: Array, b: Array, e: Array, t: Array) -> Array:
        info = ck.info_nce_loss(a, b, temperature=t, block_size=2)
        return info + ck.ntxent_loss(e, torch.as_tensor(labels), temperature=t, block_size=3)

    arrays = [q, k, z, np.asarray(0.2)]
    expected = _torch_grads(
        lambda a, b, e, t: torch_info_nce(a, b, t).mean() + torch_ntxent(e, labels, t), arrays
    )
    torch._dynamo.reset()
    compiled = torch.compile(both, fullgraph=True, backend="aot_eager")
    inputs = [_t(a) for a in arrays]
    compiled(*inputs).backward()
    _close([x.grad.numpy() for x in inputs], expected)
    with torch.no_grad():  # the forward alone, no Function recorded
        value = compiled(*(torch.as_tensor(a) for a in arrays))
    np.testing.assert_allclose(
        float(value), ref_info_nce(q, k, 0.2).mean() + ref_ntxent(z, labels, 0.2), rtol=1e-12
    )


@pytest.mark.backends("torch")
def test_torch_func_grad_and_vmap_each_argument(xp: ModuleType) -> None:
    torch = _torch()
    from torch.func import grad, vmap

    q, k = _data(16, (7, D), (11, D))
    labels = VARIANTS["labels"][2]["labels"]
    arrays = [torch.as_tensor(a) for a in (q, k, labels, np.asarray(0.2))]
    expected = _torch_grads(lambda a, b, t: torch_info_nce(a, b, t, labels=labels).mean(),
                            [q, k, np.asarray(0.2)])  # fmt: skip

    def loss(a: Array, b: Array, lab: Array, t: Array) -> Array:
        return ck.info_nce_loss(a, b, labels=lab, temperature=t, block_size=3)

    for position, want in zip((0, 1, 3), expected, strict=True):
        got = grad(loss, argnums=position)(*arrays)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    # vmap over two sets of queries, then over two temperatures.
    batch = torch.stack([arrays[0], 2 * arrays[0].flip(0)])
    mapped = vmap(lambda a: loss(a, *arrays[1:]))(batch)
    for row, queries in zip(to_numpy(mapped), to_numpy(batch), strict=True):
        np.testing.assert_allclose(row, ref_info_nce(queries, k, 0.2, labels).mean(), rtol=1e-12)
    temperatures = torch.tensor([0.2, 0.5], dtype=torch.float64)
    mapped_grads = vmap(grad(lambda t: loss(*arrays[:3], t)))(temperatures)
    want = [_torch_grads(lambda t: torch_info_nce(_t(q), _t(k), t, labels=labels).mean(),
                         [np.asarray(value)])[0] for value in (0.2, 0.5)]  # fmt: skip
    np.testing.assert_allclose(to_numpy(mapped_grads), np.stack(want), rtol=1e-10)


@pytest.mark.backends("jax")
def test_jax_jit_each_argument_traced_and_vmap(xp: ModuleType) -> None:
    import jax
    import jax.numpy as jnp

    q, k = _data(17, (7, D), (11, D))
    labels = VARIANTS["labels"][2]["labels"]
    arrays = [jnp.asarray(q), jnp.asarray(k), jnp.asarray(labels), jnp.asarray(0.2)]
    expected = ref_info_nce(q, k, 0.2, labels).mean()

    def loss(a: Array, b: Array, lab: Array, t: Array) -> Array:
        return ck.info_nce_loss(a, b, labels=lab, temperature=t, block_size=3)

    for position in range(4):

        def partial(traced: Array, position: int = position) -> Array:
            args = list(arrays)
            args[position] = traced
            return loss(*args)

        np.testing.assert_allclose(jax.jit(partial)(arrays[position]), expected, rtol=1e-12)
    mapped = jax.jit(jax.vmap(lambda a: loss(a, *arrays[1:])))(jnp.stack([q, -q]))
    np.testing.assert_allclose(mapped[1], ref_info_nce(-q, k, 0.2, labels).mean(), rtol=1e-12)


# --- memory and program size ------------------------------------------------------


@pytest.mark.backends("jax")
def test_jax_program_does_not_grow_with_the_tiles(xp: ModuleType) -> None:
    import jax
    import jax.numpy as jnp

    def program(n: int) -> tuple[str, int]:
        q = jnp.zeros((n, 16), dtype=jnp.float32)
        step = jax.jit(
            jax.grad(
                lambda a, b: ck.info_nce_loss(a, b, symmetric=True, block_size=64), argnums=(0, 1)
            )
        )
        lowered = step.lower(q, q)
        analysis = lowered.compile().memory_analysis()
        return lowered.as_text(), int(analysis.temp_size_in_bytes)

    small, _ = program(256)  # 4 x 4 tiles
    large, temporary = program(1024)  # 16 x 16 tiles
    assert large.count("dot_general") == small.count("dot_general")
    # The (1024, 1024) logits alone would be 4 MiB; tiles of 64 x 64 are 16 KiB.
    assert temporary < 1024 * 1024, f"{temporary / 2**20:.1f} MiB"


@pytest.mark.backends("numpy")
def test_numpy_forward_memory_is_the_tiles(xp: ModuleType) -> None:
    import tracemalloc

    q, k = (x.astype(np.float32) for x in _data(18, (2048, 8), (2048, 8)))
    labels = np.arange(2048) % 100
    ck.info_nce_loss(q[:4], k[:4], block_size=2)  # imports and caches outside the count
    for call in (
        lambda: ck.info_nce_loss(q, k, symmetric=True, block_size=256),
        lambda: ck.ntxent_loss(q, labels, block_size=256),
    ):
        tracemalloc.start()
        try:
            assert np.isfinite(call())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # The (2048, 2048) float32 logits alone are 16 MiB; a tile is 256 KiB.
        assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MiB"


@pytest.mark.backend_free
def test_torch_training_step_memory_in_a_process() -> None:
    """Forward and backward at 8192 x 8192 in tiles of 1024: a few tiles, not the matrix."""
    pytest.importorskip("torch", reason="the check runs PyTorch")
    script = textwrap.dedent(
        """
        import resource, torch, cosinekit as ck
        torch.manual_seed(0)
        q = torch.randn(8192, 16, requires_grad=True)
        k = torch.randn(8192, 16, requires_grad=True)
        t = torch.tensor(0.05, requires_grad=True)
        small = torch.randn(64, 16, requires_grad=True)
        ck.info_nce_loss(small, small, symmetric=True, temperature=t).backward()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ck.info_nce_loss(q, k, symmetric=True, temperature=t, block_size=1024).backward()
        labels = torch.arange(8192) % 4096
        ck.ntxent_loss(q, labels, temperature=t, block_size=1024).backward()
        assert torch.isfinite(q.grad).all() and torch.isfinite(t.grad)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr
    extra = float(done.stdout.split()[-1])
    # One (8192, 8192) float32 matrix is 256 MiB; autograd of the dense form keeps three.
    assert extra < 128, f"peak extra RSS {extra:.0f} MiB"


# --- NaN: in its rows, never a silent 0 ---------------------------------------------


def test_ntxent_nan_row_that_is_only_a_negative(xp: ModuleType, library: Backend) -> None:
    rng = np.random.default_rng(19)
    e = rng.standard_normal((5, 3))
    e[4] = [np.nan, 0.0, 0.0]
    labels = np.array([0, 0, 1, 1, 2])
    if library is Backend.NUMPY:  # the peers agree
        optax = pytest.importorskip("optax", reason="optax is a reference")
        import jax.numpy as jnp

        assert np.isnan(float(optax.ntxent(jnp.asarray(e), jnp.asarray(labels), 0.07)))
        losses = pytest.importorskip("pytorch_metric_learning.losses", reason="a reference")
        torch = _torch()
        assert torch.isnan(losses.NTXentLoss()(torch.as_tensor(e), torch.as_tensor(labels)))
    for block in (None, 2):
        loss = ck.ntxent_loss(asarray(xp, e), asarray(xp, labels), block_size=block)
        assert np.isnan(to_numpy(loss))
        e_inf = e.copy()
        e_inf[4] = [np.inf, 0.0, 0.0]
        assert np.isnan(
            to_numpy(ck.ntxent_loss(asarray(xp, e_inf), asarray(xp, labels), block_size=block))
        )


def test_ntxent_nan_row_that_is_only_a_positive(xp: ModuleType) -> None:
    e = _data(20, (4, 3))[0]
    e[1, 2] = np.nan
    labels = np.zeros(4, dtype=np.int64)  # no negatives at all: every pair costs 0, but one is NaN
    for block in (None, 3):
        loss = ck.ntxent_loss(asarray(xp, e), asarray(xp, labels), block_size=block)
        assert np.isnan(to_numpy(loss))
    # A NaN row in no pair (no two labels equal): the loss is 0, as without it.
    loss = ck.ntxent_loss(asarray(xp, e), asarray(xp, np.arange(4)))
    xp_assert_close(loss, 0.0, xp=xp, dtype=xp.float64)


def test_cosent_nan_gold_score(xp: ModuleType) -> None:
    x1, x2 = _data(21, (6, D), (6, D))
    scores = np.array([0.1, 0.5, np.nan, 0.9, 0.0, 0.3])
    loss = ck.cosent_loss(asarray(xp, x1), asarray(xp, x2), asarray(xp, scores))
    assert np.isnan(to_numpy(loss))


@pytest.mark.parametrize("where", ["query", "key", "symmetric"])
def test_info_nce_nan_rows(xp: ModuleType, library: Backend, where: str) -> None:
    n, m = (7, 7) if where == "symmetric" else (7, 11)
    q, k = _data(22, (n, D), (m, D))
    if where == "key":
        k[9, 1] = np.inf  # a hard negative of every query
    else:
        q[3, 0] = np.nan
    expected = np.full(n, np.nan)
    if where == "query":
        expected = ref_info_nce(q, k, 0.1)
        expected[3] = np.nan
    for block in _blocks(library):
        loss = ck.info_nce_loss(
            asarray(xp, q),
            asarray(xp, k),
            temperature=0.1,
            reduction="none",
            symmetric=where == "symmetric",
            block_size=block,
        )
        xp_assert_close(loss, expected, xp=xp, dtype=xp.float64)


def _finite_sum(library: Backend, loss: Array) -> Array:
    """The sum of the finite per-row losses only."""
    if library is Backend.JAX:
        import jax.numpy as jnp

        return jnp.sum(jnp.where(jnp.isfinite(loss), loss, 0.0))
    return loss[loss.isfinite()].sum()


@pytest.mark.backends("torch", "jax")
@pytest.mark.parametrize("block", [None, 2])
def test_nan_query_keeps_its_gradients_to_itself(
    xp: ModuleType, library: Backend, block: int | None
) -> None:
    q, k = _data(23, (7, D), (11, D))
    q[3, 0] = np.nan
    arrays = [q, k, np.asarray(0.1)]
    # Without the NaN query, the other queries' losses are the same functions.
    kept = np.delete(np.arange(7), 3)
    expected = _torch_grads(
        lambda a, b, t: torch_info_nce(a[kept], b, t, labels=kept).sum(), arrays
    )

    def finite_only(a: Array, b: Array, t: Array) -> Array:
        loss = ck.info_nce_loss(a, b, temperature=t, reduction="none", block_size=block)
        return _finite_sum(library, loss)

    # Every finite row, keys and temperature included (the NaN row's own is not promised).
    got = _grads(xp, library, finite_only, arrays)
    _close([got[0][kept], *got[1:]], [expected[0][kept], *expected[1:]])
    # Reducing the NaN loss too gives NaN gradients: never a silent 0 or a finite step.
    everything = _grads(
        xp,
        library,
        lambda a, b, t: ck.info_nce_loss(a, b, temperature=t, reduction="sum", block_size=block),
        arrays,
    )
    assert np.all(np.isnan(everything[1]))
    assert np.isnan(everything[2])


@pytest.mark.backends("torch")
def test_nan_query_under_torch_compile(xp: ModuleType) -> None:
    torch = _torch()
    q, k = _data(24, (7, D), (11, D))
    q[3, 0] = np.nan
    kept = np.delete(np.arange(7), 3)
    expected = _torch_grads(
        lambda a, b: torch_info_nce(a[kept], b, 0.1, labels=kept).sum(), [q, k]
    )

    def finite_only(a: Array, b: Array) -> Array:
        loss = ck.info_nce_loss(a, b, temperature=0.1, reduction="none", block_size=2)
        return torch.where(loss.isfinite(), loss, 0.0).sum()

    torch._dynamo.reset()
    inputs = [_t(a) for a in (q, k)]
    torch.compile(finite_only, fullgraph=True, backend="aot_eager")(*inputs).backward()
    _close(
        [inputs[0].grad.numpy()[kept], inputs[1].grad.numpy()], [expected[0][kept], expected[1]]
    )


@pytest.mark.backends("torch", "jax")
def test_ntxent_nan_row_in_no_pair_has_finite_gradients(xp: ModuleType, library: Backend) -> None:
    e = _data(25, (5, D))[0]
    e[2, 0] = np.nan
    grads = _grads(
        xp,
        library,
        lambda z, t: ck.ntxent_loss(z, asarray(xp, np.arange(5)), temperature=t, block_size=2),
        [e, np.asarray(0.1)],
    )
    # Every finite row's gradient is 0, as the loss's (the NaN row's own is not promised).
    assert np.all(np.delete(grads[0], 2, axis=0) == 0)
    assert grads[1] == 0


# --- empty batches: 0, connected to the inputs ------------------------------------


def _empty_losses(xp: ModuleType, temperature: Any) -> dict[str, Callable[[Array, Array], Array]]:
    """Each loss of zero rows ``a`` (and hard negatives ``b``, 4 rows) and a temperature."""
    no_labels = asarray(xp, np.zeros(0, dtype=np.int64))
    no_scores = asarray(xp, np.zeros(0))
    return {
        "info_nce mean": lambda a, b: ck.info_nce_loss(a, b, temperature=temperature),
        "info_nce sum, tiled": lambda a, b: ck.info_nce_loss(
            a, b, temperature=temperature, reduction="sum", block_size=1
        ),
        "info_nce symmetric": lambda a, b: ck.info_nce_loss(
            a, a, temperature=temperature, symmetric=True
        ),
        "info_nce labels": lambda a, b: ck.info_nce_loss(
            a, b, temperature=temperature, labels=no_labels
        ),
        "ntxent": lambda a, b: ck.ntxent_loss(a, no_labels, temperature=temperature),
        "ntxent tiled": lambda a, b: ck.ntxent_loss(
            a, no_labels, temperature=temperature, block_size=1
        ),
        "cosent": lambda a, b: ck.cosent_loss(a, a, no_scores, scale=1 / temperature),
        "triplet": lambda a, b: ck.cosine_triplet_loss(a, a, a),
        "cosine_distance_loss": lambda a, b: ck.cosine_distance_loss(a, a),
        "cosine_embedding_loss": lambda a, b: ck.cosine_embedding_loss(
            a, a, asarray(xp, np.zeros(0))
        ),
    }


def test_empty_batches_return_zero(xp: ModuleType) -> None:
    empty, keys = asarray(xp, np.zeros((0, D))), asarray(xp, _data(26, (4, D))[0])
    for loss in _empty_losses(xp, 0.1).values():
        xp_assert_close(loss(empty, keys), 0.0, xp=xp, dtype=xp.float64)


@pytest.mark.backends("torch", "jax")
def test_empty_batches_are_connected(xp: ModuleType, library: Backend) -> None:
    (keys,) = _data(27, (4, D))
    for name in _empty_losses(xp, 0.1):

        def loss(a: Array, b: Array, t: Array, name: str = name) -> Array:
            return _empty_losses(xp, t)[name](a, b)

        grads = _grads(xp, library, loss, [np.zeros((0, D)), keys, np.asarray(0.1)])
        assert grads[0].shape == (0, D), name
        assert np.all(grads[1] == 0), name
        assert grads[2] == 0, name
