"""Benchmarks: cosinekit against the one-pass limit and against its peers.

Run ``python benchmarks/run.py`` (or ``nox -s bench``); ``--quick`` runs every
case at small sizes as a smoke test; ``--cases rowwise,loss`` runs some
topics only. Every case runs in this one process, so the printed RATIOS
compare timings taken under the same conditions: absolute times on a shared
machine drift, ratios within one run do not.

For each case and backend the table gives

* ``x limit``: cosinekit's time divided by the time of the one-pass limit on
  the same backend (a single ``vecdot`` of the inputs for row-wise cases, the
  bare ``x @ y.T`` for pairwise cases, ``matmul`` plus the library's top-k for
  search). Lower is better; 1.0 is the floor.
* ``speedup vs PEER``: the peer's time divided by cosinekit's. Above 1 means
  cosinekit is faster.

Results go to ``benchmarks/results/benchmarks.json`` and ``benchmarks.png``
(``--output-dir`` changes the folder). The modules of this folder and how to
add a topic are described in ``benchmarks/__init__.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if not __package__:
    # Run as ``python benchmarks/run.py``: make the ``benchmarks`` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import THREADS

# The thread count must be fixed before NumPy, PyTorch or XLA start their pools.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, str(THREADS))

from benchmarks import report  # noqa: E402 (after the thread settings above)
from benchmarks.backends import available_backends  # noqa: E402
from benchmarks.harness import FULL_TIMING, QUICK_TIMING, all_cases, measure  # noqa: E402
from benchmarks.topics import all_topics  # noqa: E402


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def main(argv: list[str] | None = None) -> int:
    topics = all_topics()
    topic_names = [t.name for t in topics]
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
        "--kinds",
        default=",".join(topic_names),
        help=f"comma-separated subset of the topics {','.join(topic_names)} (default: all)",
    )
    args = parser.parse_args(argv)
    wanted_topics = _names(args.cases)
    unknown = sorted(set(wanted_topics) - set(topic_names))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(topic_names)}")
    topics = [t for t in topics if t.name in wanted_topics]
    backends = available_backends()
    if args.backends:
        wanted = set(_names(args.backends))
        backends = [b for b in backends if b.name in wanted]
    print(f"backends: {', '.join(b.name for b in backends)}", file=sys.stderr)
    if all(b.device == "cpu" for b in backends):
        print("no GPU backend present (CuPy, torch CUDA, JAX GPU): skipped", file=sys.stderr)
    timing = QUICK_TIMING if args.quick else FULL_TIMING
    results = measure(all_cases(topics, backends, args.quick), timing)
    print(report.table(results))
    targets = [target for topic in topics for target in topic.targets]
    target_table, all_met = report.target_report(results, targets)
    print("\nTargets (CPU, float32):\n" + target_table)
    if not all_met:
        print("some targets are not met", file=sys.stderr)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report.write_json(results, args.output_dir / "benchmarks.json", args.quick)
    report.plot(results, args.output_dir / "benchmarks.png")
    print(f"wrote {args.output_dir / 'benchmarks.json'} and benchmarks.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
