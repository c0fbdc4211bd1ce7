"""Benchmarks: cosinekit against the one-pass limit and against its peers.

Run ``python benchmarks/run.py`` (or ``nox -s bench``); ``--quick`` runs every
case at small sizes as a smoke test. Every case runs in this one process, so
the printed RATIOS compare timings taken under the same conditions: absolute
times on a shared machine drift, ratios within one run do not.

For each case and backend the table gives

* ``x limit``: cosinekit's time divided by the time of the one-pass limit on
  the same backend (a single ``vecdot`` of the inputs for row-wise cases, the
  bare ``x @ y.T`` for pairwise cases, ``matmul`` plus the library's top-k for
  search). Lower is better; 1.0 is the floor.
* ``speedup vs PEER``: the peer's time divided by cosinekit's. Above 1 means
  cosinekit is faster.

Results go to ``benchmarks/results/benchmarks.json`` and ``benchmarks.png``
(``--output-dir`` changes the folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The thread count must be fixed before NumPy, PyTorch or XLA start their pools.
THREADS = 2
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(THREADS))
os.environ.setdefault("MKL_NUM_THREADS", str(THREADS))

import numpy as np  # noqa: E402 (after the thread settings above)

import cosinekit as ck  # noqa: E402

Timed = Callable[[], Any]


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


@dataclass
class Backend:
    """An array library on one device: how to make arrays, wait for them, compile."""

    name: str
    xp: Any
    array: Callable[[np.ndarray], Any]
    sync: Callable[[Any], Any]
    compile: Callable[[Callable[..., Any]], Callable[..., Any]] = lambda f: f


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


def best_time(fn: Timed, sync: Callable[[Any], Any], repeat: int, budget: float) -> float:
    """Minimum wall time of ``fn`` over up to ``repeat`` runs after one warm-up.

    The warm-up compiles (JAX, torch) and faults the pages in. Runs stop early
    once ``budget`` seconds are spent, so that slow peers take one or two
    runs and the whole benchmark stays within minutes.
    """
    started = time.perf_counter()
    sync(fn())
    best = float("inf")
    for i in range(repeat):
        t0 = time.perf_counter()
        sync(fn())
        best = min(best, time.perf_counter() - t0)
        if i >= 1 and time.perf_counter() - started > budget:
            break
    return best


# --- backends ---------------------------------------------------------------


def _numpy_backend() -> Backend:
    import array_api_compat.numpy as xp

    return Backend("numpy", xp, lambda a: a, lambda r: r)


def _torch_backends() -> list[Backend]:
    try:
        import array_api_compat.torch as xp
        import torch
    except ImportError:
        return []
    torch.set_num_threads(THREADS)
    backends = [Backend("torch", xp, torch.from_numpy, lambda r: r)]
    if torch.cuda.is_available():

        def sync_cuda(result: Any) -> Any:
            torch.cuda.synchronize()
            return result

        backends.append(
            Backend("torch-cuda", xp, lambda a: torch.from_numpy(a).to("cuda"), sync_cuda)
        )
    return backends


def _jax_backends() -> list[Backend]:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return []
    jax.config.update("jax_enable_x64", True)

    def sync(result: Any) -> Any:
        return jax.block_until_ready(result)

    backends = [
        Backend(
            "jax-jit",
            jnp,
            lambda a: jax.device_put(a, jax.devices("cpu")[0]),
            sync,
            jax.jit,
        )
    ]
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        return backends
    backends.append(Backend("jax-jit-gpu", jnp, lambda a: jax.device_put(a, gpu), sync, jax.jit))
    return backends


def _cupy_backends() -> list[Backend]:
    try:
        import cupy
    except ImportError:
        return []
    try:
        cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        return []
    import array_api_compat.cupy as xp

    def sync(result: Any) -> Any:
        cupy.cuda.Device().synchronize()
        return result

    return [Backend("cupy", xp, cupy.asarray, sync)]


def available_backends() -> list[Backend]:
    """NumPy, PyTorch, JAX (jit) and CuPy, on every device present."""
    return [_numpy_backend(), *_torch_backends(), *_jax_backends(), *_cupy_backends()]


def _on_cpu(backend: Backend) -> bool:
    return backend.name in ("numpy", "torch", "jax-jit")


# --- peers ------------------------------------------------------------------


def rowwise_peers(backend: Backend) -> dict[str, Callable[[Any, Any], Any]]:
    """Row-wise cosine similarity of the other libraries, on ``backend``'s arrays."""
    if backend.name == "numpy":
        from sklearn.metrics.pairwise import paired_cosine_distances

        return {"sklearn paired_cosine_distances": paired_cosine_distances}
    if backend.name.startswith("torch"):
        import torch

        return {"torch F.cosine_similarity": torch.nn.functional.cosine_similarity}
    if backend.name.startswith("jax"):
        try:
            import optax
        except ImportError:
            return {}
        return {"optax.cosine_similarity": backend.compile(optax.cosine_similarity)}
    return {}


