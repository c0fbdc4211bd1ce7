"""The docs' ``torchrun`` example runs on two CPU processes and passes its own check.

The example trains with ``DistributedDataParallel`` and ``all_gather`` on
uneven shares, then asserts that one step's loss (mean over ranks) and
gradient equal a single process's on the whole batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cosinekit as ck

pytestmark = pytest.mark.backends("torch")

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "distributed_infonce.py"


def test_torchrun_example() -> None:
    # torchrun itself, with a rendezvous on a free local port (--standalone).
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", str(EXAMPLE)]
    env = {**os.environ, "PYTHONPATH": str(Path(ck.__file__).parent.parent)}
    # A session of its own, so that a hang kills the workers with the launcher.
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as launcher:
        try:
            stdout, stderr = launcher.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            stdout, stderr = launcher.communicate()
            pytest.fail(f"the example hung:\n{stdout}\n{stderr[-3000:]}")
    assert launcher.returncode == 0, stderr[-3000:]
    assert "2 ranks: the loss (" in stdout
    assert "and gradient of one process" in stdout
