"""What each public function supports: one table, read by the docs and the tests.

In the spirit of SciPy's ``xp_capabilities``: the backends table of the docs
(``docs/conf.py``) and the parametrization of the contract tests
(``tests/_support.py``) are generated from `CAPABILITIES`, so that a new
function joins every contract test by being added here, and a test fails
while a public function is missing from the table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ALL_BACKENDS", "CAPABILITIES", "Capabilities", "Dask", "Shape"]

#: Every array library cosinekit is tested on, as named in ``COSINEKIT_BACKENDS``.
ALL_BACKENDS = ("numpy", "torch", "jax", "cupy", "dask", "array_api_strict")


class Shape(enum.Enum):
    """What a function's result shape depends on."""

    #: Fixed by the input shapes: runs under every trace (``jax.jit``,
    #: ``torch.compile`` with ``fullgraph=True``, ``torch.func``) and on every
    #: device without reading a value.
    FIXED = "fixed"
    #: Depends on the values (a number of pairs, communities): eager only. On
    #: an accelerator its counts are read (a device synchronization); under
    #: ``jax.jit`` and ``torch.func`` a ``TypeError``; under ``torch.compile``
    #: a graph break that runs eagerly (``fullgraph=True`` fails there).
    VALUES = "values"


class Dask(enum.Enum):
    """What a function does with Dask arrays."""

    LAZY = "lazy"  # a lazy result of known shape; nothing computed
    LAZY_UNKNOWN_LENGTH = "lazy, unknown length"  # lazy, with NaN in the shape
    COMPUTED = "computed"  # computed on the call, returned as Dask arrays
    NONE = "no"  # the function is not for Dask arrays (one library only)


@dataclass(frozen=True)
class Capabilities:
    """What one public function supports.

    ``arrays`` names its array arguments, positional first, in order;
    ``differentiable`` those with a gradient (a float array may still be
    piecewise constant, as a target or labels). ``module`` is where it is
    imported from.
    """

    arrays: tuple[str, ...]
    differentiable: tuple[str, ...]
    shape: Shape = Shape.FIXED
    dask: Dask = Dask.LAZY
    backends: tuple[str, ...] = ALL_BACKENDS
    module: str = "cosinekit"

    @property
    def traceable(self) -> bool:
        """Whether it runs under ``jax.jit``, ``torch.func`` and a full-graph ``torch.compile``."""
        return self.shape is Shape.FIXED


_ROW_WISE = Capabilities(
    arrays=("x1", "x2", "feature_weights"), differentiable=("x1", "x2", "feature_weights")
)
_SEARCH = Capabilities(arrays=("queries", "keys"), differentiable=("queries", "keys"))

CAPABILITIES: dict[str, Capabilities] = {
    "l2_normalize": Capabilities(arrays=("x",), differentiable=("x",)),
    "cosine_similarity": _ROW_WISE,
    "cosine_distance": _ROW_WISE,
    "angular_distance": _ROW_WISE,
    "cosine_distance_loss": Capabilities(
        arrays=("labels", "predictions", "weights"),
        differentiable=("labels", "predictions", "weights"),
    ),
    "cosine_embedding_loss": Capabilities(
        arrays=("x1", "x2", "target"), differentiable=("x1", "x2")
    ),
    "pairwise_cosine_similarity": Capabilities(arrays=("x", "y"), differentiable=("x", "y")),
    "pairwise_cosine_distance": Capabilities(arrays=("x", "y"), differentiable=("x", "y")),
    "cosine_topk": _SEARCH,
    "cosine_range_search": Capabilities(
        arrays=("queries", "keys"),
        differentiable=("queries", "keys"),
        shape=Shape.VALUES,
        dask=Dask.LAZY_UNKNOWN_LENGTH,
    ),
    "info_nce_loss": Capabilities(
        arrays=("queries", "keys", "labels", "temperature"),
        differentiable=("queries", "keys", "temperature"),
    ),
    "ntxent_loss": Capabilities(
        arrays=("embeddings", "labels", "temperature"),
        differentiable=("embeddings", "temperature"),
    ),
    "cosent_loss": Capabilities(
        arrays=("x1", "x2", "scores", "scale"), differentiable=("x1", "x2", "scale")
    ),
    "cosine_triplet_loss": Capabilities(
        arrays=("anchor", "positive", "negative"),
        differentiable=("anchor", "positive", "negative"),
    ),
}
