"""``torch.compile`` as the first cosinekit call of a process (issue 19).

The cases are in `_first_calls`: one subprocess forks a fresh child per
case (see there why), and each case's outputs are checked here against
the float64 reference, with the dtype the contract gives (integer and
boolean inputs: the default float dtype).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import _first_calls

SCRIPT = Path(__file__).with_name("_first_calls.py")


@pytest.fixture(scope="module")
def first_calls() -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results: dict[str, Any] = json.loads(completed.stdout)
    return results


@pytest.mark.backends("torch")
@pytest.mark.parametrize("case", sorted(_first_calls.CASES))
def test_compiled_first_call(first_calls: dict[str, Any], case: str) -> None:
    found = first_calls[case]
    assert "error" not in found, found.get("error")
    expected = _first_calls.expected(case)
    spec = _first_calls.CASES[case]
    assert len(found["outputs"]) == len(expected)
    for got, dtype, want in zip(found["outputs"], found["dtypes"], expected, strict=True):
        if np.issubdtype(want.dtype, np.floating):
            assert dtype == spec.dtype
        else:
            assert dtype.startswith("int")
        np.testing.assert_allclose(
            np.asarray(got, dtype=np.float64), want, rtol=spec.rtol, atol=spec.rtol
        )
