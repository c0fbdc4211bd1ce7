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

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# The CPU wheel of torch on this machine's disk is built for CPython 3.11.
BACKEND_PYTHON = "3.11"

TEST_DEPS = [
    "pytest>=8",
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


def _run_tests(session: nox.Session, backends: list[str], device: str = "cpu") -> None:
    unknown = [b for b in backends if b not in BACKEND_DEPS]
    if unknown:
        session.error(f"unknown backends {unknown}; choose from {sorted(BACKEND_DEPS)}")
    if (device != "cpu" or "cupy" in backends) and not _gpu_present():
        session.skip(f"{','.join(backends)} on {device} needs an NVIDIA GPU; none is present")
    session.install("-e", ".", *TEST_DEPS)
    for backend in backends:
        if BACKEND_DEPS[backend]:
            session.install(*BACKEND_DEPS[backend])
    if session.python == BACKEND_PYTHON and "torch" not in backends:
        # PyTorch is a reference implementation in the tests of every
        # backend; its CPU wheel here exists for CPython 3.11 only, so the
        # numpy sessions on other Pythons skip those comparisons (saying so).
        session.install(*BACKEND_DEPS["torch"])
    if session.python == BACKEND_PYTHON:
        # pytorch-metric-learning is the NT-Xent reference. Without its
        # dependencies, so that pip can never replace the torch above; tqdm
        # is the one it imports that the test dependencies lack.
        session.install("--no-deps", "pytorch-metric-learning", "tqdm")
    env = {"COSINEKIT_BACKENDS": ",".join(backends), "COSINEKIT_DEVICE": device}
    session.run("pytest", *session.posargs, env=env)


@nox.session(python=PYTHONS)
def numpy(session: nox.Session) -> None:
    """Tests on NumPy, on every supported Python, plus the docstring examples."""
    _run_tests(session, ["numpy"])
    doctests = ["--doctest-modules", "src/cosinekit", "-p", "no:cacheprovider"]
    if session.python != BACKEND_PYTHON:
        # cosinekit.torch and the autograd Functions import torch, whose CPU
        # wheel here is for 3.11 only; their examples run in the 3.11 session.
        doctests += [
            "--ignore=src/cosinekit/torch.py",
            "--ignore=src/cosinekit/_lib/_strategy/_torch_autograd.py",
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
    _run_tests(session, ["array_api_strict", "array_api_strictest"])


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
