"""Test, lint, docs, build and benchmark sessions.

Plain ``nox`` runs every session that can run on this machine: the tests on
each backend (GPU sessions skip, with the reason, where no GPU is present),
lint, docs and build. ``nox -s bench`` runs the benchmarks.

One environment variable drives both nox and pytest: ``COSINEKIT_BACKENDS``.
Each backend session sets it for pytest to its own backend; the generic
``tests`` session reads it from the environment (``COSINEKIT_BACKENDS=torch,jax
nox -s tests``), installs those backends and tests them. ``COSINEKIT_DEVICE``
(``cpu`` or ``cuda``) selects the device the same way.

The install specs can be overridden for GPU machines:
``COSINEKIT_TORCH_SPEC`` (default ``torch==2.13.0``, the CPU build) and
``COSINEKIT_JAX_SPEC`` (default ``jax[cpu]``), for example
``COSINEKIT_TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu126"``.

The virtualenvs are made and filled by uv where it is installed
(``pip install nox uv``), else by virtualenv and pip. The tests run on every
core with pytest-xdist (``nox -s numpy-3.11 -- -n 0`` runs them in one
process; other arguments after ``--`` go to pytest as well).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import nox

nox.options.sessions = [
    "numpy",
    "torch",
    "jax",
    "dask",
    "array_api_strict",
    "cupy",
    "lint",
    "docs",
    "build",
]
nox.options.reuse_existing_virtualenvs = False
# uv makes and fills a virtualenv in seconds where pip takes a minute (torch
# alone is 200 MB); without uv, nox falls back to virtualenv and pip.
nox.options.default_venv_backend = "uv|virtualenv"

# uv does not read pip's configuration. Where pip finds wheels in local
# folders (PIP_FIND_LINKS, whitespace-separated: on this project's CI machine
# the CPU build of torch), uv must look there too (UV_FIND_LINKS,
# comma-separated), or it would take torch from PyPI, the CUDA build.
if os.environ.get("PIP_FIND_LINKS") and not os.environ.get("UV_FIND_LINKS"):
    os.environ["UV_FIND_LINKS"] = ",".join(os.environ["PIP_FIND_LINKS"].split())
# uv, unlike pip, does not compile the installed modules to bytecode; with
# PYTHONDONTWRITEBYTECODE set, every test process (each xdist worker, each
# subprocess) would compile torch's and JAX's modules from source again
# (about 4 s of CPU each). The sessions' Pythons may write their bytecode:
# the first import of a module compiles it for the next processes.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# The CPU wheel of torch on this machine's disk is built for CPython 3.11.
BACKEND_PYTHON = "3.11"

TEST_DEPS = [
    "pytest>=8",
    "pytest-xdist",
    "hypothesis>=6.100",
    "mpmath",
    "scipy",
    "scikit-learn",
    "pyyaml",
    "matplotlib",  # the benchmark smoke test plots
    "faiss-cpu",  # a reference for cosine_topk and cosine_range_search
]


def _spec(env: str, default: str) -> list[str]:
    return shlex.split(os.environ.get(env, default))


BACKEND_DEPS: dict[str, list[str]] = {
    "numpy": [],
    "torch": _spec("COSINEKIT_TORCH_SPEC", "torch==2.13.0"),
    # optax is a reference in the tests (optax's masked cosine).
    "jax": [*_spec("COSINEKIT_JAX_SPEC", "jax[cpu]"), "optax"],
    "dask": ["dask[array,distributed]"],
    "array_api_strict": ["array-api-strict"],
    "array_api_strictest": ["array-api-strict"],
    "cupy": _spec("COSINEKIT_CUPY_SPEC", "cupy-cuda12x"),
}


def _gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0


# The CPU backends. The backend-free tests (the demo, the benchmarks' smoke
# run) use whichever of them are installed: their one session installs all.
CPU_BACKENDS = ["torch", "jax", "dask", "array_api_strict"]


def _run_tests(
    session: nox.Session,
    backends: list[str],
    device: str = "cpu",
    *,
    backend_free: bool = False,
    xdist: bool = True,
) -> None:
    """Install ``backends`` and run the tests on them.

    ``backend_free``: this session also runs the tests marked
    ``backend_free`` (those that test no backend of their own, see
    tests/conftest.py), which every other session leaves out. ``xdist``:
    run the tests on every core (`XDIST`); where they take seconds in one
    process, starting the workers would cost more than it saves.
    """
    unknown = [b for b in backends if b not in BACKEND_DEPS]
    if unknown:
        session.error(f"unknown backends {unknown}; choose from {sorted(BACKEND_DEPS)}")
    if (device != "cpu" or "cupy" in backends) and not _gpu_present():
        session.skip(f"{','.join(backends)} on {device} needs an NVIDIA GPU; none is present")
    session.install("-e", ".", *TEST_DEPS)
    installed = list(backends)
    if session.python == BACKEND_PYTHON and "torch" not in installed:
        # PyTorch is a reference implementation in the tests of every
        # backend; its CPU wheel here exists for CPython 3.11 only, so the
        # numpy sessions on other Pythons skip those comparisons (saying so).
        installed.append("torch")
    if backend_free:
        installed += [b for b in CPU_BACKENDS if b not in installed]
    for backend in installed:
        if BACKEND_DEPS[backend]:
            session.install(*BACKEND_DEPS[backend])
    if session.python == BACKEND_PYTHON:
        # pytorch-metric-learning is the NT-Xent reference. Without its
        # dependencies, so that the installer can never replace the torch
        # above; tqdm is the one it imports that the test dependencies lack.
        session.install("--no-deps", "pytorch-metric-learning", "tqdm")
    if "torch" in backends:
        _install_sentence_transformers(session)
    env = {
        "COSINEKIT_BACKENDS": ",".join(backends),
        "COSINEKIT_DEVICE": device,
        "COSINEKIT_BACKEND_FREE": "1" if backend_free else "0",
    }
    if "jax" in installed:
        # Every test process (the xdist workers, the subprocesses of the
        # demo and the benchmarks) shares one cache of compiled XLA programs,
        # kept in the session's folder and so empty on a fresh clone.
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(session.create_tmp(), "jax-cache")
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    session.run("pytest", *(XDIST if xdist else []), *session.posargs, env=env)


# pytest-xdist: one worker per core; a worker that finishes early takes
# tests from the others. `nox -s <session> -- -n 0` runs in one process.
XDIST = ["-n", "auto", "--dist", "worksteal"]


def _install_sentence_transformers(session: nox.Session) -> None:
    """sentence-transformers, the reference of the mining functions, with torch held.

    Its dependencies ask for a torch of their own; constraints pin torch
    and NumPy at the versions installed above, so that pip can never
    replace them (tests/test_mining_peers.py uses it).
    """
    versions = session.run(
        "python",
        "-c",
        "import numpy, torch; print(torch.__version__, numpy.__version__)",
        silent=True,
    )
    torch_version, numpy_version = str(versions).split()
    constraints = os.path.join(session.create_tmp(), "constraints.txt")
    with open(constraints, "w", encoding="utf-8") as file:
        file.write(f"torch=={torch_version}\nnumpy=={numpy_version}\n")
    session.install("-c", constraints, "sentence-transformers")


@nox.session(python=PYTHONS)
def numpy(session: nox.Session) -> None:
    """Tests on NumPy, on every supported Python, plus the docstring examples.

    The 3.11 session also runs the backend-free tests, with every CPU backend
    installed for the demo and the benchmarks' smoke run.
    """
    backend_free = session.python == BACKEND_PYTHON
    _run_tests(session, ["numpy"], backend_free=backend_free, xdist=backend_free)
    doctests = ["--doctest-modules", "src/cosinekit", "-p", "no:cacheprovider"]
    if session.python != BACKEND_PYTHON:
        # The modules that import torch (cosinekit.torch, the autograd
        # Functions, gradient caching, all_gather) or JAX (cosinekit.jax):
        # torch's CPU wheel here is for 3.11 only, and these sessions install
        # neither; their examples run in the 3.11 session, which has both.
        doctests += [
            "--ignore-glob=src/cosinekit/*torch*.py",
            "--ignore=src/cosinekit/jax.py",
        ]
    session.run("pytest", *doctests)


@nox.session(python=BACKEND_PYTHON)
def torch(session: nox.Session) -> None:
    """Tests on PyTorch (CPU)."""
    _run_tests(session, ["torch"])


@nox.session(python=BACKEND_PYTHON)
def jax(session: nox.Session) -> None:
    """Tests on JAX with 64-bit enabled (CPU)."""
    _run_tests(session, ["jax"])


@nox.session(python=BACKEND_PYTHON)
def dask(session: nox.Session) -> None:
    """Tests on lazy Dask arrays, including a two-worker local cluster."""
    _run_tests(session, ["dask"])


@nox.session(python=BACKEND_PYTHON)
def array_api_strict(session: nox.Session) -> None:
    """Tests on array-api-strict, with its default and its strictest flags."""
    _run_tests(session, ["array_api_strict", "array_api_strictest"], xdist=False)


@nox.session(python=BACKEND_PYTHON)
def cupy(session: nox.Session) -> None:
    """Tests on CuPy; skips where no NVIDIA GPU is present."""
    _run_tests(session, ["cupy"])


@nox.session(python=BACKEND_PYTHON)
def torch_cuda(session: nox.Session) -> None:
    """Tests on PyTorch tensors on the GPU (needs COSINEKIT_TORCH_SPEC for a CUDA build)."""
    _run_tests(session, ["torch"], device="cuda")


@nox.session(python=BACKEND_PYTHON)
def jax_cuda(session: nox.Session) -> None:
    """Tests on JAX arrays on the GPU (needs COSINEKIT_JAX_SPEC=jax[cuda12])."""
    _run_tests(session, ["jax"], device="cuda")


@nox.session(python=BACKEND_PYTHON)
def tests(session: nox.Session) -> None:
    """Tests on the backends named in COSINEKIT_BACKENDS (default: numpy)."""
    backends = os.environ.get("COSINEKIT_BACKENDS", "numpy").split(",")
    _run_tests(
        session,
        [b.strip() for b in backends if b.strip()],
        device=os.environ.get("COSINEKIT_DEVICE", "cpu"),
    )


@nox.session(python=BACKEND_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy --strict on the package."""
    session.install("-e", ".", "ruff", "mypy")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "src/cosinekit")


