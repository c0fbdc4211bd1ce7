"""The contrastive family: InfoNCE, NT-Xent and CoSENT against the formulas users write.

* ``info_nce forward+backward``: ``info_nce_loss`` as a training step on
  PyTorch (eager) and JAX (jit), against the plain formula a user writes
  there (normalize, matmul, ``F.cross_entropy``; or
  ``optax.softmax_cross_entropy_with_integer_labels`` under ``jit``), which
  is the limit: the loss cannot cost less than the matrix products.
* ``ntxent``: ``ntxent_loss`` under ``jax.jit`` against ``optax.ntxent``,
  which sums a broadcast ``(n, n, d)`` product for its cosine matrix. The limit is the
  bare ``x @ x.T``. XLA fuses that product into its reduction in the forward
  pass, but the gradient (``ntxent forward+backward``, ``jit(grad)`` with
  respect to the embeddings; the limit there is the gradient of
  ``sum(x @ x.T)``) writes out the ``(n, n, d)`` cotangent.
* ``cosent``: ``cosent_loss`` (sort and a running log-sum-exp, ``O(n log n)``)
  against the ``n x n`` form of sentence-transformers' ``CoSENTLoss``,
  written in the same library. The limit is the row-wise cosine itself.

* ``info_nce tiled forward+backward``: the tiled path forced with
  ``block_size=1024`` at n = m = 8192, d = 256, as a training step (the
  gradients of queries and keys), against the plain formula's step: at most
  1.3x (ambition 1.0x: the tiles never write the ``n x m`` matrix, at the
  price of one more matrix product).
* ``info_nce auto forward+backward`` and ``ntxent auto forward+backward``:
  ``block_size=None`` against the dense path (``block_size=n``, one tile) at
  sizes where the dense one fits: never slower than 1.1x.

The memory bounds (CoSENT below 64 MiB at n = 20000, NT-Xent ``O(n^2 + nd)``)
are checked by ``tests/test_contrastive_memory.py``: memory, unlike time, is
deterministic. The memory of a training step per batch size, dense and
tiled, is ``benchmarks/contrastive_memory.py`` (one process per case).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import cosinekit as ck
from benchmarks.backends import Backend
from benchmarks.harness import Case, Target, Topic, random_array

TEMPERATURE = 0.05
SCALE = 20.0
INFO_NCE = {"full": (4096, 768), "quick": (256, 32)}
NTXENT = {"full": (1024, 256), "quick": (128, 16)}
COSENT = {"full": 4096, "quick": 512}


def _plain_info_nce(backend: Backend) -> Callable[[Any, Any], Any] | None:
    """The formula users write: normalize, matmul, the library's cross-entropy."""
    if backend.library == "torch":
        import torch

        functional = torch.nn.functional

        def torch_formula(q: Any, k: Any) -> Any:
            logits = functional.normalize(q, dim=-1) @ functional.normalize(k, dim=-1).T
            target = torch.arange(q.shape[0], device=q.device)
            return functional.cross_entropy(logits / TEMPERATURE, target)

        return torch_formula
    if backend.library == "jax":
        import jax.numpy as jnp
        import optax

        def jax_formula(q: Any, k: Any) -> Any:
            q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
            k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
            logits = q @ k.T / TEMPERATURE
            target = jnp.arange(q.shape[0])
            return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()

        return jax_formula
    return None


def _info_nce_cases(backend: Backend, quick: bool) -> list[Case]:
    plain = _plain_info_nce(backend)
    if backend.gradient is None or plain is None:
        return []
    n, d = INFO_NCE["quick" if quick else "full"]
    rng = np.random.default_rng(7)

    def inputs() -> tuple[Any, ...]:
        return tuple(backend.array(random_array(rng, (n, d), np.float32)) for _ in range(2))

    return [
        Case(
            "info_nce forward+backward",
            backend,
            f"{n}x{n}x{d}",
            "float32",
            inputs,
            backend.gradient(lambda q, k: ck.info_nce_loss(q, k, temperature=TEMPERATURE)),
            backend.gradient(plain),
            {},
        )
    ]


