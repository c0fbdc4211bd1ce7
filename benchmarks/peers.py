"""The other libraries' implementations, in tables keyed by ``Backend.library``.

A :data:`PeerTable` maps a library to ``{peer name: factory}``; a factory
imports the peer and returns the function (so a missing optional peer is
skipped, not an error). :func:`resolve` gives the peers present for one
backend, compiled with the backend's ``compile``. A topic with peers of its
own keeps its tables in its own module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from benchmarks.backends import Backend, Fn

PeerTable = Mapping[str, Mapping[str, Callable[[], Fn]]]


def resolve(
    table: PeerTable, backend: Backend, wrap: Callable[[Fn], Fn] | None = None
) -> dict[str, Fn]:
    """The peers of ``backend.library`` in ``table`` that import, each wrapped.

    ``wrap`` defaults to ``backend.compile``; pass ``backend.gradient`` for a
    training step.
    """
    wrap = backend.compile if wrap is None else wrap
    peers = {}
    for name, factory in table.get(backend.library, {}).items():
        try:
            fn = factory()
        except ImportError:
            continue
        peers[name] = wrap(fn)
    return peers


# --- row-wise cosine similarity -----------------------------------------------


def _sklearn_paired_cosine_distances() -> Fn:
    from sklearn.metrics.pairwise import paired_cosine_distances

    return paired_cosine_distances


def _torch_cosine_similarity() -> Fn:
    import torch

    return torch.nn.functional.cosine_similarity


def _optax_cosine_similarity() -> Fn:
    import optax

    return optax.cosine_similarity


ROWWISE: PeerTable = {
    "numpy": {"sklearn paired_cosine_distances": _sklearn_paired_cosine_distances},
    "torch": {"torch F.cosine_similarity": _torch_cosine_similarity},
    "jax": {"optax.cosine_similarity": _optax_cosine_similarity},
}


# --- the cosine-distance loss (mean of 1 - cosine), as a user writes it --------


def _torch_mean_distance() -> Fn:
    import torch

    cosine = torch.nn.functional.cosine_similarity
    return lambda labels, predictions: (1 - cosine(labels, predictions)).mean()


def _optax_cosine_distance() -> Fn:
    import jax.numpy as jnp
    import optax

    return lambda labels, predictions: jnp.mean(optax.losses.cosine_distance(predictions, labels))


MEAN_COSINE_DISTANCE: PeerTable = {
    "torch": {"torch (1 - F.cosine_similarity).mean()": _torch_mean_distance},
    "jax": {"optax.losses.cosine_distance": _optax_cosine_distance},
}


# --- pairwise cosine similarity ------------------------------------------------


def _sklearn_cosine_similarity() -> Fn:
    from sklearn.metrics.pairwise import cosine_similarity

    return cosine_similarity


def _scipy_cdist_cosine() -> Fn:
    from scipy.spatial.distance import cdist

    return lambda x, y: cdist(x, y, metric="cosine")


def _torchmetrics_pairwise() -> Fn:
    from torchmetrics.functional import pairwise_cosine_similarity

    return pairwise_cosine_similarity


PAIRWISE: PeerTable = {
    "numpy": {
        "sklearn cosine_similarity": _sklearn_cosine_similarity,
        "scipy cdist cosine": _scipy_cdist_cosine,
    },
    "torch": {"torchmetrics pairwise_cosine_similarity": _torchmetrics_pairwise},
}