def pairwise_peers(backend: Backend) -> dict[str, Callable[[Any, Any], Any]]:
    """Pairwise cosine similarity of the other libraries."""
    if backend.name == "numpy":
        from scipy.spatial.distance import cdist
        from sklearn.metrics.pairwise import cosine_similarity

        return {
            "sklearn cosine_similarity": cosine_similarity,
            "scipy cdist cosine": lambda x, y: cdist(x, y, metric="cosine"),
        }
    if backend.name.startswith("torch"):
        try:
            from torchmetrics.functional import pairwise_cosine_similarity
        except ImportError:
            return {}
        return {"torchmetrics pairwise_cosine_similarity": pairwise_cosine_similarity}
    return {}


# --- limits -----------------------------------------------------------------


def rowwise_limit(backend: Backend) -> Callable[[Any, Any], Any]:
    """The fastest single pass over both inputs the backend offers: one row dot."""
    xp = backend.xp
    if backend.name.startswith("jax"):
        return backend.compile(lambda a, b: xp.einsum("ij,ij->i", a, b))
    # array-api-compat's vecdot: NumPy's own, and a batched matmul on PyTorch,
    # which is the fastest row dot there (faster than einsum or linalg.vecdot).
    return lambda a, b: xp.vecdot(a, b, axis=-1)


def topk_brute_force(backend: Backend, k: int) -> Callable[[Any, Any], Any]:
    """Unnormalized top-k by one matmul and the library's selection."""
    xp = backend.xp
    if backend.name == "numpy":

        def numpy_topk(q: Any, keys: Any) -> Any:
            scores = q @ keys.T
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(scores, part, axis=1)
            order = np.argsort(-top, axis=1, kind="stable")
            return np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)

        return numpy_topk
    if backend.name.startswith("torch"):
        import torch

        return lambda q, keys: torch.topk(q @ keys.T, k, dim=1)
    if backend.name.startswith("jax"):
        import jax

        return backend.compile(lambda q, keys: jax.lax.top_k(q @ keys.T, k))
    return lambda q, keys: xp.argsort(-(q @ keys.T), axis=1)[:, :k]


# --- cases ------------------------------------------------------------------


@dataclass
class Sizes:
    rows: int
    features: int
    small_rows: int
    small_features: int
    f64_rows: int
    pairwise: int
    pairwise_features: int
    queries: int
    keys: int
    topk_features: int
    k: int
    repeat: int
    budget: float


FULL = Sizes(200_000, 256, 1000, 64, 100_000, 4096, 256, 1000, 50_000, 128, 10, 9, 3.0)
QUICK = Sizes(20_000, 64, 100, 8, 10_000, 256, 32, 64, 2000, 16, 5, 3, 0.5)


@dataclass
class Case:
    """One measurement plan: inputs, cosinekit's call, the limit and the peers."""

    case: str
    backend: Backend
    shape: str
    dtype: str
    inputs: Callable[[], tuple[Any, ...]]
    ours: Callable[..., Any]
    limit: Callable[..., Any]
    peers: dict[str, Callable[..., Any]]


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype)