@nox.session(python=BACKEND_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with warnings as errors, and run the pages' examples."""
    # scikit-learn: the contrastive page trains on its bundled digits data.
    session.install("-e", ".", "-r", "docs/requirements.txt", "pytest>=8", "scikit-learn")
    # The pages show the same call on several backends; their examples run.
    for backend in ("torch", "jax", "dask", "array_api_strict"):
        session.install(*BACKEND_DEPS[backend])
    session.run(
        "sphinx-build", "-n", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )
    session.run(
        "pytest",
        "--doctest-glob=*.md",
        "--ignore=docs/_build",
        "-p",
        "no:cacheprovider",
        "docs",
    )


@nox.session(python=BACKEND_PYTHON)
def build(session: nox.Session) -> None:
    """Build sdist and wheel, check them, and run the demo from the installed wheel."""
    session.install("build", "twine")
    dist = session.create_tmp()
    session.run("python", "-m", "build", "--outdir", dist)
    session.run("twine", "check", "--strict", f"{dist}/*")
    wheels = [f for f in os.listdir(dist) if f.endswith(".whl")]
    venv = os.path.join(dist, "venv")
    session.run("python", "-m", "venv", venv)
    python = os.path.join(venv, "bin", "python")
    session.run(
        python, "-m", "pip", "install", "--quiet", os.path.join(dist, wheels[0]), external=True
    )
    session.run(python, "-m", "cosinekit", external=True)


@nox.session(python=BACKEND_PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with the peers; writes JSON and a PNG plot."""
    session.install(
        "-e",
        ".",
        *BACKEND_DEPS["torch"],
        *BACKEND_DEPS["jax"],
        "scipy",
        "scikit-learn",
        "torchmetrics",
        "matplotlib",
        "faiss-cpu",  # the reference of the search benchmark (a peer, not a dependency)
        "dask[array,distributed]",
    )
    search_only = ("--dask", "--skip-memory")
    session.run(
        "python",
        "benchmarks/run.py",
        *[arg for arg in session.posargs if not arg.startswith(search_only)],
    )
    # Search memory at scale; add --dask for the cluster run (minutes).
    session.run("python", "benchmarks/search.py", *session.posargs)
    # Gradient caching's memory (peak RSS per step, XLA's temporary buffers).
    session.run("python", "benchmarks/training_memory.py", *session.posargs)
