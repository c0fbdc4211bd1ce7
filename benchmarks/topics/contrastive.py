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

The memory bounds (CoSENT below 64 MiB at n = 20000, NT-Xent ``O(n^2 + nd)``)
are checked by ``tests/test_contrastive_memory.py``: memory, unlike time, is
deterministic.
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

TOPIC = Topic("contrastive", cases, TARGETS)
