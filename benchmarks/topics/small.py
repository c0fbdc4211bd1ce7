"""Small batches: the forward call at 32 and 1000 rows, where per-call overhead rules.

The one-pass limit and the peers are those of the row-wise topic; the
question here is how much Python and dispatch cost per call, so the timing
repeats each call until a sample lasts long enough to measure.
"""

from __future__ import annotations

import numpy as np

import cosinekit as ck
from benchmarks.backends import Backend
from benchmarks.harness import Case, Target, Topic, row_pair_cases
from benchmarks.peers import ROWWISE, resolve

CASE = "forward (small batch)"
FULL = ((32, 768), (1000, 64))
QUICK = ((32, 64), (100, 8))


def cases(backend: Backend, quick: bool) -> list[Case]:
    rng = np.random.default_rng(4)
    ours = backend.compile(ck.cosine_similarity)
    limit = backend.row_dot_limit()
    peers = resolve(ROWWISE, backend)
    shapes = QUICK if quick else FULL
    return row_pair_cases(CASE, backend, rng, shapes, ours, limit, peers)


TARGETS = tuple(
    Target(
        f"torch eager forward / F.cosine_similarity, {shape}",
        CASE,
        "torch",
        "x torch F.cosine_similarity",
        2.5,
        at_most=True,
        ambition=1.5,
        shape=shape,
    )
    for shape in ("32x768", "1000x64")
)

TOPIC = Topic("small", cases, TARGETS)
