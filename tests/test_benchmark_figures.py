"""The performance page's figures and tables, made from a benchmark run's JSON.

``benchmarks/report.py`` writes the run (results, targets, when and under
what load); ``benchmarks/figures.py`` turns it into one plot per topic and
the page's tables. Checked on a small hand-made run whose ratios are known.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.backend_free


@pytest.fixture(scope="module")
def bench() -> object:
    """The ``benchmarks`` package (it lives beside ``src``, not inside it)."""
    pytest.importorskip("matplotlib", reason="the figures are drawn with matplotlib")
    sys.path.insert(0, str(ROOT))
    try:
        import benchmarks.figures
        import benchmarks.harness
        import benchmarks.report

        return benchmarks
    finally:
        sys.path.remove(str(ROOT))


def _run(bench: object, tmp_path: Path) -> dict[str, object]:
    """A run of two topics written by ``report.write_json``, read back."""
    harness = bench.harness  # type: ignore[attr-defined]
    report = bench.report  # type: ignore[attr-defined]
    results = [
        # 2 ms against a 1 ms limit and a 10 ms peer: 2x the limit, 0.2x the peer.
        harness.Result("row-wise", "numpy", "100x8", "float32", 0.002, 0.001, {"sk": 0.010}),
        harness.Result("row-wise", "torch", "100x8", "float64", 0.003, 0.002, {"F": 0.0015}),
        harness.Result("search", "numpy", "10x50x8", "float32", 0.004, 0.004, {}),
    ]
    results[0].topic = results[1].topic = "rowwise"
    results[2].topic = "topk"
    targets = [
        harness.Target("5x faster than sk", "row-wise", "numpy", "speedup vs sk", 5.0, False),
        harness.Target("within 1.2x of F", "row-wise", "torch", "x F", 1.2, True, ambition=1.0),
        harness.Target("within 1.5x of the limit", "search", "numpy", "x limit", 1.5, True, 1.1),
        harness.Target("not measured", "row-wise", "jax-jit", "x limit", 2.0, True),
    ]
    path = tmp_path / "run.json"
    timing = harness.QUICK_TIMING
    run = report.run_details(["--quick"])
    report.write_json(results, path, True, timing, "aot_eager", targets, run)
    return json.loads(path.read_text())


def test_the_json_records_the_targets_and_the_run(bench: object, tmp_path: Path) -> None:
    payload = _run(bench, tmp_path)
    targets = {t["description"]: t for t in payload["targets"]}  # type: ignore[union-attr]
    assert set(targets) == {"5x faster than sk", "within 1.2x of F", "within 1.5x of the limit"}
    assert targets["5x faster than sk"]["measured"] == pytest.approx(5.0)
    assert targets["5x faster than sk"]["met"] is True
    assert targets["within 1.2x of F"]["measured"] == pytest.approx(2.0)
    assert targets["within 1.2x of F"]["met"] is False
    assert targets["within 1.5x of the limit"]["ambition_met"] is True
    assert targets["within 1.5x of the limit"]["topic"] == "topk"
    run = payload["run"]
    assert run["arguments"] == ["--quick"]  # type: ignore[index]
    assert len(run["load_average_at_start"]) == len(run["load_average_at_end"]) == 3  # type: ignore[index]


def test_figures_make_one_plot_per_topic_and_the_tables(bench: object, tmp_path: Path) -> None:
    _run(bench, tmp_path)
    plots, tables = tmp_path / "static", tmp_path / "generated"
    figures = bench.figures  # type: ignore[attr-defined]
    arguments = [
        str(tmp_path / "run.json"),
        "--output-dir",
        str(plots),
        "--tables-dir",
        str(tables),
    ]
    assert figures.main(arguments) == 0
    assert sorted(p.name for p in plots.iterdir()) == [
        "performance-rowwise.png",
        "performance-topk.png",
    ]
    for png in plots.iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tables.iterdir()) == [
        "performance-rowwise.md",
        "performance-run.md",
        "performance-summary.md",
        "performance-topk.md",
    ]
    rowwise = (tables / "performance-rowwise.md").read_text()
    # Every ratio is cosinekit's time over the reference's.
    assert "| row-wise | numpy | 100x8 | 2.00 | 0.20 (sk) |" in rowwise
    assert "| row-wise | torch | 100x8 float64 | 1.50 | 2.00 (F) |" in rowwise
    assert "| 5x faster than sk | 5.00 | >= 5 | - | yes |" in rowwise
    assert "| within 1.2x of F | 2.00 | <= 1.2 | <= 1 | **no** |" in rowwise
    topk = (tables / "performance-topk.md").read_text()
    assert "| search | numpy | 10x50x8 | 1.00 | - |" in topk
    assert "| within 1.5x of the limit | 1.00 | <= 1.5 | <= 1.1 | yes (ambition too) |" in topk
    summary = (tables / "performance-summary.md").read_text()
    assert "| {ref}`rowwise <performance-rowwise>` | 1 of 2 | within 1.2x of F |" in summary
    assert "| {ref}`topk <performance-topk>` | 1 of 1 | - |" in summary
    run = (tables / "performance-run.md").read_text()
    assert run.startswith("`python benchmarks/run.py --quick`")
    assert "load average" in run


def test_a_speedup_target_is_drawn_at_its_time_ratio(bench: object) -> None:
    figures = bench.figures  # type: ignore[attr-defined]
    speedup = {"ratio": "speedup vs sk", "bar": 4.0}
    assert figures.target_marks(speedup) == ("peer", "sk", 0.25)
    assert figures.target_marks({"ratio": "x optax.ntxent", "bar": 1.2}) == (
        "peer",
        "optax.ntxent",
        1.2,
    )
    assert figures.target_marks({"ratio": "x limit", "bar": 2.5}) == ("limit", None, 2.5)
