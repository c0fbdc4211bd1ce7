"""Search benchmark: exact top-k and range search against faiss, in one process.

Run ``python benchmarks/search.py`` (``--quick`` for small sizes). It times,
with 2 threads everywhere, 1000 queries x 200,000 keys x 128 float32, k=10:

* faiss-cpu ``IndexFlatIP`` (normalize, add, search): the reference, 1.0;
* the sentence-transformers ``semantic_search`` loop on torch (normalize,
  then ``matmul`` and ``topk`` over blocks of 500,000 keys, merged);
* ``cosinekit.cosine_topk`` on NumPy, PyTorch and JAX (``jax.jit``);
* ``cosinekit.cosine_range_search`` against faiss ``range_search``;

and prints each time divided by faiss's, with the targets of issue 12, and
the peak extra memory of the NumPy search (``tracemalloc``).

``--dask`` adds the out-of-core run (minutes): a ``distributed.LocalCluster``
of two single-threaded workers with a 1.5 GB memory limit each searches keys
generated chunk by chunk on the workers (``--dask-keys`` rows x 64 float32,
default 10,000,000: 2.5 GB), compared with NumPy holding the same keys in
memory, and checked against brute force on a sample of queries.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

THREADS = 2
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, str(THREADS))

import numpy as np  # noqa: E402 (after the thread settings above)

import cosinekit as ck  # noqa: E402

# The bars and ambitions of issue 12: time / faiss IndexFlatIP.
TARGETS = {"numpy": (1.5, 1.0), "torch": (1.5, 1.0), "jax-jit": (3.0, 1.5)}


@dataclass
class Sizes:
    queries: int
    keys: int
    features: int
    k: int
    threshold: float
    repeat: int


FULL = Sizes(1000, 200_000, 128, 10, 0.3, 3)
QUICK = Sizes(100, 20_000, 32, 5, 0.5, 2)


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    """Minimum wall time over ``repeat`` runs after one warm-up (compiles, faults pages in)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def faiss_topk(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(unit(keys))
    return index.search(unit(queries), k)  # type: ignore[no-any-return]


def faiss_range(queries: np.ndarray, keys: np.ndarray, threshold: float) -> Any:
    import faiss

    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(unit(keys))
    return index.range_search(unit(queries), threshold)


def semantic_search_loop(queries: Any, keys: Any, k: int, block: int = 500_000) -> Any:
    """sentence-transformers' ``semantic_search``: normalize, then matmul + topk per block."""
    import torch

    queries = torch.nn.functional.normalize(queries, dim=1)
    keys = torch.nn.functional.normalize(keys, dim=1)
    best_values, best_indices = None, None
    for start in range(0, keys.shape[0], block):
        scores = queries @ keys[start : start + block].T
        values, indices = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        indices = indices + start
        if best_values is not None:
            values = torch.cat((best_values, values), dim=1)
            indices = torch.cat((best_indices, indices), dim=1)
            values, order = torch.topk(values, k, dim=1)
            indices = torch.gather(indices, 1, order)
        best_values, best_indices = values, indices
    return best_values, best_indices


def peak_extra_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes NumPy allocated while ``fn`` ran (``tracemalloc``), beyond what it kept."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def speed(sizes: Sizes) -> list[tuple[str, float]]:
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((sizes.queries, sizes.features), dtype=np.float32)
    keys = rng.standard_normal((sizes.keys, sizes.features), dtype=np.float32)
    k, repeat = sizes.k, sizes.repeat
    times: list[tuple[str, float]] = []

    def timed(name: str, fn: Callable[[], Any]) -> None:
        seconds = best_time(fn, repeat)
        times.append((name, seconds))
        print(f"  {name}: {seconds:.3f} s", file=sys.stderr, flush=True)

    import faiss

    faiss.omp_set_num_threads(THREADS)
    timed("faiss IndexFlatIP", lambda: faiss_topk(queries, keys, k))
    timed("numpy", lambda: ck.cosine_topk(queries, keys, k))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(THREADS)
        tq, tk = torch.from_numpy(queries), torch.from_numpy(keys)
        timed("torch", lambda: ck.cosine_topk(tq, tk, k))
        timed("semantic_search loop (torch)", lambda: semantic_search_loop(tq, tk, k))
    try:
        import jax
    except ImportError:
        jax = None
    if jax is not None:
        search = jax.jit(lambda q, kk: ck.cosine_topk(q, kk, k))
        jq, jk = jax.device_put(queries), jax.device_put(keys)
        timed("jax-jit", lambda: jax.block_until_ready(search(jq, jk)))
    timed("faiss range_search", lambda: faiss_range(queries, keys, sizes.threshold))
    timed("numpy range", lambda: ck.cosine_range_search(queries, keys, sizes.threshold))
    if torch is not None:
        timed("torch range", lambda: ck.cosine_range_search(tq, tk, sizes.threshold))
    # Exactness: the same neighbours as faiss wherever faiss's values are not tied.
    _, ours = ck.cosine_topk(queries, keys, k)
    _, reference = faiss_topk(queries, keys, k)
    agree = float(np.mean(np.sort(ours, axis=1) == np.sort(reference, axis=1)))
    print(f"  agreement with faiss's neighbour sets: {agree:.4%}", file=sys.stderr)
    return times


def report(times: list[tuple[str, float]], peak: int) -> bool:
    by_name = dict(times)
    faiss_time = by_name["faiss IndexFlatIP"]
    lines = ["| search | time (s) | / faiss |", "| --- | ---: | ---: |"]
    for name, seconds in times:
        base = by_name["faiss range_search"] if "range" in name else faiss_time
        lines.append(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |")
    print("\n".join(lines))
    print(f"\npeak extra memory, NumPy cosine_topk (tracemalloc): {peak / 2**20:.1f} MiB")
    met = True
    lines = [
        "\n| target | bar | ambition | measured | met |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for backend, (bar, ambition) in TARGETS.items():
        if backend not in by_name:
            continue
        ratio = by_name[backend] / faiss_time
        met &= ratio <= bar
        verdict = "yes" if ratio <= bar else "NO"
        lines.append(f"| cosine_topk {backend} | {bar} | {ambition} | {ratio:.2f} | {verdict} |")
    lines.append(
        f"| peak memory (MiB) | 256 | | {peak / 2**20:.0f} | {'yes' if peak < 2**28 else 'NO'} |"
    )
    met &= peak < 2**28
    print("\n".join(lines))
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
    parser.add_argument("--skip-speed", action="store_true", help="only the Dask run")
    # The bench session passes run.py's options too; they do not apply here.
    args, _ = parser.parse_known_args(argv)
    sizes = QUICK if args.quick else FULL
    met = True
    if not args.skip_speed:
        times = speed(sizes)
        rng = np.random.default_rng(2)
        queries = rng.standard_normal((sizes.queries, sizes.features), dtype=np.float32)
        keys = rng.standard_normal((sizes.keys, sizes.features), dtype=np.float32)
        peak = peak_extra_memory(lambda: ck.cosine_topk(queries, keys, sizes.k))
        met = report(times, peak)
    if args.dask:
        dask_run(args.dask_keys if not args.quick else 200_000)
    if not met:
        print("some targets are not met", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
