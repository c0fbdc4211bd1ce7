"""The call table of the transform matrix: one `Row` per way to call a public function.

A row names the function, builds the inputs of its array arguments (by
their names in the capability table) and holds its other options; the
float64 reference with the same signature is in `_references`. Adding a
public function means adding its rows here (`ROWS`): the matrix in
``test_transforms.py`` fails until every function of the capability table
has rows that pass every one of its array arguments, and the fresh-process
compile cases (``test_first_call.py``) take their calls from here too.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

import _references
from cosinekit._lib._capabilities import CAPABILITIES, Capabilities

Array = Any
Inputs = Callable[[np.random.Generator], dict[str, np.ndarray]]


def _embeddings(rng: np.random.Generator, n: int, d: int = 5) -> np.ndarray:
    """``n`` rows of ``d`` features; row 1 is zero and row 2 of magnitude 1e-200."""
    x = rng.standard_normal((n, d))
    x[1] = 0.0
    x[2] *= 1e-200
    return x


def _plain(rng: np.random.Generator, n: int, d: int = 5) -> np.ndarray:
    return rng.standard_normal((n, d))


def _temperature(rng: np.random.Generator) -> np.ndarray:
    return np.asarray(rng.uniform(0.15, 0.3))


@dataclass(frozen=True)
class Row:
    """One way to call a public function: its array inputs and its options.

    ``inputs(rng)`` gives every array argument the row passes (by name, as
    in the capability table); ``options`` are the other keyword arguments.
    The function is called as the signature wants it: the positional-only
    arrays by position, the rest by keyword; `_references` has the same
    signature. Gradients are those of the sum of the floating outputs, so
    a row's inputs must give no NaN (no padding, say) and stay clear of
    kinks (a hinge, a threshold, a tie) by more than the finite
    differences' step.
    """

    function: str
    inputs: Inputs
    options: dict[str, Any] = field(default_factory=dict)
    variant: str = ""
    rtol: float = 1e-12
    atol: float = 1e-13

    @property
    def id(self) -> str:
        return f"{self.function}-{self.variant}" if self.variant else self.function

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES[self.function]

    def values(self, seed: int = 0) -> dict[str, np.ndarray]:
        return self.inputs(np.random.default_rng(seed))

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values())

    @property
    def public(self) -> Callable[..., Any]:
        """The public function."""
        module = importlib.import_module(self.capabilities.module)
        return getattr(module, self.function)  # type: ignore[no-any-return]

    def caller(self, *, reference: bool = False) -> Callable[[dict[str, Any]], Any]:
        """The public function (or its reference) as a function of the arrays by name.

        The signature is read here, once, so that the returned function is
        plain enough for Dynamo to trace.
        """
        public = self.public
        function = getattr(_references, self.function) if reference else public
        positional = [
            p.name
            for p in inspect.signature(public).parameters.values()
            if p.kind is inspect.Parameter.POSITIONAL_ONLY
        ]
        # A positional-only number (a threshold) is an option given by position.
        options = {n: v for n, v in self.options.items() if n not in positional}
        given = {n: v for n, v in self.options.items() if n in positional}

        def invoke(arrays: dict[str, Any]) -> Any:
            args = [
                arrays[name] if name in arrays else given[name]
                for name in positional
                if name in arrays or name in given
            ]
            keywords = {name: a for name, a in arrays.items() if name not in positional}
            return function(*args, **keywords, **options)

        return invoke

    def call(self, arrays: dict[str, Any]) -> Any:
        return self.caller()(arrays)

    def reference(self, values: dict[str, np.ndarray]) -> Any:
        return self.caller(reference=True)(values)

    def differentiable(self, traced: Sequence[str]) -> tuple[int, ...]:
        """The indices in ``traced`` of the arguments with a gradient."""
        return tuple(i for i, n in enumerate(traced) if n in self.capabilities.differentiable)


def _pair(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"x1": _embeddings(rng, 4), "x2": _plain(rng, 4)}


def _weighted_pair(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {**_pair(rng), "feature_weights": rng.uniform(0.5, 2.0, 5)}


def _search(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"queries": _embeddings(rng, 4), "keys": _plain(rng, 6)}


def _info_nce(rng: np.random.Generator, m: int = 6) -> dict[str, np.ndarray]:
    return {
        "queries": _embeddings(rng, 4),
        "keys": _plain(rng, m),
        "temperature": _temperature(rng),
    }


CONTRASTIVE = {"rtol": 1e-11, "atol": 1e-12}

#: Adding a row is one entry. Every public function needs at least one, and
#: together its rows pass every array argument of the capability table.
ROWS: list[Row] = [
    Row("l2_normalize", lambda rng: {"x": _embeddings(rng, 4)}),
    # A function's first row without a variant is its plain row, the one
    # that runs where a transform is not run on every row (test_transforms).
    *(
        Row(name, _weighted_pair)
        for name in ("cosine_similarity", "cosine_distance", "angular_distance")
    ),
    *(
        Row(name, _pair, variant="unweighted")
        for name in ("cosine_similarity", "cosine_distance", "angular_distance")
    ),
    Row(
        "cosine_distance_loss",
        lambda rng: {
            "labels": _embeddings(rng, 4),
            "predictions": _plain(rng, 4),
            "weights": rng.uniform(0.5, 2.0, 4),
        },
    ),
    Row(
        "cosine_distance_loss",
        lambda rng: {"labels": _embeddings(rng, 4), "predictions": _plain(rng, 4)},
        variant="unweighted",
    ),
    Row(
        "cosine_embedding_loss",
        lambda rng: {**_pair(rng), "target": rng.permutation([1.0, -1.0, -1.0, 1.0])},
        options={"margin": 0.1},
    ),
    Row("pairwise_cosine_similarity", lambda rng: {"x": _embeddings(rng, 4), "y": _plain(rng, 3)}),
    Row("pairwise_cosine_distance", lambda rng: {"x": _embeddings(rng, 4), "y": _plain(rng, 3)}),
    Row("cosine_topk", _search, options={"k": 2}),
    Row("cosine_range_search", _search, options={"threshold": 0.3}),
    Row(
        "cosine_similar_pairs", lambda rng: {"x": _embeddings(rng, 6)}, options={"threshold": 0.2}
    ),
    Row(
        "cosine_communities",
        lambda rng: {"x": _embeddings(rng, 8)},
        options={"threshold": 0.3, "min_size": 2},
    ),
    Row(
        "mine_hard_negatives",
        lambda rng: {**_search(rng), "positives": rng.integers(0, 6, 4)},
        options={"k": 2, "rank_range": (1, 5)},  # 5 candidates: no padding
    ),
    Row("info_nce_loss", _info_nce, **CONTRASTIVE),  # keys past n: extra negatives
    Row(
        "info_nce_loss",
        lambda rng: _info_nce(rng, m=4),
        options={"symmetric": True},
        variant="symmetric",
        **CONTRASTIVE,
    ),
    Row(
        "info_nce_loss",
        lambda rng: {**_info_nce(rng), "labels": rng.integers(0, 6, 4)},
        variant="labels",
        **CONTRASTIVE,
    ),
    Row(
        "info_nce_loss",
        lambda rng: {**_info_nce(rng), "positive_offset": np.asarray(rng.integers(0, 3))},
        variant="positive_offset",
        **CONTRASTIVE,
    ),
    Row(
        "ntxent_loss",
        lambda rng: {
            "embeddings": _embeddings(rng, 6),
            "labels": rng.permutation([0, 0, 1, 1, 2, 2]),
            "temperature": _temperature(rng),
        },
        **CONTRASTIVE,
    ),
    Row(
        "cosent_loss",
        lambda rng: {
            "x1": _embeddings(rng, 6),
            "x2": _plain(rng, 6),
            "scores": rng.permutation([3, 9, 1, 3, 5, 7]),  # integers, a tie: no gradient
            "scale": np.asarray(rng.uniform(15.0, 25.0)),
        },
        **CONTRASTIVE,
    ),
    Row(
        "cosine_triplet_loss",
        lambda rng: {
            "anchor": _embeddings(rng, 6),
            "positive": _plain(rng, 6),
            "negative": _plain(rng, 6),
        },
        options={"margin": 0.5, "swap": True},
        **CONTRASTIVE,
    ),
]
