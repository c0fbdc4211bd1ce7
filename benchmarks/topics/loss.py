"""TensorFlow's cosine-distance loss, forward and backward, against the peers."""

from __future__ import annotations

from typing import Any

import numpy as np

import cosinekit as ck
from benchmarks.backends import Backend
from benchmarks.harness import Case, Topic, random_pair
from benchmarks.peers import MEAN_COSINE_DISTANCE, resolve

FULL = (200_000, 256)
QUICK = (20_000, 64)


def cases(backend: Backend, quick: bool) -> list[Case]:
    if backend.gradient is None:
        return []
    shape = QUICK if quick else FULL
    xp = backend.xp

    def limit(labels: Any, predictions: Any) -> Any:
        return xp.sum(backend.row_dot(labels, predictions))

    return [
        Case(
            "loss forward+backward",
            backend,
            f"{shape[0]}x{shape[1]}",
            "float32",
            random_pair(backend, np.random.default_rng(1), shape, shape),
            backend.gradient(ck.cosine_distance_loss),
            backend.gradient(limit),
            resolve(MEAN_COSINE_DISTANCE, backend, backend.gradient),
        )
    ]


TOPIC = Topic("loss", cases)
