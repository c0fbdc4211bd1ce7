"""The same code on a real two-process Dask cluster, against NumPy references."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity

import cosinekit as ck

# The cluster runs Dask arrays only.
pytestmark = [pytest.mark.backends("dask"), pytest.mark.slow]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from dask import distributed

    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # No dashboard, and the scheduler's HTTP server on a free port:
            # its default, 8787, may be taken (another cluster on the
            # machine, this module's fixture on another pytest-xdist worker),
            # and the warning would be an error.
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        distributed.Client(cluster) as connected,
    ):
        yield connected


def test_pairwise_and_topk_on_a_cluster(client: Any) -> None:
    import dask.array as da

    rng = np.random.default_rng(11)
    queries = rng.standard_normal((60, 8))
    keys = rng.standard_normal((500, 8))
    keys[::7] = keys[3]  # exact duplicates: the tie rule must hold across workers
    queries[5] = 0.0
    lazy_queries = da.from_array(queries, chunks=(16, 8))
    lazy_keys = da.from_array(keys, chunks=(90, 8))

    similarity = ck.pairwise_cosine_similarity(lazy_queries, lazy_keys)
    values, indices = ck.cosine_topk(lazy_queries, lazy_keys, 10, chunk_size=64)
    similarity, values, indices = client.compute([similarity, values, indices], sync=True)

    expected = cosine_similarity(queries, keys)
    np.testing.assert_allclose(similarity, expected, rtol=0, atol=1e-15)
    order = np.lexsort((np.broadcast_to(np.arange(500), expected.shape), -expected), axis=-1)
    np.testing.assert_allclose(
        values, np.take_along_axis(expected, order[:, :10], axis=1), rtol=0, atol=1e-15
    )
    # Each chosen key has the reported similarity, no key twice, and where
    # similarities tie (copies of key 3) the smaller index comes first.
    chosen = np.take_along_axis(expected, indices, axis=1)
    np.testing.assert_allclose(chosen, values, rtol=0, atol=1e-15)
    assert all(len(set(row)) == 10 for row in indices.tolist())
    tied = values[:, 1:] == values[:, :-1]
    assert tied.any()
    assert np.all(indices[:, 1:][tied] > indices[:, :-1][tied])
    np.testing.assert_array_equal(indices[5], np.arange(10))


def test_search_keys_generated_on_the_workers(client: Any) -> None:
    """A small version of the benchmark's run: keys made chunk by chunk on the workers.

    Each key chunk is searched by one task where it lives; the (n, k) partial
    results are merged in a tree, so no task sees more than two of them.
    """
    import dask.array as da

    keys = da.random.RandomState(5).standard_normal((40_000, 16), chunks=(5_000, 16))
    queries = keys[:50]
    values, indices = ck.cosine_topk(queries, keys, 5, exclude_self=True)
    graph = dict(indices.__dask_graph__())
    # Eight key chunks: eight searches, three levels of merges, no task above two inputs.
    assert sum("search_block" in str(key) for key in graph) == 8
    rows, cols, sims = ck.cosine_range_search(queries, keys, 0.6, exclude_self=True)
    values, indices, rows, cols, sims = client.compute(
        [values, indices, rows, cols, sims], sync=True
    )
    local_keys = keys.compute()
    expected = cosine_similarity(local_keys[:50], local_keys)
    expected[np.arange(50), np.arange(50)] = -np.inf
    order = np.argsort(-expected, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(indices, order)
    np.testing.assert_allclose(values, np.take_along_axis(expected, order, axis=1), atol=1e-12)
    pairs = np.argwhere(expected >= 0.6)
    np.testing.assert_array_equal(np.sort(rows), pairs[:, 0])
    np.testing.assert_array_equal(np.lexsort((cols, -sims, rows)), np.arange(rows.shape[0]))
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == {
        tuple(p) for p in pairs.tolist()
    }
    np.testing.assert_allclose(sims, expected[rows, cols], atol=1e-12)
