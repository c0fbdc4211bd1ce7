"""Gradient caching's memory: a training step's peak, plain and cached.

The time of the same steps is the ``training_memory`` topic of
``benchmarks/run.py``; this script measures what that harness does not, on
the encoder and sizes of that topic (``benchmarks/topics/training_memory.py``):

* PyTorch (eager): the peak extra resident memory of one training step, in
  a fresh process per step (``/proc/self/status`` ``VmHWM`` after resetting
  it through ``/proc/self/clear_refs``; Linux only), after a warm-up step so
  that parameter gradients and thread pools exist already. glibc is told to
  return every block above 128 KiB to the system when freed
  (``MALLOC_MMAP_THRESHOLD_``), so that the resident size follows what is
  alive. Steps: the plain step, ``cached_backward``, the loss alone (its
  forward and backward on the whole batch's embeddings, no encoder) and,
  where installed and not ``--quick``, sentence-transformers'
  ``CachedMultipleNegativesRankingLoss``.
* JAX (``jit``): XLA's temporary buffers of the compiled step
  (``memory_analysis().temp_size_in_bytes``), plain, cached and the loss
  alone.

The cached step's peak is the loss's own peak plus about one slice of
activations: with InfoNCE that is its ``n x n`` logits and their gradient.

Next to them, the size of the encoder's activations for the whole batch
(``2 roles x rows x (features + 4 x hidden)`` floats: the inputs of the
three linear layers and of the two GELUs) and for one slice of one role.

Run ``python benchmarks/training_memory.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

THREADS = "1"
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, THREADS)

from benchmarks.topics.training_memory import (  # noqa: E402 (after the thread settings)
    FULL,
    QUICK,
    TEMPERATURE,
    Sizes,
    jax_encode,
    jax_params,
    jax_steps,
    torch_encoder,
    torch_steps,
)

MiB = 2**20
# The loss and its backward on the whole batch's embeddings, without the encoder.
LOSS_ALONE = "loss alone"


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    msg = f"{field} not in /proc/self/status"
    raise RuntimeError(msg)


def _torch_child(sizes: Sizes, step_name: str) -> int:
    """Peak extra resident bytes of one step, measured in this (fresh) process."""
    import gc

    import numpy as np
    import torch

    torch.set_num_threads(int(THREADS))
    encoder = torch_encoder(sizes)
    rng = np.random.default_rng(3)
    a, b = (
        torch.from_numpy(rng.standard_normal((sizes.rows, sizes.features), dtype=np.float32))
        for _ in range(2)
    )
    if step_name == LOSS_ALONE:
        import cosinekit.torch as ckt

        with torch.no_grad():
            a, b = encoder(a).requires_grad_(), encoder(b).requires_grad_()
        loss_fn = ckt.InfoNCELoss(temperature=TEMPERATURE)

        def step(x: Any, y: Any) -> Any:
            return loss_fn(x, y).backward()

    else:
        step = torch_steps(sizes, encoder, peers=sizes is FULL)[step_name]
    step(a, b)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status("VmRSS")
    step(a, b)
    return _status("VmHWM") - before


def torch_memory(sizes: Sizes) -> dict[str, int]:
    """Each step's peak extra RSS, one fresh process each."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    peaks = {}
    encoder = torch_encoder(sizes)
    for name in [*torch_steps(sizes, encoder, peers=sizes is FULL), LOSS_ALONE]:
        argv = [
            sys.executable,
            __file__,
            "--child",
            name,
            *(["--quick"] if sizes is QUICK else []),
        ]
        completed = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
        peaks[name] = json.loads(completed.stdout.strip().splitlines()[-1])
    return peaks


def jax_memory(sizes: Sizes) -> dict[str, int]:
    """XLA's temporary bytes of each jitted step."""
    import jax
    import numpy as np

    import cosinekit as ck

    def loss_fn(x: Any, y: Any) -> Any:
        return ck.info_nce_loss(x, y, temperature=TEMPERATURE)

    params = jax_params(sizes)
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal((sizes.rows, sizes.features), dtype=np.float32) for _ in range(2))
    steps = jax_steps(sizes)
    embeddings = [jax_encode(params, x) for x in (a, b)]

    def loss_alone(params: Any, x: Any, y: Any) -> Any:
        return jax.value_and_grad(loss_fn, argnums=(0, 1))(x, y)

    temporary = {}
    for name, step, arguments in (
        ("plain", steps["plain"], (params, a, b)),
        ("cached", steps["cached"], (params, a, b)),
        (LOSS_ALONE, loss_alone, (params, *embeddings)),
    ):
        analysis = jax.jit(step).lower(*arguments).compile().memory_analysis()
        temporary[name] = int(analysis.temp_size_in_bytes)
    return temporary


def activations(sizes: Sizes, rows: int) -> int:
    """The encoder's saved activations for ``rows`` rows, float32."""
    return rows * (sizes.features + 4 * sizes.hidden) * 4


def _row(library: str, measure: str, values: dict[str, int], peer: str) -> str:
    plain, cached, alone = (values[k] / MiB for k in ("plain", "cached", LOSS_ALONE))
    return (
        f"| {library} | {measure} | {plain:.1f} MiB | {cached:.1f} MiB | {alone:.1f} MiB "
        f"| {peer} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.child:
        print(json.dumps(_torch_child(sizes, args.child)))
        return 0
    whole, one_slice = activations(sizes, 2 * sizes.rows), activations(sizes, sizes.chunk)
    print(f"encoder {sizes.label()}, float32")
    print(
        f"encoder activations: whole batch {whole / MiB:.1f} MiB, "
        f"one slice of one role {one_slice / MiB:.2f} MiB\n"
    )
    print(
        "| library | measure | plain step | cached step | the loss alone | peer |\n"
        "| --- | --- | ---: | ---: | ---: | ---: |"
    )
    peaks = torch_memory(sizes)
    known = {"plain", "cached", LOSS_ALONE}
    peer = next((f"{v / MiB:.1f} MiB ({k})" for k, v in peaks.items() if k not in known), "-")
    print(_row("PyTorch eager", "peak extra RSS", peaks, peer))
    try:
        temporary = jax_memory(sizes)
    except ImportError:
        return 0
    print(_row("JAX jit", "XLA temporary buffers", temporary, "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