def rowwise_cases(backend: Backend, sizes: Sizes) -> list[Case]:
    rng = np.random.default_rng(0)
    ours = backend.compile(ck.cosine_similarity)
    limit = rowwise_limit(backend)
    peers = rowwise_peers(backend)
    plans = [
        ("row-wise similarity", sizes.rows, sizes.features, np.float32),
        ("row-wise similarity (small)", sizes.small_rows, sizes.small_features, np.float32),
        ("row-wise similarity (float64)", sizes.f64_rows, sizes.features, np.float64),
    ]
    cases = []
    for name, n, d, dtype in plans:

        def inputs(n: int = n, d: int = d, dtype: Any = dtype) -> tuple[Any, ...]:
            return (
                backend.array(_random(rng, (n, d), dtype)),
                backend.array(_random(rng, (n, d), dtype)),
            )

        shape = f"{n}x{d}"
        cases.append(Case(name, backend, shape, np.dtype(dtype).name, inputs, ours, limit, peers))
    return cases


def loss_cases(backend: Backend, sizes: Sizes) -> list[Case]:
    """TensorFlow's cosine-distance loss, forward and backward, against the peers."""
    rng = np.random.default_rng(1)
    shape = (sizes.rows, sizes.features)

    def inputs() -> tuple[Any, ...]:
        return (
            backend.array(_random(rng, shape, np.float32)),
            backend.array(_random(rng, shape, np.float32)),
        )

    name = "loss forward+backward"
    dims = f"{shape[0]}x{shape[1]}"
    if backend.name.startswith("torch"):
        import torch

        def torch_grad(loss: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
            def step(labels: Any, predictions: Any) -> Any:
                predictions = predictions.detach().requires_grad_(True)
                loss(labels, predictions).backward()
                return predictions.grad

            return step

        xp = backend.xp
        return [
            Case(
                name,
                backend,
                dims,
                "float32",
                inputs,
                torch_grad(ck.cosine_distance_loss),
                torch_grad(lambda lab, pred: xp.sum(xp.vecdot(lab, pred))),
                {
                    "torch F.cosine_similarity": torch_grad(
                        lambda lab, pred: torch.mean(
                            1 - torch.nn.functional.cosine_similarity(lab, pred)
                        )
                    )
                },
            )
        ]
    if backend.name.startswith("jax"):
        import jax
        import jax.numpy as jnp

        def jax_grad(loss: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
            return backend.compile(jax.grad(loss, argnums=1))

        return [
            Case(
                name,
                backend,
                dims,
                "float32",
                inputs,
                jax_grad(ck.cosine_distance_loss),
                jax_grad(lambda lab, pred: jnp.sum(jnp.einsum("ij,ij->i", lab, pred))),
                {
                    name: jax_grad(lambda lab, pred, f=peer: jnp.mean(1 - f(lab, pred)))
                    for name, peer in rowwise_peers(backend).items()
                },
            )
        ]
    return []


def pairwise_cases(backend: Backend, sizes: Sizes) -> list[Case]:
    """Pairwise similarity against a bare matmul, where cosinekit has it."""
    if not hasattr(ck, "pairwise_cosine_similarity"):
        return []
    rng = np.random.default_rng(2)
    n, d = sizes.pairwise, sizes.pairwise_features

    def inputs() -> tuple[Any, ...]:
        return (
            backend.array(_random(rng, (n, d), np.float32)),
            backend.array(_random(rng, (n, d), np.float32)),
        )

    return [
        Case(
            "pairwise similarity",
            backend,
            f"{n}x{n}x{d}",
            "float32",
            inputs,
            backend.compile(ck.pairwise_cosine_similarity),
            backend.compile(lambda x, y: x @ y.T),
            pairwise_peers(backend),
        )
    ]


def topk_cases(backend: Backend, sizes: Sizes) -> list[Case]:
    """Top-k search against brute force (matmul and selection), where cosinekit has it."""
    if not hasattr(ck, "cosine_topk"):
        return []
    rng = np.random.default_rng(3)
    n, m, d, k = sizes.queries, sizes.keys, sizes.topk_features, sizes.k

    def inputs() -> tuple[Any, ...]:
        return (
            backend.array(_random(rng, (n, d), np.float32)),
            backend.array(_random(rng, (m, d), np.float32)),
        )

    return [
        Case(
            f"top-{k} search",
            backend,
            f"{n}x{m}x{d}",
            "float32",
            inputs,
            backend.compile(lambda q, keys: ck.cosine_topk(q, keys, k)),
            topk_brute_force(backend, k),
            {},
        )
    ]


CASE_BUILDERS: dict[str, Callable[[Backend, Sizes], list[Case]]] = {
    "rowwise": rowwise_cases,
    "loss": loss_cases,
    "pairwise": pairwise_cases,
    "topk": topk_cases,
}


def all_cases(backends: list[Backend], sizes: Sizes, kinds: list[str]) -> list[Case]:
    cases: list[Case] = []
    for kind in kinds:
        for backend in backends:
            cases.extend(CASE_BUILDERS[kind](backend, sizes))
    return cases


def measure(cases: list[Case], sizes: Sizes) -> list[Result]:
    progress = Progress(sum(2 + len(c.peers) for c in cases))
    results = []
    for case in cases:
        args = case.inputs()
        label = f"{case.case} {case.shape} {case.dtype} on {case.backend.name}"
        timings = {}
        for what, fn in (("limit", case.limit), ("cosinekit", case.ours), *case.peers.items()):
            progress.step(f"{label}: {what}")
            timings[what] = best_time(
                lambda fn=fn, args=args: fn(*args), case.backend.sync, sizes.repeat, sizes.budget
            )
        limit, ours = timings.pop("limit"), timings.pop("cosinekit")
        results.append(
            Result(case.case, case.backend.name, case.shape, case.dtype, ours, limit, timings)
        )
    return results


# --- output -----------------------------------------------------------------


def table(results: list[Result]) -> str:
    """A Markdown table of the ratios (and cosinekit's time, for scale)."""
    lines = [
        "| case | backend | shape | dtype | cosinekit (ms) | x limit | speedup vs peers |",
        "| --- | --- | --- | --- | ---: | ---: | --- |",
    ]
    for r in results:
        peers = "; ".join(f"{name} {t / r.ours:.2f}x" for name, t in r.peers.items()) or "-"
        lines.append(
            f"| {r.case} | {r.backend} | {r.shape} | {r.dtype} | {r.ours * 1e3:.2f} | "
            f"{r.ours / r.limit:.2f} | {peers} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """A performance target of the project, on one measured ratio."""

    description: str
    case: str
    backend: str
    ratio: str  # a key of Result.ratios()
    bound: float
    at_most: bool  # True: ratio <= bound; False: ratio >= bound


TARGETS = [
    Target(
        "row-wise within 2.5x of one vecdot (NumPy)",
        "row-wise similarity",
        "numpy",
        "x limit",
        2.5,
        at_most=True,
    ),
    Target(
        "row-wise within 3x of one vecdot (PyTorch)",
        "row-wise similarity",
        "torch",
        "x limit",
        3.0,
        at_most=True,
    ),
    Target(
        "row-wise within 2.5x of one vecdot (JAX jit)",
        "row-wise similarity",
        "jax-jit",
        "x limit",
        2.5,
        at_most=True,
    ),
    Target(
        "2x faster than sklearn paired_cosine_distances",
        "row-wise similarity",
        "numpy",
        "speedup vs sklearn paired_cosine_distances",
        2.0,
        at_most=False,
    ),
    Target(
        "2x faster than torch F.cosine_similarity",
        "row-wise similarity",
        "torch",
        "speedup vs torch F.cosine_similarity",
        2.0,
        at_most=False,
    ),
    Target(
        "within 2x of optax under jit",
        "row-wise similarity",
        "jax-jit",
        "speedup vs optax.cosine_similarity",
        0.5,
        at_most=False,
    ),
    Target(
        "pairwise within 1.3x of the bare matmul (NumPy)",
        "pairwise similarity",
        "numpy",
        "x limit",
        1.3,
        at_most=True,
    ),
    Target(
        "pairwise within 1.3x of the bare matmul (PyTorch)",
        "pairwise similarity",
        "torch",
        "x limit",
        1.3,
        at_most=True,
    ),
    Target(
        "pairwise within 1.3x of the bare matmul (JAX jit)",
        "pairwise similarity",
        "jax-jit",
        "x limit",
        1.3,
        at_most=True,
    ),
    Target(
        "pairwise 10x faster than scipy cdist",
        "pairwise similarity",
        "numpy",
        "speedup vs scipy cdist cosine",
        10.0,
        at_most=False,
    ),
]


def target_report(results: list[Result]) -> tuple[str, bool]:
    """Each target that was measured, its ratio, and whether it is met."""
    lines = ["| target | measured | met |", "| --- | ---: | --- |"]
    all_met = True
    for target in TARGETS:
        found = [r for r in results if (r.case, r.backend) == (target.case, target.backend)]
        if not found or target.ratio not in found[0].ratios():
            continue
        value = found[0].ratios()[target.ratio]
        met = value <= target.bound if target.at_most else value >= target.bound
        all_met &= met
        lines.append(f"| {target.description} | {value:.2f} | {'yes' if met else 'NO'} |")
    return "\n".join(lines), all_met


def write_json(results: list[Result], path: Path, quick: bool) -> None:
    payload = {
        "settings": {
            "quick": quick,
            "threads": THREADS,
            "timing": "minimum over repeated runs after one warm-up",
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
        },
        "versions": _versions(),
        "results": [
            {
                "case": r.case,
                "backend": r.backend,
                "shape": r.shape,
                "dtype": r.dtype,
                "seconds": {"cosinekit": r.ours, "limit": r.limit, **r.peers},
                "ratios": r.ratios(),
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _versions() -> dict[str, str]:
    import importlib.metadata

    versions = {}
    for dist in ("cosinekit", "numpy", "torch", "jax", "optax", "scipy", "scikit-learn"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def plot(results: list[Result], path: Path) -> None:
    """Bars of each implementation's time relative to the limit, log scale."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.case}\n{r.backend} {r.shape} {r.dtype}" for r in results]
    fig, ax = plt.subplots(figsize=(10, 0.75 * len(results) + 1.5))
    rows = range(len(results))
    ax.barh([i - 0.2 for i in rows], [r.ours / r.limit for r in results], 0.4, label="cosinekit")
    peer_x, peer_y, peer_names = [], [], []
    for i, r in enumerate(results):
        for name, t in r.peers.items():
            peer_x.append(t / r.limit)
            peer_y.append(i + 0.2)
            peer_names.append(name)
    ax.barh(peer_y, peer_x, 0.4, color="0.7", label="peers")
    for x, y, name in zip(peer_x, peer_y, peer_names, strict=True):
        ax.text(x * 1.05, y, name, va="center", fontsize=6)
    ax.axvline(1.0, color="k", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(list(rows), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time / one-pass limit on the same backend (log scale; 1 = the floor)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="folder for benchmarks.json and benchmarks.png",
    )
    parser.add_argument(
        "--backends",
        default="",
        help="comma-separated subset of numpy,torch,jax-jit,... (default: all present)",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASE_BUILDERS),
        help=f"comma-separated subset of {','.join(CASE_BUILDERS)} (default: all)",
    )
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.cases.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(CASE_BUILDERS))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASE_BUILDERS)}")
    sizes = QUICK if args.quick else FULL
    backends = available_backends()
    if args.backends:
        wanted = {name.strip() for name in args.backends.split(",")}
        backends = [b for b in backends if b.name in wanted]
    skipped = [b.name for b in backends if not _on_cpu(b)]
    print(f"backends: {', '.join(b.name for b in backends)}", file=sys.stderr)
    if not skipped:
        print("no GPU backend present (CuPy, torch CUDA, JAX GPU): skipped", file=sys.stderr)
    results = measure(all_cases(backends, sizes, kinds), sizes)
    print(table(results))
    report, all_met = target_report(results)
    print("\nTargets (CPU, float32):\n" + report)
    if not all_met:
        print("some targets are not met", file=sys.stderr)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(results, args.output_dir / "benchmarks.json", args.quick)
    plot(results, args.output_dir / "benchmarks.png")
    print(f"wrote {args.output_dir / 'benchmarks.json'} and benchmarks.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
