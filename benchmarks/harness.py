"""The data a benchmark is made of, and the timing loop.

A :class:`Topic` builds :class:`Case` objects for each backend; ``measure``
times each case's cosinekit call, its one-pass limit and its peers in this
one process and returns a :class:`Result` per case. A :class:`Target` is a
bound on one ratio of one result, checked by the target report.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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
    limit: Fn | Mapping[str, Fn]  # one function, or named candidates: the fastest counts
    peers: dict[str, Fn]
    topic: str = ""  # set by all_cases

    def limits(self) -> dict[str, Fn]:
        """The limit's candidates by timing label (``limit``, or ``limit: NAME``)."""
        if isinstance(self.limit, Mapping):
            return {f"limit: {name}": fn for name, fn in self.limit.items()}
        return {"limit": self.limit}


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
    limits: dict[str, float] = field(default_factory=dict)  # each candidate, where several
    topic: str = ""
    device: str = "cpu"

    def ratios(self) -> dict[str, float]:
        """``x limit`` (ours / limit) and ``speedup vs PEER`` (peer / ours), as in the JSON."""
        ratios = {"x limit": self.ours / self.limit}
        ratios.update({f"speedup vs {name}": t / self.ours for name, t in self.peers.items()})
        return ratios

    def ratio(self, key: str) -> float | None:
        """One ratio by name: a key of :meth:`ratios`, or ``x PEER`` (ours / peer time).

        ``None`` where the peer was not measured.
        """
        if key.startswith("x ") and key[2:] in self.peers:
            return self.ours / self.peers[key[2:]]
        return self.ratios().get(key)


@dataclass(frozen=True)
class Target:
    """A performance target of the project, on one measured ratio.

    ``ratio`` is a key of :meth:`Result.ratio`: ``"x limit"``, ``"x PEER"``
    (our time over the peer's) or ``"speedup vs PEER"``. ``bound`` is the
    bar to meet, ``ambition`` the value the project aims at beyond it.
    ``shape`` restricts the target to one input shape (the full run's; a
    quick run measures other shapes, so those targets do not show there).
    """

    description: str
    case: str
    backend: str
    ratio: str
    bound: float
    at_most: bool  # True: ratio <= bound; False: ratio >= bound
    ambition: float | None = None
    shape: str | None = None

    def matches(self, result: Result) -> bool:
        return (result.case, result.backend) == (self.case, self.backend) and (
            self.shape is None or result.shape == self.shape
        )

    def met(self, value: float) -> bool:
        return value <= self.bound if self.at_most else value >= self.bound


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
    """How each measurement is sampled: single calls, the minimum wins.

    At least ``repeat`` samples (two for a call slower than ``budget / 2``),
    stopping once ``budget`` seconds are spent. A fast call keeps sampling
    until ``fast_budget`` seconds are spent or ``max_samples`` are taken:
    microsecond calls on a shared machine need many samples for the minimum
    to find one that no other process disturbed.
    """

    repeat: int
    budget: float
    fast_budget: float
    max_samples: int


FULL_TIMING = Timing(repeat=9, budget=3.0, fast_budget=0.5, max_samples=2000)
QUICK_TIMING = Timing(repeat=3, budget=0.5, fast_budget=0.05, max_samples=200)


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


def row_pair_cases(
    case: str,
    backend: Backend,
    rng: np.random.Generator,
    shapes: Sequence[tuple[int, int]],
    ours: Fn,
    limit: Fn | Mapping[str, Fn],
    peers: dict[str, Fn],
    dtype: Any = np.float32,
) -> list[Case]:
    """One case per ``(rows, features)`` shape, on two random inputs of that shape."""
    return [
        Case(
            case,
            backend,
            f"{n}x{d}",
            np.dtype(dtype).name,
            random_pair(backend, rng, (n, d), (n, d), dtype),
            ours,
            limit,
            peers,
        )
        for n, d in shapes
    ]


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
    """Minimum wall time of one call of ``fn`` over samples taken after one warm-up.

    The warm-up compiles (JAX, torch) and faults the pages in. How many
    samples follow is :class:`Timing`'s rule, so that slow peers take one or
    two runs, fast calls many, and the whole benchmark stays within minutes.
    The budget counts from the end of the warm-up: a function that compiles
    longer must not get fewer samples (it once got 9 where its peer got
    hundreds, which read as a 3x slower call).
    """
    sync(fn())
    started = time.perf_counter()
    best = float("inf")
    for sample in range(1, timing.max_samples + 1):
        t0 = time.perf_counter()
        sync(fn())
        best = min(best, time.perf_counter() - t0)
        spent = time.perf_counter() - started
        if (sample >= 2 and spent > timing.budget) or (
            sample >= timing.repeat and spent > timing.fast_budget
        ):
            break
    return best


def all_cases(topics: Sequence[Topic], backends: Sequence[Backend], quick: bool) -> list[Case]:
    """Every topic's cases on every backend it runs on, topic by topic."""
    cases: list[Case] = []
    for topic in topics:
        for backend in backends:
            if backend.mode in topic.modes:
                cases += [
                    dataclasses.replace(case, topic=topic.name)
                    for case in topic.cases(backend, quick)
                ]
    return cases


def measure(cases: Sequence[Case], timing: Timing) -> list[Result]:
    """Time each case's limit (each candidate), cosinekit and peers, in that order."""
    progress = Progress(sum(len(c.limits()) + 1 + len(c.peers) for c in cases))
    results = []
    for case in cases:
        args = case.inputs()
        label = f"{case.case} {case.shape} {case.dtype} on {case.backend.name}"
        timings = {}
        limits = case.limits()
        for what, fn in (*limits.items(), ("cosinekit", case.ours), *case.peers.items()):
            progress.step(f"{label}: {what}")
            timings[what] = best_time(
                lambda fn=fn, args=args: fn(*args), case.backend.sync, timing
            )
        candidates = {what: timings.pop(what) for what in limits}
        results.append(
            Result(
                case.case,
                case.backend.name,
                case.shape,
                case.dtype,
                timings.pop("cosinekit"),
                min(candidates.values()),
                timings,
                candidates if len(candidates) > 1 else {},
                case.topic,
                case.backend.device,
            )
        )
    return results
