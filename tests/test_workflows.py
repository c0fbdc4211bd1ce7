"""The CI workflows, the GPU script and noxfile.py agree on the session names.

Every ``nox -s NAME`` in ``.github/workflows/*.yml`` (with the job's
``matrix`` expanded) must name a session of ``noxfile.py``, and every test
session there must have a job: CPU sessions in ci.yml, GPU sessions in
gpu.yml. noxfile.py is read with ``ast`` (nox need not be installed).
"""

from __future__ import annotations

import ast
import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
pytestmark = pytest.mark.backend_free

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
GPU_SESSIONS = {"cupy", "torch_cuda", "jax_cuda"}
# Runs whatever COSINEKIT_BACKENDS names: every backend it can run already
# has its own session and job.
GENERIC_TEST_SESSIONS = {"tests"}
TOOL_SESSIONS = {"lint", "docs", "build"}
MATRIX_EXPRESSION = re.compile(r"\$\{\{\s*matrix\.([A-Za-z0-9_-]+)\s*\}\}")


def _constant(node: ast.expr, constants: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return constants[node.id]
    return ast.literal_eval(node)


def _nox_sessions() -> tuple[dict[str, list[str] | None], set[str]]:
    """Each session's name and Python versions, and which sessions run tests."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    constants: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    constants[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    continue
    sessions: dict[str, list[str] | None] = {}
    test_sessions: set[str] = set()
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            func = call.func if call else decorator
            if not (isinstance(func, ast.Attribute) and func.attr == "session"):
                continue
            pythons = None
            for keyword in call.keywords if call else []:
                if keyword.arg == "python":
                    value = _constant(keyword.value, constants)
                    pythons = [value] if isinstance(value, str) else list(value)
            sessions[node.name] = pythons
            calls = {
                sub.func.id
                for sub in ast.walk(node)
                if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name)
            }
            if "_run_tests" in calls:
                test_sessions.add(node.name)
    return sessions, test_sessions


def _workflow(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    return loaded


def _expand(command: str, matrix: dict[str, Any]) -> list[str]:
    """``command`` once for each combination of the matrix values it uses."""
    keys = sorted(set(MATRIX_EXPRESSION.findall(command)))
    if not keys:
        return [command]
    missing = [key for key in keys if key not in matrix]
    assert not missing, f"{command!r} uses matrix.{missing} that the job does not define"
    expanded = []
    for values in itertools.product(*(matrix[key] for key in keys)):
        bound = dict(zip(keys, values, strict=True))
        expanded.append(
            MATRIX_EXPRESSION.sub(lambda m, bound=bound: str(bound[m.group(1)]), command)
        )
    return expanded


def _session_arguments(command: str) -> list[str]:
    """The session names of every ``nox -s``/``--session(s)`` in a shell command."""
    names = []
    for line in command.splitlines():
        words = shlex.split(line, comments=True)
        if "nox" not in words:
            continue
        for index, word in enumerate(words):
            if word in ("-s", "--session", "--sessions"):
                for name in words[index + 1 :]:
                    if name.startswith("-"):
                        break
                    names.append(name)
    return names


def _jobs_sessions(name: str) -> dict[str, list[str]]:
    """For each job of a workflow, the nox sessions its steps run."""
    result = {}
    for job_name, job in _workflow(name)["jobs"].items():
        matrix = (job.get("strategy") or {}).get("matrix") or {}
        sessions = []
        for step in job.get("steps", []):
            for command in _expand(step.get("run", ""), matrix):
                sessions.extend(_session_arguments(command))
        result[job_name] = sessions
    return result


def _resolve(name: str, sessions: dict[str, list[str] | None]) -> str | None:
    """The session that ``nox -s name`` runs: ``name`` or ``name-<python>``."""
    if name in sessions:
        return name
    base, _, python = name.rpartition("-")
    if base in sessions and python in (sessions[base] or []):
        return base
    return None


@pytest.mark.parametrize("workflow", ["ci.yml", "gpu.yml"])
def test_every_job_names_an_existing_session(workflow: str) -> None:
    sessions, _ = _nox_sessions()
    for job, names in _jobs_sessions(workflow).items():
        for name in names:
            assert _resolve(name, sessions), f"{workflow} job {job!r}: no nox session {name!r}"


@pytest.mark.parametrize("workflow", ["ci.yml", "gpu.yml"])
def test_every_job_runs_a_session(workflow: str) -> None:
    for job, names in _jobs_sessions(workflow).items():
        assert names, f"{workflow} job {job!r} runs no nox session"


def test_ci_jobs_map_one_to_one_to_sessions() -> None:
    sessions, _ = _nox_sessions()
    for job, names in _jobs_sessions("ci.yml").items():
        resolved = {_resolve(name, sessions) for name in names}
        assert resolved == {job}, f"ci.yml job {job!r} runs {names}, not the session {job!r}"


def test_every_test_session_has_a_job() -> None:
    sessions, test_sessions = _nox_sessions()
    assert {"numpy", "torch", "jax", "dask", "array_api_strict"} <= test_sessions
    ci = {name for names in _jobs_sessions("ci.yml").values() for name in names}
    gpu = {name for names in _jobs_sessions("gpu.yml").values() for name in names}
    for session in sorted(test_sessions - GENERIC_TEST_SESSIONS):
        where, run = ("gpu.yml", gpu) if session in GPU_SESSIONS else ("ci.yml", ci)
        pythons = sessions[session]
        if pythons is not None and len(pythons) > 1:
            wanted = {f"{session}-{python}" for python in pythons}
            assert wanted <= run, f"{where} lacks {sorted(wanted - run)}"
        else:
            assert session in run, f"{where} has no job for the test session {session!r}"


def test_tool_sessions_have_jobs() -> None:
    sessions, _ = _nox_sessions()
    jobs = _jobs_sessions("ci.yml")
    for session in sorted(TOOL_SESSIONS):
        assert session in sessions, f"noxfile.py has no {session!r} session"
        assert jobs.get(session) == [session], f"ci.yml has no job running {session!r}"


def test_gpu_workflow_checks_the_gpu_first_and_sets_cuda_builds() -> None:
    workflow = _workflow("gpu.yml")
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on` as True
    assert "workflow_dispatch" in triggers
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    for variable in ("COSINEKIT_TORCH_SPEC", "COSINEKIT_JAX_SPEC"):
        assert variable in noxfile, f"noxfile.py no longer reads {variable}"
        assert "cu" in workflow["env"][variable], f"{variable} does not name a CUDA build"
    for job in workflow["jobs"].values():
        assert "gpu" in job["runs-on"]
        assert job["steps"][0].get("run", "").split() == ["nvidia-smi"]


def test_gpu_script_steps_are_sessions() -> None:
    sessions, _ = _nox_sessions()
    script = (ROOT / "scripts" / "gpu_check.sh").read_text(encoding="utf-8")
    match = re.search(r"^ALL_STEPS=\(([^)]*)\)", script, flags=re.MULTILINE)
    assert match, "scripts/gpu_check.sh defines no ALL_STEPS"
    steps = match.group(1).split()
    assert set(steps) >= GPU_SESSIONS
    for step in GPU_SESSIONS:
        assert step in sessions, f"scripts/gpu_check.sh runs {step!r}, not a nox session"
    assert "bench" in sessions
