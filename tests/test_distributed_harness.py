"""The multi-process harness itself: a failed or hung process fails fast, with its stack.

Plain Python processes (no torch import), so these take about a second.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from _distributed import Outcome, supervise

pytestmark = pytest.mark.backend_free

HANG = (
    "import faulthandler, signal, time; faulthandler.register(signal.SIGUSR1); "
    "print('waiting', flush=True); time.sleep(60)"
)


def test_a_failing_process_ends_the_run_with_its_traceback() -> None:
    began = time.monotonic()
    results = supervise(
        [
            [sys.executable, "-c", "import time; time.sleep(0.2); raise ValueError('broke')"],
            [sys.executable, "-c", HANG],
        ],
        env=dict(os.environ),
        deadline_s=60,
    )
    assert time.monotonic() - began < 30  # not the deadline, nor the sleep
    (status0, _, stderr0), (status1, stdout1, _) = results
    assert status0 == "exited 1"
    assert "ValueError: broke" in stderr0
    assert status1 == "killed: another rank failed"
    assert "waiting" in stdout1


def test_a_hung_process_is_killed_at_the_deadline_with_its_stack() -> None:
    ((status, stdout, stderr),) = supervise(
        [[sys.executable, "-c", HANG]], env=dict(os.environ), deadline_s=2
    )
    assert status == "hung: killed at the deadline"
    assert "waiting" in stdout
    # faulthandler's dump of the main thread, sleeping on line 1.
    assert "most recent call first" in stderr
    assert 'File "<string>", line 1' in stderr


def test_a_check_that_did_not_pass_reports_the_first_failure() -> None:
    outcome = Outcome({(2, "first")}, (2, "second"), "--- rank 1: exited 1 ---\nTraceback")
    outcome.check(2, "first")
    with pytest.raises(AssertionError, match=r"'second' failed with world size 2:\n--- rank 1"):
        outcome.check(2, "second")
    with pytest.raises(AssertionError, match="'third' with world size 2 was not reached"):
        outcome.check(2, "third")
