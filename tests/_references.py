"""Float64 NumPy formulas of the public functions, written from the contract (API.md).

Each has the public function's signature (arrays positional-only, options
by keyword), so a row of the transform matrix calls either one the same
way; options that change how a result is computed but not its value
(``chunk_size``, ``block_size``) are accepted and ignored. They follow
the definitions, not cosinekit's code: a row is rescaled by its largest
magnitude before its norm is taken (so a row of 1e-200 keeps its
direction), a zero row has similarity 0 with everything, and the
log-sum-exp is shifted by its maximum.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _scaled(x: np.ndarray) -> np.ndarray:
    """Each row divided by its largest magnitude (zero rows stay zero)."""
    scale = np.max(np.abs(x), axis=-1, keepdims=True)
    return np.divide(x, scale, out=np.zeros_like(x, dtype=np.float64), where=scale != 0)


def _unit(x: np.ndarray) -> np.ndarray:
    scaled = _scaled(np.asarray(x, dtype=np.float64))
    norm = np.linalg.norm(scaled, axis=-1, keepdims=True)
    return np.divide(scaled, norm, out=np.zeros_like(scaled), where=norm != 0)


def _cosine(x1: np.ndarray, x2: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return np.sum(_unit(x1) * _unit(x2), axis=-1)
    # sum(w a b) / sqrt(sum(w a^2) sum(w b^2)), on rescaled rows.
    a, b = np.broadcast_arrays(_scaled(np.asarray(x1, float)), _scaled(np.asarray(x2, float)))
    w = np.asarray(weights, dtype=np.float64)
    denominator = np.sqrt(np.sum(w * a * a, axis=-1) * np.sum(w * b * b, axis=-1))
    numerator = np.sum(w * a * b, axis=-1)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    return np.log(np.sum(np.exp(x - top), axis=axis)) + np.squeeze(top, axis=axis)


def l2_normalize(x: np.ndarray, /) -> np.ndarray:
    return _unit(x)


def cosine_similarity(
    x1: np.ndarray, x2: np.ndarray, /, *, feature_weights: np.ndarray | None = None
) -> np.ndarray:
    return np.clip(_cosine(x1, x2, feature_weights), -1, 1)


def cosine_distance(
    x1: np.ndarray, x2: np.ndarray, /, *, feature_weights: np.ndarray | None = None
) -> np.ndarray:
    return np.clip(1 - _cosine(x1, x2, feature_weights), 0, 2)


def angular_distance(
    x1: np.ndarray, x2: np.ndarray, /, *, feature_weights: np.ndarray | None = None
) -> np.ndarray:
    c = _cosine(x1, x2, feature_weights)
    a, b = (np.max(np.abs(x), axis=-1) for x in (x1, x2))
    return np.where((a == 0) | (b == 0), 0.5, np.arccos(np.clip(c, -1, 1)) / np.pi)


def cosine_distance_loss(
    labels: np.ndarray, predictions: np.ndarray, /, *, weights: np.ndarray | None = None
) -> np.ndarray:
    """The default reduction, ``"sum_by_nonzero_weights"``."""
    loss = 1 - _cosine(labels, predictions, None)
    w = np.ones_like(loss) if weights is None else np.broadcast_to(weights, loss.shape)
    return np.asarray(np.sum(w * loss) / max(np.count_nonzero(w), 1))


def cosine_embedding_loss(
    x1: np.ndarray, x2: np.ndarray, target: np.ndarray, /, *, margin: float = 0.0
) -> np.ndarray:
    c = _cosine(x1, x2, None)
    per_pair = np.where(target == 1, 1 - c, np.where(target == -1, np.maximum(c - margin, 0), 0))
    return np.asarray(np.mean(per_pair))


def pairwise_cosine_similarity(x: np.ndarray, y: np.ndarray, /) -> np.ndarray:
    return np.clip(_unit(x) @ np.swapaxes(_unit(y), -1, -2), -1, 1)


def pairwise_cosine_distance(x: np.ndarray, y: np.ndarray, /) -> np.ndarray:
    return np.clip(1 - _unit(x) @ np.swapaxes(_unit(y), -1, -2), 0, 2)


def cosine_topk(
    queries: np.ndarray, keys: np.ndarray, /, *, k: int, chunk_size: int | None = None
) -> tuple[np.ndarray, ...]:
    sims = pairwise_cosine_similarity(queries, keys)
    order = np.argsort(-sims, axis=-1, kind="stable")[..., :k]  # ties: the smaller index
    return np.take_along_axis(sims, order, axis=-1), order


def cosine_range_search(
    queries: np.ndarray, keys: np.ndarray, /, *, threshold: float, chunk_size: int | None = None
) -> tuple[np.ndarray, ...]:
    """Ordered by query, then by descending similarity, then by key."""
    sims = pairwise_cosine_similarity(queries, keys)
    rows, cols = np.nonzero(sims >= threshold)
    order = np.lexsort((cols, -sims[rows, cols], rows))
    return rows[order], cols[order], sims[rows[order], cols[order]]


def info_nce_loss(
    queries: np.ndarray,
    keys: np.ndarray,
    /,
    *,
    temperature: Any = 0.05,
    labels: np.ndarray | None = None,
    symmetric: bool = False,
    positive_offset: Any = 0,
    block_size: int | None = None,
) -> np.ndarray:
    """The mean over queries of ``logsumexp(logits[i]) - logits[i, positive_i]``."""
    logits = _unit(queries) @ _unit(keys).T / temperature
    rows = np.arange(len(queries))
    target = rows + int(positive_offset) if labels is None else np.asarray(labels)
    picked = logits[rows, target]
    loss = _lse(logits, 1) - picked
    if symmetric:
        loss = (loss + _lse(logits, 0) - picked) / 2
    return np.asarray(np.mean(loss))


def ntxent_loss(
    embeddings: np.ndarray,
    labels: np.ndarray,
    /,
    *,
    temperature: Any = 0.07,
    block_size: int | None = None,
) -> np.ndarray:
    """The mean over ordered positive pairs ``(i, j)`` of the pair's cross-entropy
    against the negatives of ``i`` (the rows with another label)."""
    s = _unit(embeddings) @ _unit(embeddings).T / temperature
    total, count = 0.0, 0
    for i in range(len(embeddings)):
        negatives = s[i][labels != labels[i]]
        for j in range(len(embeddings)):
            if i != j and labels[i] == labels[j]:
                total += _lse(np.concatenate([[s[i, j]], negatives]), 0) - s[i, j]
                count += 1
    return np.asarray(total / max(count, 1))


def cosent_loss(
    x1: np.ndarray, x2: np.ndarray, scores: np.ndarray, /, *, scale: Any = 20.0
) -> np.ndarray:
    """``log(1 + sum over scores_i > scores_j of exp(scale * (c_j - c_i)))``."""
    c = _cosine(x1, x2, None)
    diff = scale * (c[None, :] - c[:, None])
    return _lse(np.concatenate([[0.0], diff[scores[:, None] > scores[None, :]]]), 0)


def cosine_triplet_loss(
    anchor: np.ndarray,
    positive: np.ndarray,
    negative: np.ndarray,
    /,
    *,
    margin: float = 1.0,
    swap: bool = False,
) -> np.ndarray:
    def d(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 1 - _cosine(x, y, None)

    negative_distance = d(anchor, negative)
    if swap:
        negative_distance = np.minimum(negative_distance, d(positive, negative))
    return np.asarray(np.mean(np.maximum(d(anchor, positive) - negative_distance + margin, 0)))


# --- Mining ------------------------------------------------------------------------


def cosine_similarity_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`pairwise_cosine_similarity`, with exactly 1 for identical nonzero finite rows."""
    similarity = pairwise_cosine_similarity(x, y)
    same = np.all(x[:, None, :] == y[None, :, :], axis=2)
    usable = np.all(np.isfinite(x), axis=1)[:, None] & np.any(x != 0, axis=1)[:, None]
    return np.where(same & usable, 1.0, similarity)


