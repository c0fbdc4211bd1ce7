"""Communities of 300,000 embeddings on a two-worker Dask cluster, against NumPy and ST.

Run once for the Mining page (``docs/mining.md``)::

    python benchmarks/communities_dask.py [--rows 300000] [--sentence-transformers]

A ``distributed.LocalCluster`` of two single-threaded workers with a memory
limit of 1.5 GB each generates the rows chunk by chunk on the workers
(clustered, 64 float32 features, about 50 rows per centre as in the
``mining`` topic of ``benchmarks/run.py``), and ``cosine_communities`` runs
on them at threshold 0.8 with ``min_size=10``: one task per pair of chunks
on or above the diagonal finds the pairs, and the greedy visit runs in the
client. The same rows, computed into memory, then go through NumPy's
``cosine_communities`` (2 BLAS threads) and, with ``--sentence-transformers``
(a long run), through sentence-transformers' ``community_detection``. The
labels must agree. Prints the times, each worker's peak memory (RSS) and a
Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

THREADS = 2
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, str(THREADS))

import numpy as np  # noqa: E402 (after the thread settings above)

import cosinekit as ck  # noqa: E402

FEATURES = 64
ROWS_PER_CENTRE = 50
CHUNK = 25_000
THRESHOLD = 0.8
MIN_SIZE = 10


def _centres(rows: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((max(1, rows // ROWS_PER_CENTRE), FEATURES), dtype=np.float32)


def _chunk(location: int, shape: tuple[int, int], rows: int) -> np.ndarray:
    """Rows of one chunk, from its own seed: the same on a worker or here."""
    centres = _centres(rows)
    rng = np.random.default_rng(1 + location)
    which = rng.integers(0, centres.shape[0], shape[0])
    noise = rng.standard_normal(shape, dtype=np.float32)
    return centres[which] + np.float32(0.42) * noise


def _worker_peak() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _groups(labels: np.ndarray) -> list[list[int]]:
    return [np.nonzero(labels == c)[0].tolist() for c in range(int(labels.max()) + 1)]


def run(rows: int, with_sentence_transformers: bool) -> None:
    import dask
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    chunks = (da.core.normalize_chunks(CHUNK, (rows,))[0], (FEATURES,))

    def make(block_info: Any = None) -> np.ndarray:
        info = block_info[None]
        return _chunk(info["chunk-location"][0], info["chunk-shape"], rows)

    x = da.map_blocks(make, dtype=np.float32, chunks=chunks)
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
        start = time.perf_counter()
        labels = ck.cosine_communities(x, THRESHOLD, min_size=MIN_SIZE)
        lazy_seconds = time.perf_counter() - start
        labels = labels.compute()
        dask_seconds = time.perf_counter() - start
        memory = client.run(_worker_peak)
    print(f"dask: {dask_seconds:.1f} s (labels computed in the call: {lazy_seconds:.1f} s)")
    print(f"worker peaks (RSS, bytes): {memory}")
    with dask.config.set(scheduler="threads"):
        in_memory = x.compute()
    start = time.perf_counter()
    numpy_labels = ck.cosine_communities(in_memory, THRESHOLD, min_size=MIN_SIZE)
    numpy_seconds = time.perf_counter() - start
    same = bool(np.array_equal(labels, numpy_labels))
    print(f"numpy: {numpy_seconds:.1f} s; labels equal to Dask's: {same}")
    communities = int(labels.max()) + 1
    members = int(np.sum(labels >= 0))
    lines = [
        "| run | time |",
        "| --- | ---: |",
        f"| Dask, 2 workers x 1.5 GB (rows generated on the workers) | {dask_seconds:.1f} s |",
        f"| NumPy, rows in memory | {numpy_seconds:.1f} s |",
    ]
    if with_sentence_transformers:
        import torch
        from sentence_transformers.util import community_detection

        torch.set_num_threads(THREADS)
        start = time.perf_counter()
        theirs = community_detection(
            torch.from_numpy(in_memory), threshold=THRESHOLD, min_community_size=MIN_SIZE
        )
        st_seconds = time.perf_counter() - start
        agree = [sorted(c) for c in theirs] == _groups(numpy_labels)
        print(f"sentence-transformers: {st_seconds:.1f} s; same communities: {agree}")
        lines.append(f"| sentence-transformers `community_detection` | {st_seconds:.1f} s |")
    print("\n".join(lines))
    print(
        f"{rows} x {FEATURES} float32, threshold {THRESHOLD}, min_size {MIN_SIZE}: "
        f"{communities} communities holding {members} rows; worker peak RSS "
        f"{max(memory.values()) / 1e9:.2f} GB of 1.5 GB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000, help="rows of the collection")
    parser.add_argument(
        "--sentence-transformers",
        action="store_true",
        help="also time sentence-transformers' community_detection (long)",
    )
    args = parser.parse_args(argv)
    run(args.rows, args.sentence_transformers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
