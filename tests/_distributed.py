"""Checks on real ``torch.distributed`` processes, started once for several world sizes.

A test module lists its rank-side checks in a `RankChecks` (``CHECKS =
RankChecks()``, then ``@CHECKS.add`` on functions of one `Rank`) and calls
`run_rank_checks` once (a module-scoped fixture). That starts
``max(worlds)`` Python processes (each pays one torch import) which, for
each world size in turn, join a gloo process group on 127.0.0.1 (ranks past
the world size wait out that phase), run every check in order, and leave the
group; each check that returns prints a line that the parent reads. So a new
check is one decorated function, and costs no new processes.

Nothing can hang the test session: every collective is bounded by the
group's timeout, and the parent by a deadline. The first rank to fail ends
the run: the other ranks are killed, and every check not yet passed reports
that rank's traceback. At the deadline, each rank still running is asked
(``SIGUSR1``, which ``faulthandler`` answers) to print where it is, and is
then killed.

Run as a script, this file is one rank: ``python _distributed.py MODULE RANK
PORT WORLD [WORLD ...]``.
"""

from __future__ import annotations

import dataclasses
import datetime
import faulthandler
import importlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

#: The bound on each collective (and on joining the group) in the ranks.
COLLECTIVE_TIMEOUT_S = 60.0
#: The bound on a whole run, the ranks' imports included.
RUN_DEADLINE_S = 240.0
STARTED, PASSED = "RANK-CHECK-STARTED", "RANK-CHECK-PASSED"


@dataclasses.dataclass(frozen=True)
class Rank:
    """What a check knows of its process: its rank and the world size of this phase."""

    rank: int
    world_size: int


class RankChecks:
    """The checks of one test module, run in order by every rank of every world size."""

    def __init__(self) -> None:
        self.functions: dict[str, Callable[[Rank], None]] = {}

    def add(self, function: Callable[[Rank], None]) -> Callable[[Rank], None]:
        """Register ``function`` (a decorator); it runs after those registered before it."""
        self.functions[function.__name__] = function
        return function

    @property
    def names(self) -> list[str]:
        """The checks' names, in order."""
        return list(self.functions)


