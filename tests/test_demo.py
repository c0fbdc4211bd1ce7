"""``python -m cosinekit``: the seed example on every installed backend.

The demo iterates over the installed libraries itself, so these tests do not
take the ``xp`` fixture: they are backend-free and run in one session, which
installs every CPU backend.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import cosinekit as ck
from cosinekit import __main__ as demo

TUTORIAL_LOSS = 0.077168673  # recorded from TensorFlow by the tutorial
pytestmark = pytest.mark.backend_free
OTHER_BACKENDS = ["torch", "jax", "dask", "array_api_strict", "cupy"]


def _rows(output: str) -> dict[str, list[str]]:
    """The table's rows by backend name (the first backend row wins)."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 5 and cells[0] != "backend" and not cells[0].startswith("-"):
            rows.setdefault(cells[0], cells)
    return rows


def test_module_runs_and_agrees_with_tensorflow() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "cosinekit"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    output = completed.stdout
    assert f"TensorFlow tutorial value: {TUTORIAL_LOSS}" in output
    assert "OK: every backend agrees" in output
    rows = _rows(output)
    assert "numpy" in rows, output
    _, version, device, loss, agrees = rows["numpy"]
    assert version == np.__version__
    assert device == "cpu"
    assert float(loss) == pytest.approx(TUTORIAL_LOSS, rel=1e-6)
    assert agrees == "yes"
    for backend in OTHER_BACKENDS:
        if backend in rows:
            assert rows[backend][4] == "yes", output


def _another_backend() -> None:
    if not any(importlib.util.find_spec(name) for name in OTHER_BACKENDS):
        pytest.skip("no array library besides NumPy is installed to disagree with it")


def test_main_fails_when_a_backend_disagrees(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _another_backend()
    real = ck.cosine_distance_loss

    def wrong_off_numpy(labels: Any, predictions: Any, /, **kwargs: Any) -> Any:
        loss = real(labels, predictions, **kwargs)
        return loss if isinstance(labels, np.ndarray) else 2 * loss

    monkeypatch.setattr(ck, "cosine_distance_loss", wrong_off_numpy)
    assert demo.main() == 1
    output = capsys.readouterr().out
    rows = _rows(output)
    assert rows["numpy"][4] == "yes"
    assert any(row[4] == "NO" for name, row in rows.items() if name != "numpy"), output
    assert "FAIL: a backend disagrees with NumPy" in output


def test_main_fails_when_a_backend_raises(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _another_backend()
    real = ck.cosine_distance_loss

    def broken_off_numpy(labels: Any, predictions: Any, /, **kwargs: Any) -> Any:
        if not isinstance(labels, np.ndarray):
            msg = "simulated backend failure"
            raise RuntimeError(msg)
        return real(labels, predictions, **kwargs)

    monkeypatch.setattr(ck, "cosine_distance_loss", broken_off_numpy)
    assert demo.main() == 1
    output = capsys.readouterr().out
    assert "error: simulated backend failure" in output
    assert "FAIL: a backend disagrees with NumPy" in output


def test_main_fails_when_numpy_misses_the_tutorial_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = ck.cosine_distance_loss

    def wrong_everywhere(labels: Any, predictions: Any, /, **kwargs: Any) -> Any:
        # Every backend agrees with NumPy, but NumPy is 1e-4 off TensorFlow.
        return real(labels, predictions, **kwargs) * (1 + 1e-4)

    monkeypatch.setattr(ck, "cosine_distance_loss", wrong_everywhere)
    assert demo.main() == 1
    output = capsys.readouterr().out
    assert "FAIL: NumPy does not reproduce the tutorial value" in output
