"""The training step: TensorFlow's cosine-distance loss, forward and backward.

On each backend with autodiff, ``backend.gradient`` makes the step: eager
``loss.backward()`` on PyTorch, ``jax.jit(jax.grad(loss))`` on JAX. The peer
is the loss a user writes with the library's own cosine (the mean of
``1 - F.cosine_similarity`` on PyTorch, optax's ``cosine_distance`` on JAX),
differentiated the same way. ``x limit`` is against the FORWARD one-pass
limit (one row dot), so it says what a whole step costs in passes over the
data. Batches from 32 rows to 200,000, as in a training loop and a large
evaluation.
"""

from __future__ import annotations

import numpy as np

import cosinekit as ck
from benchmarks.backends import Backend
from benchmarks.harness import Case, Target, Topic, row_pair_cases
from benchmarks.peers import MEAN_COSINE_DISTANCE, resolve

CASE = "loss forward+backward"
FULL = ((32, 768), (1000, 64), (4096, 768), (200_000, 256))
QUICK = ((32, 64), (2000, 32))  # a small and a larger batch: JAX compiles per shape


def cases(backend: Backend, quick: bool) -> list[Case]:
    if backend.gradient is None:
        return []
    rng = np.random.default_rng(1)
    ours = backend.gradient(ck.cosine_distance_loss)
    limit = backend.row_dot_limit()
    peers = resolve(MEAN_COSINE_DISTANCE, backend, backend.gradient)
    shapes = QUICK if quick else FULL
    return row_pair_cases(CASE, backend, rng, shapes, ours, limit, peers)


def _jax_target(shape: str) -> Target:
    return Target(
        f"JAX jit(grad) / optax cosine_distance, {shape}",
        CASE,
        "jax-jit",
        "x optax.losses.cosine_distance",
        1.2,
        at_most=True,
        ambition=0.7,
        shape=shape,
    )


def _torch_target(shape: str, bound: float, ambition: float) -> Target:
    return Target(
        f"torch eager fwd+bwd / (1 - F.cosine_similarity).mean(), {shape}",
        CASE,
        "torch",
        "x torch (1 - F.cosine_similarity).mean()",
        bound,
        at_most=True,
        ambition=ambition,
        shape=shape,
    )


TARGETS = (
    *(_jax_target(f"{n}x{d}") for n, d in FULL),
    _torch_target("32x768", 1.5, 1.0),
    _torch_target("1000x64", 1.5, 1.0),
    _torch_target("4096x768", 1.0, 0.5),
    _torch_target("200000x256", 1.0, 0.5),
)

TOPIC = Topic("training", cases, TARGETS)