@dataclasses.dataclass
class Outcome:
    """What one run of the ranks gave: the checks that passed, or why not."""

    passed: set[tuple[int, str]]
    #: The check that was running when the run ended early, if any.
    stopped_in: tuple[int, str] | None
    #: The status and standard error of every rank that did not exit 0.
    failure: str

    def check(self, world_size: int, name: str) -> None:
        """Fail (with the failing rank's traceback) unless ``name`` passed on every rank."""
        __tracebackhide__ = True  # pytest shows the message, not this frame
        if (world_size, name) in self.passed:
            return
        if self.stopped_in in (None, (world_size, name)):
            msg = f"check {name!r} failed with world size {world_size}:\n{self.failure}"
        else:
            world, first = self.stopped_in
            msg = (
                f"check {name!r} with world size {world_size} was not reached: check "
                f"{first!r} with world size {world} failed first:\n{self.failure}"
            )
        raise AssertionError(msg)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def run_rank_checks(
    module: str, worlds: Sequence[int], *, deadline_s: float = RUN_DEADLINE_S
) -> Outcome:
    """Run every check of ``module.CHECKS`` for each world size, in one set of processes."""
    import cosinekit

    paths = [str(Path(cosinekit.__file__).parent.parent), str(Path(__file__).parent)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    # One thread per rank: the ranks share the machine's cores.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}
    port = free_port()
    commands = [
        [sys.executable, __file__, module, str(rank), str(port), *map(str, worlds)]
        for rank in range(max(worlds))
    ]
    results = supervise(commands, env=env, deadline_s=deadline_s)
    passed_by_rank, stopped_in = [], None
    for status, stdout, _ in results:
        marks = [line.split() for line in stdout.splitlines() if line.startswith("RANK-CHECK-")]
        passed_by_rank.append({(int(w), name) for mark, w, name, *_ in marks if mark == PASSED})
        if status != "exited 0" and marks and marks[-1][0] == STARTED and stopped_in is None:
            stopped_in = (int(marks[-1][1]), marks[-1][2])
    passed = {
        (world, name)
        for world in worlds
        for name in importlib.import_module(module).CHECKS.names
        if all((world, name) in passed_by_rank[rank] for rank in range(world))
    }
    failures = [
        f"--- rank {rank}: {status} ---\n{stderr.strip()}"
        for rank, (status, _, stderr) in enumerate(results)
        if status != "exited 0"
    ]
    return Outcome(passed, stopped_in, "\n".join(failures) or "(every rank exited 0)")


def supervise(
    commands: Sequence[Sequence[str]], *, env: dict[str, str], deadline_s: float
) -> list[tuple[str, str, str]]:
    """Run the commands together; ``(status, stdout, stderr)`` of each.

    The first non-zero exit kills the others; at the deadline, those still
    running print their stacks (``SIGUSR1``) and are killed. The outputs go
    to files, not pipes, so that no process blocks on a full pipe.
    """
    with tempfile.TemporaryDirectory() as scratch:
        outputs = [
            (open(Path(scratch, f"{i}.out"), "w+b"), open(Path(scratch, f"{i}.err"), "w+b"))  # noqa: SIM115
            for i in range(len(commands))
        ]
        processes = [
            subprocess.Popen(command, stdout=out, stderr=err, env=env)
            for command, (out, err) in zip(commands, outputs, strict=True)
        ]
        statuses = _wait(processes, time.monotonic() + deadline_s)
        results = []
        for status, (out, err) in zip(statuses, outputs, strict=True):
            results.append((status, _read(out), _read(err)))
            out.close()
            err.close()
    return results


def _wait(processes: list[subprocess.Popen[bytes]], deadline: float) -> list[str]:
    statuses: list[str | None] = [None] * len(processes)
    while None in statuses:
        for i, process in enumerate(processes):
            if statuses[i] is None and process.poll() is not None:
                statuses[i] = f"exited {process.returncode}"
        failed = any(s is not None and s != "exited 0" for s in statuses)
        if failed or time.monotonic() > deadline:
            reason = "killed: another rank failed" if failed else "hung: killed at the deadline"
            running = [i for i, s in enumerate(statuses) if s is None]
            if not failed and hasattr(signal, "SIGUSR1"):
                for i in running:
                    processes[i].send_signal(signal.SIGUSR1)
                time.sleep(1.0)  # let faulthandler write the stacks
            for i in running:
                processes[i].kill()
                processes[i].wait()
                statuses[i] = reason
            break
        time.sleep(0.05)
    return [s or "" for s in statuses]


def _read(file: IO[bytes]) -> str:
    file.flush()
    file.seek(0)
    return file.read().decode(errors="replace")


def _rank_main(module: str, rank: int, port: int, worlds: list[int]) -> None:
    """One rank: join each world in turn (if a member), run every check, leave."""
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    checks = importlib.import_module(module).CHECKS
    timeout = datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S)
    # One store, held by rank 0 for the whole run; each world joins under
    # its own prefix, so one free port serves every phase.
    store = dist.TCPStore("127.0.0.1", port, max(worlds), is_master=rank == 0, timeout=timeout)
    for phase, world_size in enumerate(worlds):
        if rank >= world_size:
            continue
        dist.init_process_group(
            "gloo",
            store=dist.PrefixStore(f"phase{phase}", store),
            rank=rank,
            world_size=world_size,
            timeout=timeout,
        )
        for name, function in checks.functions.items():
            print(STARTED, world_size, name, flush=True)
            began = time.perf_counter()
            function(Rank(rank, world_size))
            print(PASSED, world_size, name, f"{time.perf_counter() - began:.3f}", flush=True)
        dist.destroy_process_group()
    # Rank 0 holds the store: it leaves last.
    finished = store.add("finished", 1)
    deadline = time.monotonic() + COLLECTIVE_TIMEOUT_S
    while rank == 0 and finished < max(worlds) and time.monotonic() < deadline:
        time.sleep(0.01)
        finished = store.add("finished", 0)


if __name__ == "__main__":
    try:
        # Through the module's own name, so that the checks (which import
        # `_distributed`) and this rank share one copy of it.
        import _distributed

        arguments = int(sys.argv[2]), int(sys.argv[3]), [int(w) for w in sys.argv[4:]]
        _distributed._rank_main(sys.argv[1], *arguments)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        # Not a normal exit: the process group's teardown could wait on
        # peers that are gone.
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)