def cosine_similar_pairs(
    x: np.ndarray, threshold: float, /, *, chunk_size: int | None = None
) -> tuple[np.ndarray, ...]:
    """The pairs ``i < j`` at or above ``threshold``: by descending similarity, ``i``, ``j``."""
    similarity = cosine_similarity_matrix(x, x)
    first, second = np.nonzero(np.triu(similarity >= threshold, 1))
    values = similarity[first, second]
    order = np.lexsort((second, first, -values))
    return first[order], second[order], values[order]


def cosine_communities(
    x: np.ndarray, threshold: float, /, *, min_size: int = 1, chunk_size: int | None = None
) -> np.ndarray:
    """API.md's community rule, one candidate at a time from the full matrix."""
    n = x.shape[0]
    candidates = [np.nonzero(cosine_similarity_matrix(x, x)[i] >= threshold)[0] for i in range(n)]
    sizes = np.array([c.size for c in candidates])
    taken = np.zeros(n, dtype=bool)
    accepted: list[np.ndarray] = []
    for centre in sorted(range(n), key=lambda i: (-sizes[i], i)):
        if sizes[centre] < min_size or taken[centre]:
            continue
        members = candidates[centre][~taken[candidates[centre]]]
        if members.size >= min_size:
            taken[members] = True
            accepted.append(members)
    labels = np.full(n, -1)
    by_size = sorted(range(len(accepted)), key=lambda a: -accepted[a].size)  # stable
    for label, a in enumerate(by_size):
        labels[accepted[a]] = label
    return labels


def mine_hard_negatives(
    queries: np.ndarray,
    keys: np.ndarray,
    positives: np.ndarray,
    /,
    *,
    k: int,
    rank_range: tuple[int, int] | None = None,
    max_similarity: float | None = None,
    margin: float | None = None,
    relative_margin: float | None = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's first ``k`` non-positive keys, by descending similarity, that pass."""
    similarity = cosine_similarity_matrix(queries, keys)
    n, m = similarity.shape
    low, high = rank_range or (0, math.inf)
    indices, values = np.full((n, k), -1), np.full((n, k), np.nan)
    for i in range(n):
        own = [int(j) for j in np.reshape(positives[i], -1) if j >= 0]
        others = [j for j in range(m) if j not in own]
        ranked = sorted(others, key=lambda j: (np.isnan(similarity[i, j]), -similarity[i, j], j))
        cap = math.inf if max_similarity is None else max_similarity
        if own and (margin is not None or relative_margin is not None):
            least = min(similarity[i, j] for j in own)
            if any(np.isnan(similarity[i, j]) for j in own):
                least = math.nan
            if margin is not None:
                cap = min(cap, least - margin) if not math.isnan(least) else math.nan
            if relative_margin is not None and not math.isnan(cap):
                cap = min(cap, least - abs(least) * relative_margin)
        kept = [
            j
            for rank, j in enumerate(ranked)
            if low <= rank < high and similarity[i, j] <= cap  # False for NaN
        ][:k]
        indices[i, : len(kept)] = kept
        values[i, : len(kept)] = similarity[i, kept]
    return indices, values
