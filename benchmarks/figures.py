"""The performance page's plots and tables, from the JSON of one benchmark run.

``python benchmarks/figures.py RESULTS.json`` writes one PNG per topic,
``performance-<topic>.png``, into ``--output-dir`` (default
``docs/_static``), and the Markdown the performance page includes into
``--tables-dir`` (default ``docs/_generated``): per topic,
``performance-<topic>.md``, each case's time over the one-pass limit and
over each peer, then the topic's targets (the ``Targets`` report of
``run.py``, from the JSON's ``targets``); ``performance-summary.md``, the
targets met per topic; ``performance-run.md``, when, how and under what load
the run was made.

Every ratio is cosinekit's time over the reference's time, so that one axis
serves the limit and the peers: below 1 cosinekit is faster, 1 is a tie.
Each result is a group of bars: its time over the topic's limit (what the
harness calls ``x limit``), then over each peer. A red tick marks a
target's bar on the bar it concerns.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What the limit is in each topic (the harness's ``x limit``): the plots and
# tables name it. A topic missing here is plotted against "the limit".
LIMITS = {
    "rowwise": "one row dot (vecdot)",
    "small": "one row dot (vecdot)",
    "training": "one forward row dot",
    "compiled": "one row dot (vecdot)",
    "pairwise": "the bare x @ y.T",
    "topk": "matmul plus the library's top-k",
    "search": "the blocked matmul alone",
    "contrastive": "the plain formula (or the bare matmul)",
    "training_memory": "the plain step (every activation held)",
    "mining": "the search it is built on",
}
FONT_SIZE = 10


@dataclass
class Row:
    """One result of the run: a case on a backend at one shape."""

    topic: str
    case: str
    backend: str
    shape: str
    dtype: str
    x_limit: float
    over_peers: dict[str, float]  # cosinekit's time over each peer's

    @property
    def label(self) -> str:
        dtype = "" if self.dtype == "float32" else f" {self.dtype}"
        return f"{self.case}\n{self.backend}, {self.shape}{dtype}"

    def key(self) -> tuple[str, str, str]:
        return self.case, self.backend, self.shape


def load(path: Path) -> tuple[dict[str, Any], list[Row]]:
    """The run's JSON and its results as rows, in the order the run measured them."""
    payload = json.loads(path.read_text())
    rows = []
    for result in payload["results"]:
        seconds = result["seconds"]
        ours = seconds["cosinekit"]
        peers = {
            name: ours / value
            for name, value in seconds.items()
            if name not in ("cosinekit", "limit") and not name.startswith("limit: ")
        }
        rows.append(
            Row(
                result["topic"],
                result["case"],
                result["backend"],
                result["shape"],
                result["dtype"],
                ours / seconds["limit"],
                peers,
            )
        )
    return payload, rows


def topics(rows: Sequence[Row]) -> list[str]:
    """The topics of the run, in its order."""
    return list(dict.fromkeys(row.topic for row in rows))


def of_topic(rows: Sequence[Row], topic: str) -> list[Row]:
    """A topic's rows grouped by case (the run measures library by library)."""
    mine = [row for row in rows if row.topic == topic]
    cases = list(dict.fromkeys(row.case for row in mine))
    return sorted(mine, key=lambda row: cases.index(row.case))


def target_marks(target: dict[str, Any]) -> tuple[str, str | None, float]:
    """Where a target's bar goes: ``("limit", None, x)`` or ``("peer", PEER, x)``.

    ``x`` is on the plots' axis, cosinekit's time over the reference's: a
    ``speedup vs PEER >= b`` target is the time ratio ``1 / b``.
    """
    ratio, bar = target["ratio"], target["bar"]
    if ratio == "x limit":
        return "limit", None, bar
    if ratio.startswith("speedup vs "):
        return "peer", ratio.removeprefix("speedup vs "), 1 / bar
    return "peer", ratio.removeprefix("x "), bar


