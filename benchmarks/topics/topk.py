"""Top-k search against brute force: one matmul and the library's own top-k."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import cosinekit as ck
from benchmarks.backends import Backend
from benchmarks.harness import Case, Topic, random_pair


@dataclass(frozen=True)
class Sizes:
    queries: int
    keys: int
    features: int
    k: int


FULL = Sizes(1000, 50_000, 128, 10)
QUICK = Sizes(64, 2000, 16, 5)


def cases(backend: Backend, quick: bool) -> list[Case]:
    sizes = QUICK if quick else FULL
    n, m, d, k = sizes.queries, sizes.keys, sizes.features, sizes.k

    def brute_force(queries: Any, keys: Any) -> Any:
        return backend.top_k(queries @ keys.T, k)

    return [
        Case(
            f"top-{k} search",
            backend,
            f"{n}x{m}x{d}",
            "float32",
            random_pair(backend, np.random.default_rng(3), (n, d), (m, d)),
            backend.compile(lambda queries, keys: ck.cosine_topk(queries, keys, k)),
            backend.compile(brute_force),
            {},
        )
    ]


TOPIC = Topic("topk", cases)
