"""Benchmarks: cosinekit against the one-pass limit and against its peers.

Run ``python benchmarks/run.py`` (or ``nox -s bench``); ``--quick`` runs every
case at small sizes as a smoke test; ``--cases rowwise,training`` runs some
topics only. Each library runs in a process of its own (importing JAX slows
PyTorch's small calls down; ``--one-process`` runs all in one), every case of
a library in that one process, so the printed RATIOS compare timings taken
under the same conditions: absolute times on a shared machine drift, ratios
within one run do not.

For each case and backend the table gives

* ``x limit``: cosinekit's time divided by the time of the one-pass limit on
  the same backend (the fastest of the library's row dots for row-wise cases,
  the forward one for the training step too; the bare ``x @ y.T`` for
  pairwise cases; ``matmul`` plus the library's top-k for search). Lower is
  better; 1.0 is the floor of a forward call.
* ``speedup vs PEER``: the peer's time divided by cosinekit's. Above 1 means
  cosinekit is faster.

The target report ends the output: for each target measured, the ratio, the
bar, the ambition and whether the bar is met.

Results go to ``benchmarks/results/benchmarks.json`` and ``benchmarks.png``
(``--output-dir`` changes the folder). The modules of this folder and how to
add a topic are described in ``benchmarks/__init__.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if not __package__:
    # Run as ``python benchmarks/run.py``: make the ``benchmarks`` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The thread count must be fixed before NumPy, PyTorch or XLA start their pools,
# so --threads is read before anything else is imported.
_threads = argparse.ArgumentParser(add_help=False)
_threads.add_argument("--threads", type=int)
_THREADS_ASKED = _threads.parse_known_args()[0].threads
if _THREADS_ASKED is not None:
    os.environ["COSINEKIT_BENCH_THREADS"] = str(_THREADS_ASKED)

from benchmarks import THREADS  # noqa: E402 (after the thread setting above)

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    if _THREADS_ASKED is None:
        os.environ.setdefault(_variable, str(THREADS))
    else:
        os.environ[_variable] = str(THREADS)

from benchmarks import report  # noqa: E402 (after the thread settings above)
from benchmarks.backends import LIBRARIES, available_backends  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    FULL_TIMING,
    QUICK_TIMING,
    Result,
    Topic,
    all_cases,
    measure,
)
from benchmarks.topics import all_topics  # noqa: E402


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _parser(topic_names: list[str]) -> argparse.ArgumentParser:
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
        help="comma-separated subset of numpy,torch,torch-inductor,jax-jit,... "
        "(default: all present)",
    )
    parser.add_argument(
        "--cases",
        "--kinds",
        default=",".join(topic_names),
        help=f"comma-separated subset of the topics {','.join(topic_names)} (default: all)",
    )
    parser.add_argument(
        "--torch-compiler",
        default=None,
        help="torch.compile backend of the compiled cases (default: inductor; "
        "aot_eager with --quick, which traces without generating code)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=THREADS,
        help=f"threads for every library (default: {THREADS}; on a loaded machine "
        "one thread gives steadier small-batch ratios)",
    )
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="measure every library in this process instead of one process per library",
    )
    # Internal: a child process measures one library and writes its results here.
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    return parser


def _measure_here(
    topics: list[Topic], libraries: list[str], args: argparse.Namespace, torch_compiler: str
) -> list[Result]:
    backends = available_backends(libraries, torch_compiler)
    if args.backends:
        wanted = set(_names(args.backends))
        backends = [b for b in backends if b.name in wanted]
    if not backends:
        return []
    print(f"backends: {', '.join(b.name for b in backends)}", file=sys.stderr)
    timing = QUICK_TIMING if args.quick else FULL_TIMING
    return measure(all_cases(topics, backends, args.quick), timing)


def _measure_in_children(argv: list[str]) -> list[Result]:
    """One child process per library, one after the other.

    A library's threads and imports slow the others down (importing JAX
    makes PyTorch's small batched matmuls several times slower on two
    cores), so each library is measured in a process that imports only it.
    Every ratio still compares timings taken in one process.
    """
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for library in LIBRARIES:
            output = Path(folder) / f"{library}.json"
            child = [sys.executable, __file__, *argv, "--library", library]
            subprocess.run([*child, "--child-output", str(output)], check=True)
            results += [Result(**row) for row in json.loads(output.read_text())]
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    topics = all_topics()
    topic_names = [t.name for t in topics]
    parser = _parser(topic_names)
    args = parser.parse_args(argv)
    torch_compiler = args.torch_compiler or ("aot_eager" if args.quick else "inductor")
    wanted_topics = _names(args.cases)
    unknown = sorted(set(wanted_topics) - set(topic_names))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(topic_names)}")
    topics = [t for t in topics if t.name in wanted_topics]

    if args.library:
        results = _measure_here(topics, [args.library], args, torch_compiler)
        args.child_output.write_text(json.dumps([dataclasses.asdict(r) for r in results]))
        return 0
    run = report.run_details(argv)
    if args.one_process:
        results = _measure_here(topics, list(LIBRARIES), args, torch_compiler)
    else:
        results = _measure_in_children(argv)
        # Topic by topic, as in one process; within a topic, library by library.
        order = {name: i for i, name in enumerate(topic_names)}
        results.sort(key=lambda r: order[r.topic])
    if all(r.device == "cpu" for r in results):
        print("no GPU backend present (CuPy, torch CUDA, JAX GPU): skipped", file=sys.stderr)

    print(report.table(results))
    targets = [target for topic in topics for target in topic.targets]
    target_table, all_met = report.target_report(results, targets)
    print("\nTargets (CPU, float32):\n" + target_table)
    if not all_met:
        print("some targets are not met", file=sys.stderr)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    timing = QUICK_TIMING if args.quick else FULL_TIMING
    report.write_json(
        results,
        args.output_dir / "benchmarks.json",
        args.quick,
        timing,
        torch_compiler,
        targets,
        run,
    )
    report.plot(results, args.output_dir / "benchmarks.png")
    print(f"wrote {args.output_dir / 'benchmarks.json'} and benchmarks.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
