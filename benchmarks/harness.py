"""The data a benchmark is made of, and the timing loop.

A :class:`Topic` builds :class:`Case` objects for each backend; ``measure``
times each case's cosinekit call, its one-pass limit and its peers in this
one process and returns a :class:`Result` per case. A :class:`Target` is a
bound on one ratio of one result, checked by the target report.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.backends import Backend

Fn = Callable[..., Any]


@dataclass
class Case:
    """One measurement plan: inputs, cosinekit's call, the limit and the peers."""

    case: str
    backend: Backend
    shape: str
    dtype: str
    inputs: Callable[[], tuple[Any, ...]]
    ours: Fn
    limit: Fn
    peers: dict[str, Fn]


@dataclass
class Result:
    """One case on one backend: cosinekit, the limit and the peers, in seconds."""

    case: str
    backend: str
    shape: str
    dtype: str
    ours: float
    limit: float
    peers: dict[str, float] = field(default_factory=dict)

    def ratios(self) -> dict[str, float]:
        ratios = {"x limit": self.ours / self.limit}
        ratios.update({f"speedup vs {name}": t / self.ours for name, t in self.peers.items()})
        return ratios


@dataclass(frozen=True)
class Target:
    """A performance target of the project, on one measured ratio."""

    description: str
    case: str
    backend: str
    ratio: str  # a key of Result.ratios()
    bound: float
    at_most: bool  # True: ratio <= bound; False: ratio >= bound


@dataclass(frozen=True)
class Topic:
    """A family of cases: its ``--cases`` name, its case builder and its targets.

    ``cases(backend, quick)`` returns the cases on one backend (``[]`` where
    the topic does not apply), at small sizes when ``quick``. It is called
    only for backends whose ``mode`` is in ``modes``.
    """

    name: str
    cases: Callable[[Backend, bool], list[Case]]
    targets: Sequence[Target] = ()
    modes: frozenset[str] = frozenset({"eager", "jit"})


@dataclass(frozen=True)
class Timing:
    """How many runs each measurement takes, and the time after which it stops early."""

    repeat: int
    budget: float


FULL_TIMING = Timing(repeat=9, budget=3.0)
QUICK_TIMING = Timing(repeat=3, budget=0.5)


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Standard normal values (drawn in float32, so every dtype sees the same data)."""
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype)


def random_pair(
    backend: Backend,
    rng: np.random.Generator,
    first: tuple[int, ...],
    second: tuple[int, ...],
    dtype: Any = np.float32,
) -> Callable[[], tuple[Any, ...]]:
    """An ``inputs`` callable: two random arrays of the given shapes on ``backend``."""

    def inputs() -> tuple[Any, ...]:
        return (
            backend.array(random_array(rng, first, dtype)),
            backend.array(random_array(rng, second, dtype)),
        )

    return inputs


class Progress:
    """One status line per measurement, with the elapsed time of the run."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.start = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        line = f"[{self.done:3d}/{self.total}] {elapsed:6.1f} s  {label}"
        print(line, file=sys.stderr, flush=True)


def best_time(fn: Callable[[], Any], sync: Callable[[Any], Any], timing: Timing) -> float:
    """Minimum wall time of ``fn`` over up to ``timing.repeat`` runs after one warm-up.

    The warm-up compiles (JAX, torch) and faults the pages in. Runs stop early
    once ``timing.budget`` seconds are spent, so that slow peers take one or
    two runs and the whole benchmark stays within minutes.
    """
    started = time.perf_counter()
    sync(fn())
    best = float("inf")
    for i in range(timing.repeat):
        t0 = time.perf_counter()
        sync(fn())
        best = min(best, time.perf_counter() - t0)
        if i >= 1 and time.perf_counter() - started > timing.budget:
            break
    return best


def all_cases(topics: Sequence[Topic], backends: Sequence[Backend], quick: bool) -> list[Case]:
    """Every topic's cases on every backend it runs on, topic by topic."""
    cases: list[Case] = []
    for topic in topics:
        for backend in backends:
            if backend.mode in topic.modes:
                cases.extend(topic.cases(backend, quick))
    return cases


def measure(cases: Sequence[Case], timing: Timing) -> list[Result]:
    """Time each case's limit, cosinekit and peers, in that order."""
    progress = Progress(sum(2 + len(c.peers) for c in cases))
    results = []
    for case in cases:
        args = case.inputs()
        label = f"{case.case} {case.shape} {case.dtype} on {case.backend.name}"
        timings = {}
        for what, fn in (("limit", case.limit), ("cosinekit", case.ours), *case.peers.items()):
            progress.step(f"{label}: {what}")
            timings[what] = best_time(
                lambda fn=fn, args=args: fn(*args), case.backend.sync, timing
            )
        limit, ours = timings.pop("limit"), timings.pop("cosinekit")
        results.append(
            Result(case.case, case.backend.name, case.shape, case.dtype, ours, limit, timings)
        )
    return results
