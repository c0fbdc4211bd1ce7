"""The performance page's plots and tables, from the JSON of one benchmark run.

``python benchmarks/figures.py RESULTS.json`` writes one PNG per topic,
``performance-<topic>.png``, into ``--output-dir`` (default
``docs/_static``), and prints the page's Markdown tables: per topic, each
case's time over the one-pass limit and over each peer, and the topic's
targets (the ``Targets`` report of ``run.py``, from the JSON's ``targets``).
``--markdown FILE`` writes the tables to a file instead.

Every ratio is cosinekit's time over the reference's time, so that one axis
serves both panels of a plot: below 1 cosinekit is faster, 1 is a tie. The
left panel is the time over the topic's limit (what the harness calls
``x limit``), the right one the time over each peer. A red tick marks a
target's bar on the row it concerns.
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


def plot_topic(
    topic: str, rows: Sequence[Row], targets: Sequence[dict[str, Any]], path: Path
) -> None:
    """Two panels, one row per result: time over the limit, and over each peer (log scale)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    peers = list(dict.fromkeys(name for row in rows for name in row.over_peers))
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(peers)}
    # Each row is as tall as its peer bars need, so that every bar can carry its label.
    heights = [max(1, len(row.over_peers)) for row in rows]
    centres = [sum(heights[:i]) + heights[i] / 2 + 0.3 * i for i in range(len(rows))]
    figure_height = 1.6 + 0.42 * (sum(heights) + 0.3 * len(rows))
    with plt.rc_context({"font.size": FONT_SIZE}):
        fig, axes = plt.subplots(
            1,
            2 if peers else 1,
            figsize=(11 if peers else 7.5, figure_height),
            sharey=True,
            squeeze=False,
        )
        left, right = axes[0][0], (axes[0][1] if peers else None)
        _limit_panel(left, topic, rows, centres, heights, targets)
        if right is not None:
            _peer_panel(right, rows, centres, heights, colours, targets)
        left.set_yticks(centres, [row.label for row in rows])
        left.invert_yaxis()
        fig.suptitle(f"{topic}: cosinekit's time over the reference's (log scale)", x=0.5)
        if targets:
            fig.text(
                0.99,
                0.005,
                "red tick: a target's bar (see the targets table)",
                ha="right",
                va="bottom",
                fontsize=FONT_SIZE - 1,
                color="tab:red",
            )
        fig.tight_layout(rect=(0, 0.02, 1, 1))
        fig.savefig(path, dpi=100)
        plt.close(fig)


def _limit_panel(
    ax: Any,
    topic: str,
    rows: Sequence[Row],
    centres: Sequence[float],
    heights: Sequence[int],
    targets: Sequence[dict[str, Any]],
) -> None:
    values = [row.x_limit for row in rows]
    ax.barh(centres, values, height=0.7, color="tab:blue")
    marks = []
    for target in targets:
        kind, _, x = target_marks(target)
        for row, y in zip(rows, centres, strict=True):
            if kind == "limit" and row.key() == (
                target["case"],
                target["backend"],
                target["shape"],
            ):
                marks.append((x, y))
    _draw_marks(ax, marks)
    for y, value in zip(centres, values, strict=True):
        _label(ax, value, y, _value_text(value), marks)
    _axis(ax, [*values, *(x for x, _ in marks)])
    ax.set_xlabel(f"time / {LIMITS.get(topic, 'the limit')}")
    ax.set_title("against the limit (1 = the floor)", fontsize=FONT_SIZE)


