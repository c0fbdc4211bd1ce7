"""Mining against sentence-transformers' own functions, on clustered data.

sentence-transformers' ``community_detection`` and
``paraphrase_mining_embeddings`` are the functions people use and the
contract's reference. Its import takes about ten seconds, so every
comparison with it lives in this one module, in the PyTorch session.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import cosinekit as ck

pytestmark = pytest.mark.backends("torch")


@pytest.fixture(scope="module")
def util() -> Any:
    return pytest.importorskip("sentence_transformers.util")


def clustered(n: int, d: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    sizes = rng.zipf(1.6, clusters)  # a few large communities, many small ones
    which = rng.choice(clusters, size=n, p=sizes / sizes.sum())
    return centres[which] + spread * rng.standard_normal((n, d))


def far_from(x: np.ndarray, threshold: float) -> None:
    """No pair within 1e-9 of the threshold: both libraries round the same pairs alike."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.min(np.abs(unit @ unit.T - threshold)) > 1e-9


@pytest.mark.parametrize(("threshold", "min_size"), [(0.75, 10), (0.9, 1), (0.8, 3), (0.6, 25)])
def test_communities_equal_sentence_transformers(
    util: Any, threshold: float, min_size: int
) -> None:
    import torch

    x = clustered(1200, 16, 40, 0.45, seed=int(threshold * 100) + min_size)
    far_from(x, threshold)
    theirs = util.community_detection(
        torch.asarray(x), threshold=threshold, min_community_size=min_size, batch_size=256
    )
    labels = ck.cosine_communities(torch.asarray(x), threshold, min_size=min_size, chunk_size=300)
    assert labels.dtype == torch.int64
    labels = labels.numpy()
    assert labels.max() + 1 == len(theirs)
    for c, community in enumerate(theirs):
        # Their community c, first its centre, is our label c.
        np.testing.assert_array_equal(np.nonzero(labels == c)[0], np.sort(community))
    assert np.sum(labels >= 0) == sum(len(c) for c in theirs)


def test_similar_pairs_equal_paraphrase_mining(util: Any) -> None:
    import torch

    x = clustered(300, 12, 20, 0.5, seed=3)
    threshold = 0.8
    far_from(x, threshold)
    # Without their caps (top_k neighbours per row, max_pairs) they find every pair.
    theirs = util.paraphrase_mining_embeddings(
        torch.asarray(x), top_k=300, max_pairs=10**6, query_chunk_size=128, corpus_chunk_size=200
    )
    kept = [(i, j, score) for score, i, j in theirs if score >= threshold]
    first, second, values = (
        a.numpy() for a in ck.cosine_similar_pairs(torch.asarray(x), threshold)
    )
    assert sorted(zip(first.tolist(), second.tolist(), strict=True)) == sorted(
        (i, j) for i, j, _ in kept
    )
    # Both by descending score; no two scores tie here.
    np.testing.assert_allclose(values, [score for _, _, score in kept], rtol=0, atol=1e-12)
