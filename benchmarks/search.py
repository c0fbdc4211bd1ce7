"""Search at scale: peak memory of the exact search, and the Dask cluster run.

The speed of ``cosine_topk`` and ``cosine_range_search`` against faiss is the
``search`` topic of ``benchmarks/run.py`` (``--cases search``). This script
measures what that harness does not:

* the peak extra memory of a NumPy ``cosine_topk`` (``tracemalloc``), 1000
  queries x 200,000 keys x 128 float32, against the 64 MiB bound of the
  default blocks (the result is small);
* with ``--dask`` (minutes), the out-of-core run: a ``distributed.LocalCluster``
  of two single-threaded workers with a 1.5 GB memory limit each searches keys
  generated chunk by chunk on the workers (``--dask-keys`` rows x 64 float32,
  default 10,000,000: 2.5 GB), compared with NumPy holding the same keys in
  memory, and checked against a float64 brute force on a sample of queries.

With ``--mining``, the peak memory of ``cosine_similar_pairs``,
``cosine_communities`` and ``mine_hard_negatives`` on the ``mining``
topic's 50,000 x 64 clustered rows, against the default blocks plus twice
each result.

Run ``python benchmarks/search.py [--quick] [--dask] [--dask-keys ROWS] [--mining]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: the mining sizes come from benchmarks.topics
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

THREADS = 2
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, str(THREADS))

import numpy as np  # noqa: E402 (after the thread settings above)

import cosinekit as ck  # noqa: E402


@dataclass
class Sizes:
    queries: int
    keys: int
    features: int
    k: int


FULL = Sizes(1000, 200_000, 128, 10)
QUICK = Sizes(100, 20_000, 32, 5)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def peak_extra_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes NumPy allocated while ``fn`` ran (``tracemalloc``), beyond what it kept."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def memory(sizes: Sizes) -> bool:
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((sizes.queries, sizes.features), dtype=np.float32)
    keys = rng.standard_normal((sizes.keys, sizes.features), dtype=np.float32)
    peak = peak_extra_memory(lambda: ck.cosine_topk(queries, keys, sizes.k))
    full = sizes.queries * sizes.keys * 4
    print(
        f"peak extra memory, NumPy cosine_topk {sizes.queries}x{sizes.keys}x{sizes.features} "
        f"(tracemalloc): {peak / 2**20:.1f} MiB (bound 64 MiB; the full similarity "
        f"matrix: {full / 2**20:.0f} MiB)"
    )
    return peak < 2**26


def mining_memory(quick: bool) -> bool:
    """Peak memory of the mining functions on the ``mining`` topic's clustered rows.

    Each must stay within the default blocks (64 MiB) plus twice its
    result; ``cosine_communities``' result is its labels, and the pairs
    it finds (about a million here) count as its candidates.
    """
    from benchmarks.topics.mining import FULL as MINING
    from benchmarks.topics.mining import QUICK as MINING_QUICK
    from benchmarks.topics.mining import clustered

    sizes = MINING_QUICK if quick else MINING
    rng = np.random.default_rng(22)
    x = clustered(rng, sizes)
    near = x + np.float32(0.2) * rng.standard_normal(x.shape, dtype=np.float32)
    positives = np.arange(sizes.rows)
    ck.cosine_topk(x[:10], x[:20], 2)  # imports and caches, outside the measurements
    threshold = sizes.threshold
    calls: dict[str, Callable[[], Any]] = {
        "cosine_similar_pairs": lambda: ck.cosine_similar_pairs(x, threshold),
        "cosine_range_search(x, x)": lambda: ck.cosine_range_search(x, x, threshold),
        "mine_hard_negatives": lambda: ck.mine_hard_negatives(near, x, positives, k=sizes.k),
        "cosine_communities": lambda: (ck.cosine_communities(x, threshold, min_size=10),),
    }
    pairs = sum(a.nbytes for a in ck.cosine_similar_pairs(x, threshold)[:2])
    met = True
    for name, call in calls.items():
        result = sum(a.nbytes for a in call())
        if name == "cosine_communities":
            result += pairs  # its candidates: the pairs found, as indices
        peak = peak_extra_memory(call)
        bound = 2**26 + 2 * result
        met = met and peak <= bound
        print(
            f"peak extra memory, NumPy {name} {sizes.rows}x{sizes.features} (tracemalloc): "
            f"{peak / 2**20:.1f} MiB; result {result / 2**20:.1f} MiB; bound (64 MiB + "
            f"twice the result) {bound / 2**20:.1f} MiB; the n x n matrix: "
            f"{sizes.rows**2 * 4 / 2**20:.0f} MiB"
        )
    return met


def dask_run(rows: int, queries_n: int = 1000, features: int = 64, k: int = 10) -> None:
    """Keys generated on two 1.5 GB workers, searched in place, against NumPy in memory."""
    import dask
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    chunk = 250_000  # 64 MB per key chunk
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((queries_n, features), dtype=np.float32)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit="1.5GB",
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        # Each chunk comes from its own seed on the worker that runs the task.
        def make_keys(block_info: Any = None) -> np.ndarray:
            location = block_info[None]["chunk-location"][0]
            shape = block_info[None]["chunk-shape"]
            return np.random.default_rng(location).standard_normal(shape, dtype=np.float32)

        keys = da.map_blocks(
            make_keys,
            dtype=np.float32,
            chunks=(da.core.normalize_chunks(chunk, (rows,))[0], (features,)),
        )
        lazy_queries = da.from_array(queries, chunks=(queries_n, features))
        values, indices = ck.cosine_topk(lazy_queries, keys, k)
        start = time.perf_counter()
        values, indices = client.compute([values, indices], sync=True)
        dask_seconds = time.perf_counter() - start
        memory = client.run(_worker_peak)
        limit = 1.5e9
        print(f"dask: {rows} x {features} keys, {dask_seconds:.1f} s", file=sys.stderr)
        print(f"worker peaks (RSS, bytes): {memory}", file=sys.stderr)
        generate = keys.map_blocks(lambda b: b[:1], chunks=((1,) * keys.numblocks[0], (features,)))
        start = time.perf_counter()
        client.compute(generate, sync=True)
        generation_seconds = time.perf_counter() - start
    with dask.config.set(scheduler="threads"):
        in_memory = keys.compute()
    start = time.perf_counter()
    _, numpy_indices = ck.cosine_topk(queries, in_memory, k)
    numpy_seconds = time.perf_counter() - start
    sample = rng.choice(queries_n, size=20, replace=False)
    expected = float64_topk(queries[sample], in_memory, k)
    correct = bool(np.array_equal(indices[sample], expected))
    print(
        f"| Dask, 2 workers x 1.5 GB | {rows} x {features} | {dask_seconds:.1f} s "
        f"(generating the keys alone: {generation_seconds:.1f} s) |\n"
        f"| NumPy, keys in memory | {rows} x {features} | {numpy_seconds:.1f} s |\n"
        f"ratio Dask / NumPy: {dask_seconds / numpy_seconds:.2f}; "
        f"sample of 20 queries equal to float64 brute force: {correct}; "
        f"same indices as NumPy: {bool(np.array_equal(indices, numpy_indices))}; "
        f"worker peak RSS: {max(memory.values()) / 1e9:.2f} GB of {limit / 1e9:.1f} GB"
    )


def float64_topk(queries: np.ndarray, keys: np.ndarray, k: int, block: int = 500_000) -> Any:
    """Brute-force top-k in float64, block by block, ties to the smaller index."""
    unit_queries = unit(queries.astype(np.float64))
    best_values = np.full((queries.shape[0], 0), -np.inf)
    best_indices = np.zeros((queries.shape[0], 0), dtype=np.int64)
    for start in range(0, keys.shape[0], block):
        similarity = unit_queries @ unit(keys[start : start + block].astype(np.float64)).T
        values = np.concatenate((best_values, similarity), axis=1)
        indices = np.concatenate(
            (
                best_indices,
                np.broadcast_to(np.arange(start, start + similarity.shape[1]), similarity.shape),
            ),
            axis=1,
        )
        order = np.lexsort((indices, -values), axis=1)[:, :k]
        best_values = np.take_along_axis(values, order, axis=1)
        best_indices = np.take_along_axis(indices, order, axis=1)
    return best_indices


def _worker_peak() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--dask", action="store_true", help="add the cluster run (minutes)")
    parser.add_argument("--dask-keys", type=int, default=10_000_000, help="key rows on Dask")
    parser.add_argument("--skip-memory", action="store_true", help="only the Dask run")
    parser.add_argument(
        "--mining", action="store_true", help="the mining functions' peak memory (minutes)"
    )
    # The bench session passes run.py's options too; they do not apply here.
    args, _ = parser.parse_known_args(argv)
    sizes = QUICK if args.quick else FULL
    met = args.skip_memory or memory(sizes)
    if args.mining:
        met = mining_memory(args.quick) and met
    if args.dask:
        dask_run(args.dask_keys if not args.quick else 200_000)
    if not met:
        print("the memory bound is not met", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
