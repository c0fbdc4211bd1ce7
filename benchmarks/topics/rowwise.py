"""Row-wise cosine similarity against one ``vecdot`` and the peers' own functions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import cosinekit as ck
from benchmarks.backends import Backend
from benchmarks.harness import Case, Target, Topic, random_pair
from benchmarks.peers import ROWWISE, resolve


@dataclass(frozen=True)
class Sizes:
    rows: int
    features: int
    small_rows: int
    small_features: int
    f64_rows: int


FULL = Sizes(200_000, 256, 1000, 64, 100_000)
QUICK = Sizes(20_000, 64, 100, 8, 10_000)


def cases(backend: Backend, quick: bool) -> list[Case]:
    sizes = QUICK if quick else FULL
    rng = np.random.default_rng(0)
    ours = backend.compile(ck.cosine_similarity)
    limit = backend.compile(backend.row_dot)
    peers = resolve(ROWWISE, backend)
    plans = [
        ("row-wise similarity", sizes.rows, sizes.features, np.float32),
        ("row-wise similarity (small)", sizes.small_rows, sizes.small_features, np.float32),
        ("row-wise similarity (float64)", sizes.f64_rows, sizes.features, np.float64),
    ]
    return [
        Case(
            name,
            backend,
            f"{n}x{d}",
            np.dtype(dtype).name,
            random_pair(backend, rng, (n, d), (n, d), dtype),
            ours,
            limit,
            peers,
        )
        for name, n, d, dtype in plans
    ]


TARGETS = (
    Target(
        "row-wise within 2.5x of one vecdot (NumPy)",
        "row-wise similarity",
        "numpy",
        "x limit",
        2.5,
        at_most=True,
    ),
    Target(
        "row-wise within 3x of one vecdot (PyTorch)",
        "row-wise similarity",
        "torch",
        "x limit",
        3.0,
        at_most=True,
    ),
    Target(
        "row-wise within 2.5x of one vecdot (JAX jit)",
        "row-wise similarity",
        "jax-jit",
        "x limit",
        2.5,
        at_most=True,
    ),
    Target(
        "2x faster than sklearn paired_cosine_distances",
        "row-wise similarity",
        "numpy",
        "speedup vs sklearn paired_cosine_distances",
        2.0,
        at_most=False,
    ),
    Target(
        "2x faster than torch F.cosine_similarity",
        "row-wise similarity",
        "torch",
        "speedup vs torch F.cosine_similarity",
        2.0,
        at_most=False,
    ),
    Target(
        "within 2x of optax under jit",
        "row-wise similarity",
        "jax-jit",
        "speedup vs optax.cosine_similarity",
        0.5,
        at_most=False,
    ),
)

TOPIC = Topic("rowwise", cases, TARGETS)
