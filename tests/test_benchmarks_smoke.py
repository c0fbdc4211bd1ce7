"""Smoke test of the benchmarks: ``benchmarks/run.py --quick`` runs end to end.

The quick run takes about 35 s of CPU time on two cores with the search topic
(two minutes and more when other jobs share them: measured at load 12); the
budget leaves room for a loaded machine. It exercises
every topic on every backend that imports (``torch.compile`` with the
``aot_eager`` backend, which traces forward and backward without generating
code), and checks the JSON it writes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# The benchmarks pick the backends that import: one session (with every
# CPU backend installed) runs them.
pytestmark = pytest.mark.backend_free

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


def test_quick_benchmark_writes_ratios(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the benchmarks plot with matplotlib")
    pytest.importorskip("sklearn", reason="the benchmarks compare with scikit-learn")
    completed = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| row-wise similarity | numpy |" in completed.stdout
    payload = json.loads((tmp_path / "benchmarks.json").read_text())
    numpy_rows = [r for r in payload["results"] if r["backend"] == "numpy"]
    assert {r["case"] for r in numpy_rows} >= {"row-wise similarity", "forward (small batch)"}
    if importlib.util.find_spec("torch") is not None:
        torch_cases = {(r["case"], r["backend"]) for r in payload["results"]}
        assert torch_cases >= {
            ("loss forward+backward", "torch"),
            ("row-wise similarity", "torch-aot_eager"),
            ("loss forward+backward", "torch-aot_eager"),
        }
    for row in payload["results"]:
        seconds = row["seconds"]
        assert seconds["cosinekit"] > 0
        assert seconds["limit"] > 0
        assert row["ratios"]["x limit"] == pytest.approx(seconds["cosinekit"] / seconds["limit"])
    assert (tmp_path / "benchmarks.png").stat().st_size > 0


def test_quick_search_benchmark_prints_the_peak_memory() -> None:
    completed = subprocess.run(
        [sys.executable, str(RUN.parent / "search.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "peak extra memory, NumPy cosine_topk" in completed.stdout


@pytest.mark.backend_free
def test_quick_training_memory_benchmark_prints_the_peaks() -> None:
    pytest.importorskip("torch", reason="the training-memory benchmark trains a torch MLP")
    completed = subprocess.run(
        [sys.executable, str(RUN.parent / "training_memory.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| PyTorch eager | peak extra RSS |" in completed.stdout
