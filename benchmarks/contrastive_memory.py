"""Memory of a contrastive training step, dense and tiled, per batch size.

For each library (eager PyTorch, ``jax.jit(jax.grad)``), each loss
(``info_nce_loss``, its symmetric form, ``ntxent_loss``), each batch size
``n`` (``n`` queries and ``n`` keys, or ``n`` embeddings, of 64 float32
features) and each form (``block_size=None``, the automatic tiles, and
``block_size=n``, the dense matrix), one child process builds the inputs,
runs the step once at a small size (imports, caches; JAX compiles the step),
resets its peak resident memory (``/proc/self/clear_refs``), runs the step
and reports the peak beyond what it held before: the extra memory of the
forward and backward, gradients included.

The bars (issue 20): at ``n = 32768`` the tiled step needs at most 768 MiB
on PyTorch and 1 GiB under ``jax.jit(jax.grad)``, for all three losses. The
dense form is run up to ``n = 16384`` only (it needs about 12 GiB at 32768).

Run ``python benchmarks/contrastive_memory.py`` (minutes; ``--quick`` for
small sizes), which writes ``benchmarks/results/contrastive-memory.json``
and the plot ``docs/_static/contrastive_memory.png``; ``--plot`` redraws the
plot from the JSON. Runs one child at a time: on a shared machine two large
steps at once would measure each other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "contrastive-memory.json"
PLOT = ROOT / "docs" / "_static" / "contrastive_memory.png"
FEATURES = 64
SIZES = {"full": [4096, 8192, 16384, 32768], "quick": [256, 512]}
DENSE_UP_TO = {"full": 16384, "quick": 512}
BARS_MIB = {"torch": 768, "jax": 1024}
LOSSES = ("info_nce", "info_nce symmetric", "ntxent")

CHILD = textwrap.dedent(
    """
    import os, sys
    library, loss, block = sys.argv[1], sys.argv[2], sys.argv[5]
    n, d = int(sys.argv[3]), int(sys.argv[4])
    block = None if block == "auto" else int(block)
    import numpy as np
    import cosinekit as ck

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024

    def call(a, b, labels):
        if loss == "ntxent":
            return ck.ntxent_loss(a, labels, temperature=0.1, block_size=block)
        return ck.info_nce_loss(a, b, temperature=0.1, symmetric=loss.endswith("symmetric"),
                                block_size=block)

    rng = np.random.default_rng(0)
    q = rng.standard_normal((n, d), dtype=np.float32)
    k = rng.standard_normal((n, d), dtype=np.float32)
    labels = np.concatenate([np.arange(n // 2), np.arange(n - n // 2)])
    if library == "torch":
        import torch
        q, k, labels = torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(labels)
        small = torch.randn(64, d)
        def step(a, b, lab):
            a, b = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
            call(a, b, lab).backward()
            return a.grad, b.grad
        step(small, small, labels[:64])
        run = lambda: step(q, k, labels)
    else:
        import jax, jax.numpy as jnp
        q, k, labels = jnp.asarray(q), jnp.asarray(k), jnp.asarray(labels)
        grad = jax.jit(jax.grad(call, argnums=(0, 1)))
        compiled = grad.lower(q, k, labels).compile()
        run = lambda: jax.block_until_ready(compiled(q, k, labels))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS:")
    run()
    print((status("VmHWM:") - before) / 2**20)
    """
)


def measure(library: str, loss: str, n: int, block: str) -> float:
    """Peak extra MiB of one training step, measured in a child process."""
    environment = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, library, loss, str(n), str(FEATURES), block],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{library} {loss} n={n} {block}: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def run(quick: bool) -> list[dict[str, object]]:
    size = "quick" if quick else "full"
    rows = []
    for library in ("torch", "jax"):
        for loss in LOSSES:
            for n in SIZES[size]:
                forms = {"tiled": "auto"}
                if n <= DENSE_UP_TO[size]:
                    forms["dense"] = str(n)
                for form, block in forms.items():
                    mib = measure(library, loss, n, block)
                    print(f"{library:5s} {loss:18s} n={n:6d} {form:5s} {mib:9.1f} MiB", flush=True)
                    rows.append(
                        {"library": library, "loss": loss, "n": n, "form": form, "mib": mib}
                    )
    return rows


def report(rows: list[dict[str, object]]) -> bool:
    """The bars at the largest size measured: True if all are met."""
    largest = max(int(str(r["n"])) for r in rows)
    met = True
    for row in rows:
        if row["n"] == largest and row["form"] == "tiled":
            bar = BARS_MIB[str(row["library"])]
            ok = float(str(row["mib"])) <= bar
            met &= ok
            print(
                f"{row['library']} {row['loss']} n={largest}: {float(str(row['mib'])):.0f} MiB "
                f"(bar {bar} MiB): {'met' if ok else 'NOT met'}"
            )
    return met


def plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    styles = {"info_nce": "o", "info_nce symmetric": "s", "ntxent": "^"}
    for axis, library in zip(axes, ("torch", "jax"), strict=True):
        for loss, marker in styles.items():
            for form, line in (("dense", "--"), ("tiled", "-")):
                points = sorted(
                    (int(str(r["n"])), float(str(r["mib"])))
                    for r in rows
                    if r["library"] == library and r["loss"] == loss and r["form"] == form
                )
                if points:
                    xs, ys = zip(*points, strict=True)
                    axis.plot(xs, ys, line, marker=marker, label=f"{loss}, {form}")
        axis.axhline(BARS_MIB[library], color="grey", linewidth=0.8)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("batch size n (n x n logits, 64 features, float32)")
        title = "PyTorch eager" if library == "torch" else "JAX jit(grad)"
        axis.set_title(f"{title}: forward + backward")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("peak extra memory (MiB)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--plot", action="store_true", help="redraw the plot from the JSON")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.plot:
        rows = json.loads(args.output.read_text())["rows"]
    else:
        rows = run(args.quick)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            json.dumps({"features": FEATURES, "dtype": "float32", "rows": rows}, indent=1)
        )
    met = report(rows)
    if not args.quick:
        plot(rows, PLOT)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