def _ntxent_cases(backend: Backend, quick: bool) -> list[Case]:
    if backend.library != "jax":
        return []
    import jax
    import jax.numpy as jnp
    import optax

    n, d = NTXENT["quick" if quick else "full"]
    rng = np.random.default_rng(8)

    def inputs() -> tuple[Any, ...]:
        labels = np.concatenate([np.arange(n // 2), np.arange(n // 2)])
        return backend.array(random_array(rng, (n, d), np.float32)), backend.array(labels)

    def bare_matmul(x: Any, labels: Any) -> Any:
        return x @ jnp.swapaxes(x, 0, 1)

    def step(loss: Callable[..., Any]) -> Callable[..., Any]:
        # The training step: the gradient with respect to the embeddings.
        return backend.compile(jax.grad(loss))

    return [
        Case(
            "ntxent",
            backend,
            f"{n}x{d}",
            "float32",
            inputs,
            backend.compile(ck.ntxent_loss),
            backend.compile(bare_matmul),
            {"optax.ntxent": backend.compile(optax.ntxent)},
        ),
        Case(
            "ntxent forward+backward",
            backend,
            f"{n}x{d}",
            "float32",
            inputs,
            step(ck.ntxent_loss),
            step(lambda x, labels: jnp.sum(bare_matmul(x, labels))),
            {"optax.ntxent": step(optax.ntxent)},
        ),
    ]


TILED = {"full": (8192, 256, 1024), "quick": (512, 32, 128)}
AUTO = {"full": ((4096, 768), (8192, 64), (8192, 256)), "quick": ((512, 16),)}
NTXENT_AUTO = {"full": ((4096, 64),), "quick": ((512, 16),)}


def _torch_step(loss: Callable[..., Any], count: int) -> Callable[..., Any]:
    """A training step: the gradients of the first ``count`` inputs."""

    def step(*args: Any) -> Any:
        inputs = [a.detach().requires_grad_(True) for a in args[:count]]
        loss(*inputs, *args[count:]).backward()
        return [x.grad for x in inputs]

    return step


def _jax_step(loss: Callable[..., Any], count: int) -> Callable[..., Any]:
    import jax

    return jax.jit(jax.grad(loss, argnums=tuple(range(count))))  # type: ignore[no-any-return]


# Keyed by ``Backend.library``, as the peers' tables are.
STEPS: dict[str, Callable[[Callable[..., Any], int], Callable[..., Any]]] = {
    "torch": _torch_step,
    "jax": _jax_step,
}


def _pair_inputs(backend: Backend, rng: np.random.Generator, n: int, d: int) -> Any:
    def inputs() -> tuple[Any, ...]:
        return tuple(backend.array(random_array(rng, (n, d), np.float32)) for _ in range(2))

    return inputs


def _tiled_cases(backend: Backend, quick: bool) -> list[Case]:
    plain = _plain_info_nce(backend)
    steps = STEPS.get(backend.library)
    if plain is None or steps is None or backend.mode == "compile":
        return []
    size = "quick" if quick else "full"
    rng = np.random.default_rng(10)
    n, d, block = TILED[size]
    cases = [
        Case(
            "info_nce tiled forward+backward",
            backend,
            f"{n}x{n}x{d}",
            "float32",
            _pair_inputs(backend, rng, n, d),
            steps(
                lambda q, k: ck.info_nce_loss(q, k, temperature=TEMPERATURE, block_size=block), 2
            ),
            steps(plain, 2),
            {},
        )
    ]
    for n, d in AUTO[size]:
        cases.append(
            Case(
                "info_nce auto forward+backward",
                backend,
                f"{n}x{n}x{d}",
                "float32",
                _pair_inputs(backend, rng, n, d),
                steps(lambda q, k: ck.info_nce_loss(q, k, temperature=TEMPERATURE), 2),
                {
                    "dense": steps(
                        lambda q, k, n=n: ck.info_nce_loss(
                            q, k, temperature=TEMPERATURE, block_size=n
                        ),
                        2,
                    )
                },
                {},
            )
        )
    for n, d in NTXENT_AUTO[size]:

        def inputs(n: int = n, d: int = d) -> tuple[Any, ...]:
            labels = np.concatenate([np.arange(n // 2), np.arange(n // 2)])
            return backend.array(random_array(rng, (n, d), np.float32)), backend.array(labels)

        cases.append(
            Case(
                "ntxent auto forward+backward",
                backend,
                f"{n}x{d}",
                "float32",
                inputs,
                steps(lambda z, labels: ck.ntxent_loss(z, labels, temperature=0.1), 1),
                {
                    "dense": steps(
                        lambda z, labels, n=n: ck.ntxent_loss(
                            z, labels, temperature=0.1, block_size=n
                        ),
                        1,
                    )
                },
                {},
            )
        )
    return cases


def quadratic_cosent(xp: Any) -> Callable[[Any, Any, Any], Any]:
    """sentence-transformers' ``CoSENTLoss``: the ``n x n`` matrix, its 1e12 mask."""

    def loss(x1: Any, x2: Any, scores: Any) -> Any:
        cosine = ck.cosine_similarity(x1, x2)
        diff = SCALE * (cosine[None, :] - cosine[:, None])
        diff = diff - xp.astype(scores[:, None] <= scores[None, :], diff.dtype) * 1e12
        flat = xp.concat([xp.zeros(1, dtype=diff.dtype), xp.reshape(diff, (-1,))])
        top = xp.max(flat)
        return top + xp.log(xp.sum(xp.exp(flat - top)))

    return loss


def _cosent_cases(backend: Backend, quick: bool) -> list[Case]:
    n = COSENT["quick" if quick else "full"]
    rng = np.random.default_rng(9)

    def inputs() -> tuple[Any, ...]:
        x1, x2 = (backend.array(random_array(rng, (n, 64), np.float32)) for _ in range(2))
        scores = backend.array(rng.integers(0, 6, n).astype(np.float32) / 5)
        return x1, x2, scores

    return [
        Case(
            "cosent",
            backend,
            f"{n}x64",
            "float32",
            inputs,
            backend.compile(lambda a, b, s: ck.cosent_loss(a, b, s, scale=SCALE)),
            backend.compile(lambda a, b, s: ck.cosine_similarity(a, b)),
            {"n x n form": backend.compile(quadratic_cosent(backend.xp))},
        )
    ]


def cases(backend: Backend, quick: bool) -> list[Case]:
    return [
        *_info_nce_cases(backend, quick),
        *_ntxent_cases(backend, quick),
        *_cosent_cases(backend, quick),
        *_tiled_cases(backend, quick),
    ]


TARGETS = (
    Target(
        "info_nce fwd+bwd within 1.1x of normalize+matmul+F.cross_entropy (PyTorch)",
        "info_nce forward+backward",
        "torch",
        "x limit",
        1.1,
        at_most=True,
    ),
    Target(
        "info_nce fwd+bwd within 1.1x of the optax formula (JAX jit)",
        "info_nce forward+backward",
        "jax-jit",
        "x limit",
        1.1,
        at_most=True,
    ),
    Target(
        "ntxent 5x faster than optax.ntxent (JAX jit, forward)",
        "ntxent",
        "jax-jit",
        "speedup vs optax.ntxent",
        5.0,
        at_most=False,
    ),
    Target(
        "ntxent 5x faster than optax.ntxent (JAX jit(grad), the training step)",
        "ntxent forward+backward",
        "jax-jit",
        "speedup vs optax.ntxent",
        5.0,
        at_most=False,
    ),
    *(
        Target(
            f"cosent 10x faster than the n x n form ({backend})",
            "cosent",
            backend,
            "speedup vs n x n form",
            10.0,
            at_most=False,
        )
        for backend in ("numpy", "torch", "jax-jit")
    ),
)

TILED_TARGETS = (
    Target(
        "info_nce tiled (block_size=1024) fwd+bwd within 1.3x of normalize+matmul+F.cross_entropy "
        "(PyTorch, 8192x8192x256)",
        "info_nce tiled forward+backward",
        "torch",
        "x limit",
        1.3,
        at_most=True,
        ambition=1.0,
        shape="8192x8192x256",
    ),
    Target(
        "info_nce tiled (block_size=1024) fwd+bwd within 1.3x of the optax formula "
        "(JAX jit(grad), 8192x8192x256)",
        "info_nce tiled forward+backward",
        "jax-jit",
        "x limit",
        1.3,
        at_most=True,
        ambition=1.0,
        shape="8192x8192x256",
    ),
    *(
        Target(
            f"info_nce automatic block_size within 1.1x of the dense path ({backend}, "
            f"{n}x{n}x{d})",
            "info_nce auto forward+backward",
            backend,
            "x limit",
            1.1,
            at_most=True,
            shape=f"{n}x{n}x{d}",
        )
        for backend in ("torch", "jax-jit")
        for n, d in AUTO["full"]
    ),
    *(
        Target(
            f"ntxent automatic block_size within 1.1x of the dense path ({backend}, {n}x{d})",
            "ntxent auto forward+backward",
            backend,
            "x limit",
            1.1,
            at_most=True,
            shape=f"{n}x{d}",
        )
        for backend in ("torch", "jax-jit")
        for n, d in NTXENT_AUTO["full"]
    ),
)

TOPIC = Topic("contrastive", cases, (*TARGETS, *TILED_TARGETS))
