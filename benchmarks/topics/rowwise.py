"""Row-wise cosine similarity against one ``vecdot`` and the peers' own functions.

Large batches, float32 and float64; small batches are the ``small`` topic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import cosinekit as ck
from benchmarks.backends import Backend
from benchmarks.harness import Case, Target, Topic, row_pair_cases
from benchmarks.peers import ROWWISE, resolve


@dataclass(frozen=True)
class Sizes:
    rows: int
    features: int
    f64_rows: int


FULL = Sizes(200_000, 256, 100_000)
QUICK = Sizes(20_000, 64, 10_000)


def cases(backend: Backend, quick: bool) -> list[Case]:
    sizes = QUICK if quick else FULL
    rng = np.random.default_rng(0)
    ours = backend.compile(ck.cosine_similarity)
    limit = backend.row_dot_limit()
    peers = resolve(ROWWISE, backend)
    return [
        *row_pair_cases(
            "row-wise similarity", backend, rng, [(sizes.rows, sizes.features)], ours, limit, peers
        ),
        *row_pair_cases(
            "row-wise similarity (float64)",
            backend,
            rng,
            [(sizes.f64_rows, sizes.features)],
            ours,
            limit,
            peers,
            np.float64,
        ),
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