def _value_text(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _bars(row: Row) -> list[tuple[str | None, float]]:
    """A row's bars, top to bottom: the limit (``None``), then each peer by name."""
    return [(None, row.x_limit), *row.over_peers.items()]


def plot_topic(
    topic: str, rows: Sequence[Row], targets: Sequence[dict[str, Any]], path: Path
) -> None:
    """One group of bars per result: its time over the limit and over each peer (log scale)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    limit = LIMITS.get(topic, "the limit")
    peers = list(dict.fromkeys(name for row in rows for name in row.over_peers))
    # The limit in blue, the peers in the other tab10 colours but red (the targets' ticks).
    palette = [plt.get_cmap("tab10")(i) for i in (1, 2, 4, 5, 6, 8, 9)]
    colours = {None: "tab:blue"} | {name: palette[i % 7] for i, name in enumerate(peers)}
    # Each group is as tall as its bars, with a gap between groups.
    gap, y, centres, bars = 0.6, 0.0, [], []
    for row in rows:
        group = _bars(row)
        bars += [(row, name, value, y + i + 0.5) for i, (name, value) in enumerate(group)]
        centres.append(y + len(group) / 2)
        y += len(group) + gap
    with plt.rc_context({"font.size": FONT_SIZE}):
        fig, ax = plt.subplots(figsize=(8, 1.3 + 0.3 * y))
        marks = [
            (x, bar_y)
            for row, name, _, bar_y in bars
            for target in targets
            for kind, peer, x in [target_marks(target)]
            if row.key() == (target["case"], target["backend"], target["shape"])
            and (peer if kind == "peer" else None) == name
        ]
        labels = []
        for _, name, value, bar_y in bars:
            ax.barh(bar_y, value, height=0.75, color=colours[name])
            text = f"{_value_text(value)}  {'limit' if name is None else name}"
            labels.append((_label(ax, value, bar_y, text, marks), len(text)))
        _draw_marks(ax, marks)
        _axis(ax, [value for _, _, value, _ in bars] + [x for x, _ in marks], labels)
        ax.axvspan(ax.get_xlim()[0], 1.0, color="tab:green", alpha=0.07, zorder=0)
        ax.set_yticks(centres, [row.label for row in rows])
        ax.set_ylim(y - gap / 2, -gap / 2)
        ax.set_xlabel("cosinekit's time / the reference's time (log scale; below 1: faster)")
        ax.set_title(f"{topic}\nlimit: {limit}", fontsize=FONT_SIZE)
        if marks:
            fig.text(
                0.99,
                0.005,
                "red tick: a target's bar",
                ha="right",
                va="bottom",
                fontsize=FONT_SIZE - 1,
                color="tab:red",
            )
        fig.tight_layout(rect=(0, 0.015, 1, 1))
        fig.savefig(path, dpi=100)
        plt.close(fig)


def _label(
    ax: Any, value: float, y: float, text: str, marks: Sequence[tuple[float, float]]
) -> float:
    """The value beside its bar, right of the target's tick where the tick is in the way."""
    x = max([value, *(mark for mark, mark_y in marks if mark_y == y and mark > value)])
    ax.text(x * 1.08, y, text, va="center", fontsize=FONT_SIZE - 1)
    return x


def _draw_marks(ax: Any, marks: list[tuple[float, float]]) -> None:
    if marks:
        xs, ys = zip(*marks, strict=True)
        ax.scatter(xs, ys, marker="|", s=300, linewidths=2.5, color="tab:red", zorder=3)


def _axis(ax: Any, values: Sequence[float], labels: Sequence[tuple[float, int]]) -> None:
    """A log axis that shows 1 and every value, with room on the right for each label.

    ``labels`` are ``(x, characters)``: where each label starts and its length.
    """
    from matplotlib import ticker

    finite = [v for v in values if math.isfinite(v) and v > 0] or [1.0]
    low, high = min([*finite, 1.0]) / 1.5, max([*finite, 1.0]) * 1.5
    ax.set_xscale("log")
    # A label takes this share of the axis (about 5.3 inches wide; a character of
    # the labels' font is about 0.075 inch); the axis ends where every one fits.
    right = math.log10(high)
    for x, characters in labels:
        share = min((0.075 * characters + 0.15) / 5.3, 0.8)
        right = max(right, math.log10(low) + math.log10(x * 1.08 / low) / (1 - share))
    ax.set_xlim(low, 10**right)
    # 1-2-5 ticks over a short range, powers of ten over a long one: readable either way.
    subs = (1.0, 2.0, 5.0) if 10**right / low < 100 else (1.0,)
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.axvline(1.0, color="k", linewidth=0.9)
    ax.grid(axis="x", which="major", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)


def _peer_cell(row: Row) -> str:
    return "; ".join(f"{value:.2f} ({name})" for name, value in row.over_peers.items()) or "-"


def _shape_cell(row: Row) -> str:
    return row.shape if row.dtype == "float32" else f"{row.shape} {row.dtype}"


def topic_table(rows: Sequence[Row]) -> str:
    """A Markdown table of one topic: time over the limit and over each peer."""
    lines = [
        "| case | backend | shape | time / limit | time / peer's time (peer) |",
        "| --- | --- | --- | ---: | --- |",
    ]
    lines += [
        f"| {row.case} | {row.backend} | {_shape_cell(row)} | {row.x_limit:.2f} | "
        f"{_peer_cell(row)} |"
        for row in rows
    ]
    return "\n".join(lines)


def target_table(targets: Sequence[dict[str, Any]]) -> str:
    """The targets as the harness reports them: measured, bar, ambition, met."""
    lines = ["| target | measured | bar | ambition | met |", "| --- | ---: | ---: | ---: | --- |"]
    for target in targets:
        sign = "<=" if target["at_most"] else ">="
        ambition = "-" if target["ambition"] is None else f"{sign} {target['ambition']:g}"
        met = "yes" if target["met"] else "**no**"
        if target["met"] and target["ambition_met"]:
            met = "yes (ambition too)"
        lines.append(
            f"| {target['description']} | {target['measured']:.2f} | {sign} {target['bar']:g} "
            f"| {ambition} | {met} |"
        )
    return "\n".join(lines)


def summary_table(payload: dict[str, Any], rows: Sequence[Row]) -> str:
    """Per topic: how many of its targets are met, and which are not."""
    lines = ["| topic | targets met | not met |", "| --- | ---: | --- |"]  # "-": no target
    for topic in topics(rows):
        targets = [t for t in payload.get("targets", []) if t["topic"] == topic]
        if not targets:
            lines.append(f"| {_link(topic)} | - | |")
            continue
        missed = "; ".join(t["description"] for t in targets if not t["met"]) or "-"
        met = sum(t["met"] for t in targets)
        lines.append(f"| {_link(topic)} | {met} of {len(targets)} | {missed} |")
    return "\n".join(lines)


def _link(topic: str) -> str:
    """A reference to the topic's section: the page defines ``(performance-TOPIC)=``."""
    return f"{{ref}}`{topic} <performance-{topic}>`"


def run_paragraph(payload: dict[str, Any]) -> str:
    """When and how the run was made, the machine, its load and the versions, as prose."""
    run, settings, machine = payload.get("run", {}), payload["settings"], payload["machine"]
    arguments = " ".join(["python benchmarks/run.py", *run.get("arguments", [])])
    started = run.get("started", "")[:10] or "an unrecorded date"
    commit = f" at commit `{run['commit']}`" if run.get("commit") else ""
    loads = [run[key][0] for key in ("load_average_at_start", "load_average_at_end") if key in run]
    load = (
        f" The machine was shared: its one-minute load average was {loads[0]:.1f} when the "
        f"run started and {loads[-1]:.1f} when it ended, on {machine['cpu_count']} CPUs."
        if loads
        else ""
    )
    rerun = run.get("rerun")
    if rerun:
        again = " ".join(["python benchmarks/run.py", *rerun.get("arguments", [])])
        load += (
            f" Rows run again later, and kept in place of the first run's: {rerun['what']} "
            f"(`{again}`, commit `{rerun['commit']}`)."
        )
    versions = ", ".join(f"{name} {version}" for name, version in payload["versions"].items())
    threads = "1 thread" if settings["threads"] == 1 else f"{settings['threads']} threads"
    return (
        f"`{arguments}`, {started}{commit}, {threads} per library, "
        f"Python {machine['python']} on {machine['platform']}.{load} Timing: "
        f"{settings['timing']}. `torch.compile` backend: {settings['torch_compile_backend']}. "
        f"Versions: {versions}."
    )


def topic_markdown(payload: dict[str, Any], rows: Sequence[Row], topic: str) -> str:
    """One topic's table, then its targets."""
    parts = [topic_table(of_topic(rows, topic))]
    targets = [t for t in payload.get("targets", []) if t["topic"] == topic]
    if targets:
        parts += ["", "**Targets**", "", target_table(targets)]
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    docs = Path(__file__).resolve().parent.parent / "docs"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the JSON that benchmarks/run.py wrote")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=docs / "_static",
        help="folder for the performance-<topic>.png plots (default: docs/_static)",
    )
    parser.add_argument(
        "--tables-dir",
        type=Path,
        default=docs / "_generated",
        help="folder for the Markdown tables the performance page includes "
        "(default: docs/_generated)",
    )
    args = parser.parse_args(argv)
    payload, rows = load(args.results)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    args.tables_dir.mkdir(parents=True, exist_ok=True)
    for topic in topics(rows):
        targets = [t for t in payload.get("targets", []) if t["topic"] == topic]
        plot_topic(
            topic, of_topic(rows, topic), targets, args.output_dir / f"performance-{topic}.png"
        )
        table = topic_markdown(payload, rows, topic)
        (args.tables_dir / f"performance-{topic}.md").write_text(table)
    (args.tables_dir / "performance-summary.md").write_text(summary_table(payload, rows) + "\n")
    (args.tables_dir / "performance-run.md").write_text(run_paragraph(payload) + "\n")
    print(f"wrote the plots to {args.output_dir} and the tables to {args.tables_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
