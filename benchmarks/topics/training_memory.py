"""Gradient caching: a training step with the encoder's activations held one slice at a time.

``cosinekit.torch.cached_backward`` (eager PyTorch) and
``cosinekit.jax.cached_value_and_grad`` (under ``jax.jit``) train an MLP
encoder (256-1024-1024-256, GELU) with InfoNCE on two roles (anchors and
positives) of 1024 rows, in slices of 256 rows (the target) and of 128. The
limit is the plain step on the whole batch
(``loss_fn(encoder(a), encoder(p)).backward()``; ``jax.value_and_grad``),
which holds every activation at once. Caching adds one forward pass of the
encoder without a graph: the floor is the plain step plus that forward,
about 4/3 of it. Beyond the floor, the second pass's backward runs on
slices (weight gradients from matrix products of ``chunk`` rows, added into
the gradient once per slice), which smaller slices make slower. The target
is at most 1.5x. The peer on PyTorch is sentence-transformers'
``CachedMultipleNegativesRankingLoss`` on the same encoder (full runs only:
importing it takes seconds), whose documentation puts it at 2x to 2.4x its
uncached loss on transformers.

The memory side (peak extra RSS on PyTorch, XLA's temporary buffers on JAX)
is ``benchmarks/training_memory.py``: this harness times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.backends import Backend
from benchmarks.harness import Case, Target, Topic, random_array

CASE = "cached encoder step"
TEMPERATURE = 0.05


@dataclass(frozen=True)
class Sizes:
    rows: int  # per role
    features: int
    hidden: int
    embedding: int
    chunk: int

    def label(self) -> str:
        return (
            f"2x{self.rows}, mlp {self.features}-{self.hidden}-{self.hidden}-"
            f"{self.embedding}, chunk {self.chunk}"
        )


FULL = Sizes(rows=1024, features=256, hidden=1024, embedding=256, chunk=256)
# The same batch in slices half as large: more, smaller matrix products.
FINER = dataclasses.replace(FULL, chunk=128)
QUICK = Sizes(rows=64, features=16, hidden=32, embedding=8, chunk=16)


def torch_encoder(sizes: Sizes, device: Any = "cpu") -> Any:
    """The MLP encoder: its activations (``features + 4 * hidden`` per row) dominate."""
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(sizes.features, sizes.hidden),
        nn.GELU(),
        nn.Linear(sizes.hidden, sizes.hidden),
        nn.GELU(),
        nn.Linear(sizes.hidden, sizes.embedding),
    ).to(device)


def torch_steps(sizes: Sizes, encoder: Any, peers: bool) -> dict[str, Callable[..., Any]]:
    """``{"plain", "cached", peer...}``: each a training step ``step(anchors, positives)``."""
    import cosinekit.torch as ckt

    loss_fn = ckt.InfoNCELoss(temperature=TEMPERATURE)

    def plain(a: Any, b: Any) -> Any:
        loss = loss_fn(encoder(a), encoder(b))
        loss.backward()
        return loss.detach()

    def cached(a: Any, b: Any) -> Any:
        return ckt.cached_backward(loss_fn, encoder, [a, b], chunk_size=sizes.chunk)

    steps = {"plain": plain, "cached": cached}
    if peers:
        peer = _sentence_transformers_cached(sizes, encoder)
        if peer is not None:
            steps["sentence-transformers CachedMNRL"] = peer
    return steps


def _sentence_transformers_cached(sizes: Sizes, encoder: Any) -> Callable[..., Any] | None:
    """``CachedMultipleNegativesRankingLoss`` on the same encoder, features ``{"x": rows}``."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
        )
    except ImportError:
        return None

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, features: dict[str, Any]) -> dict[str, Any]:
            features["sentence_embedding"] = self.encoder(features["x"])
            return features

    model = SentenceTransformer(
        modules=[Features()], device=str(next(encoder.parameters()).device)
    )
    loss = CachedMultipleNegativesRankingLoss(
        model, scale=1 / TEMPERATURE, mini_batch_size=sizes.chunk
    )

    def step(a: Any, b: Any) -> Any:
        value = loss([{"x": a}, {"x": b}], None)
        value.backward()
        return value.detach()

    return step


def jax_params(sizes: Sizes) -> dict[str, Any]:
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    shapes = {
        "w1": (sizes.features, sizes.hidden),
        "w2": (sizes.hidden, sizes.hidden),
        "w3": (sizes.hidden, sizes.embedding),
    }
    return {
        name: jnp.asarray(random_array(rng, shape, np.float32) / np.sqrt(shape[0]))
        for name, shape in shapes.items()
    }


def jax_encode(params: dict[str, Any], x: Any) -> Any:
    import jax

    hidden = jax.nn.gelu(x @ params["w1"])
    hidden = jax.nn.gelu(hidden @ params["w2"])
    return hidden @ params["w3"]


def jax_steps(sizes: Sizes) -> dict[str, Callable[..., Any]]:
    """``{"plain", "cached"}``: each a function of ``(params, anchors, positives)``, not jitted."""
    import jax

    import cosinekit as ck
    from cosinekit.jax import cached_value_and_grad

    def loss_fn(a: Any, b: Any) -> Any:
        return ck.info_nce_loss(a, b, temperature=TEMPERATURE)

    def plain(params: Any, a: Any, b: Any) -> Any:
        return jax.value_and_grad(lambda p: loss_fn(jax_encode(p, a), jax_encode(p, b)))(params)

    def cached(params: Any, a: Any, b: Any) -> Any:
        return cached_value_and_grad(loss_fn, jax_encode, params, [a, b], chunk_size=sizes.chunk)

    return {"plain": plain, "cached": cached}


def _inputs(backend: Backend, sizes: Sizes, seed: int) -> Callable[[], tuple[Any, ...]]:
    rng = np.random.default_rng(seed)

    def inputs() -> tuple[Any, ...]:
        shape = (sizes.rows, sizes.features)
        return tuple(backend.array(random_array(rng, shape, np.float32)) for _ in range(2))

    return inputs


def _bind(step: Callable[..., Any], params: Any) -> Callable[..., Any]:
    """``step`` with the parameters fixed: a function of the inputs alone, as cases are."""

    def bound(a: Any, b: Any) -> Any:
        return step(params, a, b)

    return bound


def cases(backend: Backend, quick: bool) -> list[Case]:
    return [
        case for sizes in ((QUICK,) if quick else (FULL, FINER)) for case in _cases(backend, sizes)
    ]


def _cases(backend: Backend, sizes: Sizes) -> list[Case]:
    if backend.library == "torch" and backend.mode == "eager":
        encoder = torch_encoder(sizes, backend.device)
        steps = torch_steps(sizes, encoder, peers=sizes is not QUICK)
    elif backend.library == "jax":
        params = jax_params(sizes)
        steps = {
            name: _bind(backend.compile(step), params) for name, step in jax_steps(sizes).items()
        }
    else:
        return []
    ours, limit = steps.pop("cached"), steps.pop("plain")
    return [
        Case(
            CASE, backend, sizes.label(), "float32", _inputs(backend, sizes, 3), ours, limit, steps
        )
    ]


TARGETS = tuple(
    Target(
        f"cached step within 1.5x of the plain step ({name})",
        CASE,
        backend,
        "x limit",
        1.5,
        at_most=True,
        ambition=1.35,
        shape=FULL.label(),
    )
    for name, backend in (("PyTorch eager", "torch"), ("JAX jit", "jax-jit"))
)

TOPIC = Topic("training_memory", cases, TARGETS)
