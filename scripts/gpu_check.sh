#!/usr/bin/env bash
# The GPU checks on one machine with an NVIDIA GPU, in under 10 minutes:
# nvidia-smi, the cupy, torch_cuda and jax_cuda test sessions, and the
# benchmarks on the GPU backends (benchmarks/run.py names them torch-cuda,
# jax-jit-gpu and cupy; it has no flag to pick the row-wise case alone).
#
#   scripts/gpu_check.sh              # every step
#   scripts/gpu_check.sh cupy bench   # only the steps named
#
# Steps: smi cupy torch_cuda jax_cuda bench. Each step runs even if an
# earlier one failed, so that one run reports everything; the exit status is
# 1 if any step failed. The CUDA builds come from COSINEKIT_TORCH_SPEC,
# COSINEKIT_JAX_SPEC and COSINEKIT_CUPY_SPEC (read by noxfile.py); the
# defaults below are set only where the caller has not set them.
set -uo pipefail
cd "$(dirname "$0")/.."

export COSINEKIT_TORCH_SPEC="${COSINEKIT_TORCH_SPEC:-torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126}"
export COSINEKIT_JAX_SPEC="${COSINEKIT_JAX_SPEC:-jax[cuda12]}"
export COSINEKIT_CUPY_SPEC="${COSINEKIT_CUPY_SPEC:-cupy-cuda12x}"
PYTHON="${PYTHON:-python3}"
ALL_STEPS=(smi cupy torch_cuda jax_cuda bench)

run_step() {
    case "$1" in
        smi) nvidia-smi ;;
        cupy | torch_cuda | jax_cuda) "$PYTHON" -m nox -s "$1" ;;
        bench) "$PYTHON" -m nox -s bench -- --backends torch-cuda,jax-jit-gpu,cupy ;;
        *)
            echo "unknown step '$1'; choose from: ${ALL_STEPS[*]}" >&2
            return 2
            ;;
    esac
}

steps=("$@")
if [ "${#steps[@]}" -eq 0 ]; then
    steps=("${ALL_STEPS[@]}")
fi

# Without a GPU every session would skip and the run would look green.
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU is present (nvidia-smi -L fails); nothing was run" >&2
    exit 1
fi
if ! "$PYTHON" -m nox --version >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet nox || exit 1
fi

failed=()
for step in "${steps[@]}"; do
    echo "::group::gpu_check: $step"
    start=$SECONDS
    if run_step "$step"; then
        echo "gpu_check: $step passed in $((SECONDS - start)) s"
    else
        echo "gpu_check: $step FAILED after $((SECONDS - start)) s"
        failed+=("$step")
    fi
    echo "::endgroup::"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "gpu_check: failed: ${failed[*]}"
    exit 1
fi
echo "gpu_check: all passed: ${steps[*]}"
