"""What a run prints and writes: the ratio table, the target report, JSON and a plot."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import THREADS
from benchmarks.harness import Result, Target, Timing


def table(results: Sequence[Result]) -> str:
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


def target_report(results: Sequence[Result], targets: Sequence[Target]) -> tuple[str, bool]:
    """Each target that was measured: the ratio, the bar, the ambition, whether the bar is met."""
    lines = [
        "| target | measured | bar | ambition | met |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    rows = _target_rows(results, targets)
    for row in rows:
        sign = "<=" if row["at_most"] else ">="
        ambition = "-" if row["ambition"] is None else f"{sign} {row['ambition']:g}"
        lines.append(
            f"| {row['description']} | {row['measured']:.2f} | {sign} {row['bar']:g} | "
            f"{ambition} | {'yes' if row['met'] else 'NO'} |"
        )
    return "\n".join(lines), all(row["met"] for row in rows)


def _target_rows(results: Sequence[Result], targets: Sequence[Target]) -> list[dict[str, Any]]:
    """The target report as data: each measured target, its bounds and whether it is met."""
    rows = []
    for target in targets:
        found = [r for r in results if target.matches(r)]
        value = found[0].ratio(target.ratio) if found else None
        if value is None:
            continue
        rows.append(
            {
                "description": target.description,
                "case": target.case,
                "backend": target.backend,
                "shape": found[0].shape,
                "topic": found[0].topic,
                "ratio": target.ratio,
                "at_most": target.at_most,
                "bar": target.bound,
                "ambition": target.ambition,
                "measured": value,
                "met": target.met(value),
                "ambition_met": target.ambition is not None
                and (value <= target.ambition if target.at_most else value >= target.ambition),
            }
        )
    return rows


def run_details(argv: Sequence[str]) -> dict[str, Any]:
    """When, on what code and under what load a run started: called before measuring."""
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "arguments": list(argv),
        "load_average_at_start": list(os.getloadavg()),
    }


def _commit() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return completed.stdout.strip()


def write_json(
    results: Sequence[Result],
    path: Path,
    quick: bool,
    timing: Timing,
    torch_compiler: str,
    targets: Sequence[Target] = (),
    run: dict[str, Any] | None = None,
) -> None:
    """The run's results, targets, settings, machine and versions, as JSON.

    ``benchmarks/figures.py`` makes the docs' plots and tables from it.
    """
    run = {**(run or {}), "load_average_at_end": list(os.getloadavg())}
    payload = {
        "run": run,
        "settings": {
            "quick": quick,
            "threads": THREADS,
            "timing": (
                "minimum of single calls after one warm-up: at least "
                f"{timing.repeat} samples (2 for slow calls) within {timing.budget:g} s; "
                f"fast calls sample for {timing.fast_budget:g} s, at most "
                f"{timing.max_samples} samples"
            ),
            "torch_compile_backend": torch_compiler,
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
        },
        "versions": _versions(),
        "targets": _target_rows(results, targets),
        "results": [
            {
                "topic": r.topic,
                "case": r.case,
                "backend": r.backend,
                "shape": r.shape,
                "dtype": r.dtype,
                "device": r.device,
                "seconds": {"cosinekit": r.ours, "limit": r.limit, **r.limits, **r.peers},
                "ratios": r.ratios(),
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _versions() -> dict[str, str]:
    versions = {}
    for dist in (
        "cosinekit",
        "numpy",
        "torch",
        "jax",
        "optax",
        "scipy",
        "scikit-learn",
        "torchmetrics",
    ):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def plot(results: Sequence[Result], path: Path) -> None:
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
