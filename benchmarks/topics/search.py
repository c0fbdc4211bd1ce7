"""Exact top-k and range search against faiss and sentence-transformers' loop.

1000 queries x 200,000 keys x 128 float32, k=10 (issue 12). The limit is the
blocked matrix product alone (keys in blocks of 4,096 rows, each block's
maximum kept so that no compiler drops the product): the floor of any exact
search. The peers are faiss-cpu's ``IndexFlatIP`` (normalize, add, search;
``range_search`` for the range case), the reference of the targets, and on
PyTorch the ``semantic_search`` loop of sentence-transformers (normalize,
then ``matmul`` and ``topk`` over blocks of 500,000 keys, merged). faiss
takes NumPy arrays; PyTorch and JAX CPU arrays reach it without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import cosinekit as ck
from benchmarks import THREADS
from benchmarks.backends import Backend, Fn
from benchmarks.harness import Case, Target, Topic, random_pair
from benchmarks.peers import PeerTable, resolve


@dataclass(frozen=True)
class Sizes:
    queries: int
    keys: int
    features: int
    k: int
    threshold: float


FULL = Sizes(1000, 200_000, 128, 10, 0.3)
QUICK = Sizes(64, 4000, 16, 5, 0.5)
FULL_SHAPE = f"{FULL.queries}x{FULL.keys}x{FULL.features}"
LIMIT_BLOCK = 4096


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _faiss_index(keys: Any) -> Any:
    import faiss

    faiss.omp_set_num_threads(THREADS)
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(_unit(np.asarray(keys)))
    return index


def _faiss_topk(k: int) -> Fn:
    def search(queries: Any, keys: Any) -> Any:
        return _faiss_index(keys).search(_unit(np.asarray(queries)), k)

    return search


def _faiss_range(threshold: float) -> Fn:
    def search(queries: Any, keys: Any) -> Any:
        return _faiss_index(keys).range_search(_unit(np.asarray(queries)), threshold)

    return search


def semantic_search_loop(queries: Any, keys: Any, k: int, block: int = 500_000) -> Any:
    """sentence-transformers' ``semantic_search``: normalize, then matmul + topk per block."""
    import torch

    queries = torch.nn.functional.normalize(queries, dim=1)
    keys = torch.nn.functional.normalize(keys, dim=1)
    best: tuple[Any, Any] | None = None
    for start in range(0, keys.shape[0], block):
        scores = queries @ keys[start : start + block].T
        values, indices = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        indices = indices + start
        if best is not None:
            values, order = torch.topk(torch.cat((best[0], values), dim=1), k, dim=1)
            indices = torch.gather(torch.cat((best[1], indices), dim=1), 1, order)
        best = (values, indices)
    return best


def _topk_peers(k: int) -> PeerTable:
    def faiss_factory() -> Fn:
        import faiss  # noqa: F401 (a missing faiss skips the peer)

        return _faiss_topk(k)

    def loop_factory() -> Fn:
        return lambda queries, keys: semantic_search_loop(queries, keys, k)

    return {
        "numpy": {"faiss IndexFlatIP": faiss_factory},
        "torch": {"faiss IndexFlatIP": faiss_factory, "semantic_search loop": loop_factory},
        "jax": {"faiss IndexFlatIP": faiss_factory},
    }


def _range_peers(threshold: float) -> PeerTable:
    def faiss_factory() -> Fn:
        import faiss  # noqa: F401 (a missing faiss skips the peer)

        return _faiss_range(threshold)

    return {
        "numpy": {"faiss range_search": faiss_factory},
        "torch": {"faiss range_search": faiss_factory},
    }


def cases(backend: Backend, quick: bool) -> list[Case]:
    if backend.device != "cpu":
        return []  # faiss-cpu, the reference, runs on the CPU
    sizes = QUICK if quick else FULL
    n, m, d, k = sizes.queries, sizes.keys, sizes.features, sizes.k
    shape = f"{n}x{m}x{d}"
    xp = backend.xp

    def blocked_matmul(queries: Any, keys: Any) -> Any:
        return [
            xp.max(queries @ keys[start : min(start + LIMIT_BLOCK, m)].T, axis=1)
            for start in range(0, m, LIMIT_BLOCK)
        ]

    inputs = random_pair(backend, np.random.default_rng(12), (n, d), (m, d))
    found = [
        Case(
            f"top-{k} search vs faiss",
            backend,
            shape,
            "float32",
            inputs,
            backend.compile(lambda queries, keys: ck.cosine_topk(queries, keys, k)),
            backend.compile(blocked_matmul),
            resolve(_topk_peers(k), backend, wrap=lambda fn: fn),
        )
    ]
    if backend.mode == "eager":
        # The number of pairs depends on the data: no range search under jit.
        threshold = sizes.threshold
        found.append(
            Case(
                "range search vs faiss",
                backend,
                shape,
                "float32",
                inputs,
                lambda queries, keys: ck.cosine_range_search(queries, keys, threshold),
                blocked_matmul,
                resolve(_range_peers(threshold), backend, wrap=lambda fn: fn),
            )
        )
    return found


def _faiss_target(backend: str, bound: float, ambition: float) -> Target:
    return Target(
        f"top-10 search within {bound}x of faiss IndexFlatIP ({backend})",
        "top-10 search vs faiss",
        backend,
        "x faiss IndexFlatIP",
        bound,
        at_most=True,
        ambition=ambition,
        shape=FULL_SHAPE,
    )


TARGETS = (
    _faiss_target("numpy", 1.5, 1.0),
    _faiss_target("torch", 1.5, 1.0),
    _faiss_target("jax-jit", 3.0, 1.5),
)

TOPIC = Topic("search", cases, TARGETS)
