"""``torch.compile``: the forward call and the training step, compiled, against compiled peers.

Runs on the ``mode="compile"`` backends (``torch-inductor``: eager PyTorch
wrapped in ``torch.compile(backend="inductor")``). The first call of each
function compiles it (tens of seconds for the first inductor compile of a
process); the timing's warm-up call absorbs that. A quick run compiles with
``aot_eager`` instead (``--torch-compiler``), which traces the same graphs
forward and backward without generating code, to stay fast.
"""

from __future__ import annotations

import numpy as np

import cosinekit as ck
from benchmarks.backends import Backend
from benchmarks.harness import Case, Target, Topic, row_pair_cases
from benchmarks.peers import MEAN_COSINE_DISTANCE, ROWWISE, resolve

FORWARD = "row-wise similarity"
TRAINING = "loss forward+backward"
FULL = (200_000, 256)
QUICK = (256, 16)  # below PyTorch's parallel grain: the quick run times tracing, not threads


def cases(backend: Backend, quick: bool) -> list[Case]:
    shape = QUICK if quick else FULL
    rng = np.random.default_rng(5)
    limit = backend.row_dot_limit()
    forward = row_pair_cases(
        FORWARD,
        backend,
        rng,
        [shape],
        backend.compile(ck.cosine_similarity),
        limit,
        resolve(ROWWISE, backend),
    )
    if backend.gradient is None:
        return forward
    training = row_pair_cases(
        TRAINING,
        backend,
        rng,
        [shape],
        backend.gradient(ck.cosine_distance_loss),
        limit,
        resolve(MEAN_COSINE_DISTANCE, backend, backend.gradient),
    )
    return forward + training


TARGETS = (
    Target(
        "torch.compile forward / compiled F.cosine_similarity",
        FORWARD,
        "torch-inductor",
        "x torch F.cosine_similarity",
        1.3,
        at_most=True,
        ambition=1.0,
        shape=f"{FULL[0]}x{FULL[1]}",
    ),
    Target(
        "torch.compile loss fwd+bwd / compiled peer",
        TRAINING,
        "torch-inductor",
        "x torch (1 - F.cosine_similarity).mean()",
        1.1,
        at_most=True,
        ambition=0.8,
        shape=f"{FULL[0]}x{FULL[1]}",
    ),
)

TOPIC = Topic("compiled", cases, TARGETS, modes=frozenset({"compile"}))