def _peer_panel(
    ax: Any,
    rows: Sequence[Row],
    centres: Sequence[float],
    heights: Sequence[int],
    colours: dict[str, Any],
    targets: Sequence[dict[str, Any]],
) -> None:
    values, marks, labels = [], [], []
    for row, y, height in zip(rows, centres, heights, strict=True):
        names = list(row.over_peers)
        if not names:
            ax.text(1.0, y, "  no peer", va="center", fontsize=FONT_SIZE - 1, color="0.4")
        for i, name in enumerate(names):
            bar_y = y - height / 2 + i + 0.5
            value = row.over_peers[name]
            values.append(value)
            ax.barh(bar_y, value, height=0.7, color=colours[name])
            labels.append((value, bar_y, f"{_value_text(value)}  {name}"))
            for target in targets:
                kind, peer, x = target_marks(target)
                key = (target["case"], target["backend"], target["shape"])
                if kind == "peer" and peer == name and row.key() == key:
                    marks.append((x, bar_y))
    _draw_marks(ax, marks)
    for value, y, text in labels:
        _label(ax, value, y, text, marks)
    _axis(ax, [*values, *(x for x, _ in marks)], room_for_labels=True)
    ax.axvspan(ax.get_xlim()[0], 1.0, color="tab:green", alpha=0.07, zorder=0)
    ax.set_xlabel("time / the peer's time (below 1: cosinekit is faster)")
    ax.set_title("against each peer (1 = a tie)", fontsize=FONT_SIZE)


def _label(
    ax: Any, value: float, y: float, text: str, marks: Sequence[tuple[float, float]]
) -> None:
    """The value beside its bar, right of the target's tick where the tick is in the way."""
    x = max([value, *(mark for mark, mark_y in marks if mark_y == y and mark > value)])
    ax.text(x * 1.08, y, text, va="center", fontsize=FONT_SIZE - 1)


def _draw_marks(ax: Any, marks: list[tuple[float, float]]) -> None:
    if marks:
        xs, ys = zip(*marks, strict=True)
        ax.scatter(xs, ys, marker="|", s=500, linewidths=2.5, color="tab:red", zorder=3)


def _axis(ax: Any, values: Sequence[float], room_for_labels: bool = False) -> None:
    """A log axis that shows 1 and every value, with room on the right for the labels."""
    from matplotlib import ticker

    finite = [v for v in values if math.isfinite(v) and v > 0] or [1.0]
    low, high = min([*finite, 1.0]), max([*finite, 1.0])
    ax.set_xscale("log")
    # 1-2-5 ticks over a short range, powers of ten over a long one: readable either way.
    subs = (1.0, 2.0, 5.0) if high / low < 300 else (1.0,)
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    right = high * (8 if room_for_labels else 2.2)
    ax.set_xlim(low / 1.6, right)
    ax.axvline(1.0, color="k", linewidth=0.9)
    ax.grid(axis="x", which="major", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)


def _peer_cell(row: Row) -> str:
    return "; ".join(f"{value:.2f} ({name})" for name, value in row.over_peers.items()) or "-"


def _shape_cell(row: Row) -> str:
    return row.shape if row.dtype == "float32" else f"{row.shape} {row.dtype}"


def topic_table(topic: str, rows: Sequence[Row]) -> str:
    """A Markdown table of one topic: time over the limit and over each peer."""
    limit = LIMITS.get(topic, "the limit")
    lines = [
        f"| case | backend | shape | time / limit ({limit}) | time / peer's time (peer) |",
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


def markdown(payload: dict[str, Any], rows: Sequence[Row]) -> str:
    """Every topic's table and targets, in the run's order."""
    parts = []
    for topic in topics(rows):
        mine = of_topic(rows, topic)
        parts += [f"### {topic}", "", topic_table(topic, mine), ""]
        targets = [t for t in payload.get("targets", []) if t["topic"] == topic]
        if targets:
            parts += [target_table(targets), ""]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the JSON that benchmarks/run.py wrote")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "docs" / "_static",
        help="folder for the performance-<topic>.png plots (default: docs/_static)",
    )
    parser.add_argument("--markdown", type=Path, help="write the tables here (default: stdout)")
    args = parser.parse_args(argv)
    payload, rows = load(args.results)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for topic in topics(rows):
        mine = of_topic(rows, topic)
        targets = [t for t in payload.get("targets", []) if t["topic"] == topic]
        plot_topic(topic, mine, targets, args.output_dir / f"performance-{topic}.png")
    text = markdown(payload, rows)
    if args.markdown:
        args.markdown.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
