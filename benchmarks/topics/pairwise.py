"""Pairwise cosine similarity against the bare ``x @ y.T`` and the peers."""

from __future__ import annotations

import numpy as np

import cosinekit as ck
from benchmarks.backends import Backend
from benchmarks.harness import Case, Target, Topic, random_pair
from benchmarks.peers import PAIRWISE, resolve

FULL = (4096, 256)  # rows of x and y, features
QUICK = (256, 32)


def cases(backend: Backend, quick: bool) -> list[Case]:
    n, d = QUICK if quick else FULL
    return [
        Case(
            "pairwise similarity",
            backend,
            f"{n}x{n}x{d}",
            "float32",
            random_pair(backend, np.random.default_rng(2), (n, d), (n, d)),
            backend.compile(ck.pairwise_cosine_similarity),
            backend.compile(lambda x, y: x @ y.T),
            resolve(PAIRWISE, backend),
        )
    ]


TARGETS = (
    Target(
        "pairwise within 1.3x of the bare matmul (NumPy)",
        "pairwise similarity",
        "numpy",
        "x limit",
        1.3,
        at_most=True,
    ),
    Target(
        "pairwise within 1.3x of the bare matmul (PyTorch)",
        "pairwise similarity",
        "torch",
        "x limit",
        1.3,
        at_most=True,
    ),
    Target(
        "pairwise within 1.3x of the bare matmul (JAX jit)",
        "pairwise similarity",
        "jax-jit",
        "x limit",
        1.3,
        at_most=True,
    ),
    Target(
        "pairwise 10x faster than scipy cdist",
        "pairwise similarity",
        "numpy",
        "speedup vs scipy cdist cosine",
        10.0,
        at_most=False,
    ),
)

TOPIC = Topic("pairwise", cases, TARGETS)
