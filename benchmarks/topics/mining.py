"""Mining: similar pairs, communities and hard negatives on clustered embeddings (issue 22).

50,000 x 64 float32 rows around 1,000 centres, threshold 0.8: about a
million pairs above it, in communities of a few dozen. The limit is the
blocked matrix product alone: of the upper triangle for the self-joins
(each block's maximum kept, so that no compiler drops it), of the whole
query-key product for hard negatives. The peers:

* similar pairs: our own ``cosine_range_search(x, x)`` (the full self-join
  it halves) and faiss-cpu's ``range_search`` of the collection against
  itself (``IndexFlatIP`` on normalized rows);
* communities: sentence-transformers' ``community_detection`` with the same
  threshold and ``min_community_size=10`` (its default);
* hard negatives (``k=10``, one positive per query, queries near their
  positive): our own ``cosine_topk`` with ``k=11``, the search that mining
  adds its filters to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import cosinekit as ck
from benchmarks import THREADS
from benchmarks.backends import Backend, Fn
from benchmarks.harness import Case, Target, Topic
from benchmarks.peers import PeerTable, resolve


@dataclass(frozen=True)
class Sizes:
    rows: int
    features: int
    centres: int
    threshold: float
    k: int


FULL = Sizes(50_000, 64, 1_000, 0.8, 10)
QUICK = Sizes(2_000, 16, 40, 0.8, 5)
FULL_SHAPE = f"{FULL.rows}x{FULL.features}"
LIMIT_BLOCK = 2048
MIN_SIZE = 10


def clustered(rng: np.random.Generator, sizes: Sizes) -> np.ndarray:
    """Rows around ``sizes.centres`` centres: within a cluster similarity is about 0.85."""
    centres = rng.standard_normal((sizes.centres, sizes.features), dtype=np.float32)
    which = rng.integers(0, sizes.centres, sizes.rows)
    noise = rng.standard_normal((sizes.rows, sizes.features), dtype=np.float32)
    return centres[which] + np.float32(0.42) * noise


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _faiss_self_join(threshold: float) -> Fn:
    def search(x: Any) -> Any:
        import faiss

        faiss.omp_set_num_threads(THREADS)
        unit = _unit(np.asarray(x))
        index = faiss.IndexFlatIP(unit.shape[1])
        index.add(unit)
        return index.range_search(unit, threshold)

    return search


def _pairs_peers(threshold: float) -> PeerTable:
    def faiss_factory() -> Fn:
        import faiss  # noqa: F401 (a missing faiss skips the peer)

        return _faiss_self_join(threshold)

    def range_factory() -> Fn:
        return lambda x: ck.cosine_range_search(x, x, threshold)

    table = {"cosine_range_search(x, x)": range_factory, "faiss range_search": faiss_factory}
    return {"numpy": table, "torch": table}


def _communities_peers(threshold: float) -> PeerTable:
    def factory() -> Fn:
        from sentence_transformers.util import community_detection

        def detect(x: Any) -> Any:
            import torch

            return community_detection(
                torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x,
                threshold=threshold,
                min_community_size=MIN_SIZE,
            )

        return detect

    table = {"sentence-transformers community_detection": factory}
    return {"numpy": table, "torch": table}


def _negatives_peers(k: int) -> PeerTable:
    def factory() -> Fn:
        return lambda queries, keys, positives: ck.cosine_topk(queries, keys, k + 1)

    table = {f"cosine_topk k={k + 1}": factory}
    return {"numpy": table, "torch": table, "jax": table}


def cases(backend: Backend, quick: bool) -> list[Case]:
    if backend.device != "cpu":
        return []  # the peers (faiss-cpu, sentence-transformers on the CPU) run on the CPU
    sizes = QUICK if quick else FULL
    xp = backend.xp
    rng = np.random.default_rng(22)
    data = clustered(rng, sizes)
    near = data + np.float32(0.2) * rng.standard_normal(data.shape, dtype=np.float32)
    shape = f"{sizes.rows}x{sizes.features}"

    def triangle(x: Any) -> Any:
        n = x.shape[0]
        return [
            xp.max(x[row : min(row + LIMIT_BLOCK, n)] @ x[column : min(column + LIMIT_BLOCK, n)].T)
            for column in range(0, n, LIMIT_BLOCK)
            for row in range(0, column + 1, LIMIT_BLOCK)
        ]

    def full(queries: Any, keys: Any, positives: Any) -> Any:
        m = keys.shape[0]
        return [
            xp.max(queries @ keys[start : min(start + LIMIT_BLOCK, m)].T, axis=1)
            for start in range(0, m, LIMIT_BLOCK)
        ]

    def collection() -> tuple[Any, ...]:
        return (backend.array(data),)

    def triples() -> tuple[Any, ...]:
        positives = np.arange(sizes.rows)
        return backend.array(near), backend.array(data), backend.array(positives)

    k, threshold = sizes.k, sizes.threshold
    found = [
        Case(
            f"hard negatives k={k}",
            backend,
            shape,
            "float32",
            triples,
            backend.compile(lambda q, keys, p: ck.mine_hard_negatives(q, keys, p, k=k)),
            backend.compile(full),
            resolve(_negatives_peers(k), backend),
        )
    ]
    if backend.mode == "eager":
        # The number of pairs and communities depends on the data: no jit.
        found += [
            Case(
                "similar pairs",
                backend,
                shape,
                "float32",
                collection,
                lambda x: ck.cosine_similar_pairs(x, threshold),
                triangle,
                resolve(_pairs_peers(threshold), backend, wrap=lambda fn: fn),
            ),
            Case(
                "communities",
                backend,
                shape,
                "float32",
                collection,
                lambda x: ck.cosine_communities(x, threshold, min_size=MIN_SIZE),
                triangle,
                resolve(_communities_peers(threshold), backend, wrap=lambda fn: fn),
            ),
        ]
    return found


def _targets(backend: str) -> list[Target]:
    return [
        Target(
            f"similar pairs within 0.6x of cosine_range_search(x, x) ({backend})",
            "similar pairs",
            backend,
            "x cosine_range_search(x, x)",
            0.6,
            at_most=True,
            ambition=0.5,
            shape=FULL_SHAPE,
        ),
        Target(
            f"similar pairs within 1.0x of faiss range_search ({backend})",
            "similar pairs",
            backend,
            "x faiss range_search",
            1.0,
            at_most=True,
            shape=FULL_SHAPE,
        ),
        Target(
            f"communities within 0.3x of sentence-transformers ({backend})",
            "communities",
            backend,
            "x sentence-transformers community_detection",
            0.3,
            at_most=True,
            ambition=0.1,
            shape=FULL_SHAPE,
        ),
        Target(
            f"hard negatives k=10 within 1.3x of cosine_topk k=11 ({backend})",
            "hard negatives k=10",
            backend,
            "x cosine_topk k=11",
            1.3,
            at_most=True,
            ambition=1.1,
            shape=FULL_SHAPE,
        ),
    ]


TARGETS = (*_targets("numpy"), *_targets("torch"))

TOPIC = Topic("mining", cases, TARGETS)
