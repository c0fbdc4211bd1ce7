"""Arguments shared by the gradient-caching functions of PyTorch and JAX.

``cosinekit.torch.cached_backward`` and ``cosinekit.jax.cached_value_and_grad``
take the same arguments apart from the array type; what does not depend on
the array library is checked here, so that both raise the same errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from ._validation import _type_name


def role_batches(inputs: object) -> list[Any]:
    """``inputs`` as a list of batches, one per role: a non-empty list or tuple."""
    if not isinstance(inputs, (list, tuple)):
        msg = (
            "inputs must be a list or tuple of batches, one per role (anchors, "
            f"positives, ...), got {_type_name(inputs)}"
        )
        raise TypeError(msg)
    if not inputs:
        msg = "inputs must hold at least one batch"
        raise ValueError(msg)
    return list(inputs)


def per_role(
    functions: object, roles: int, name: str, sequence_types: tuple[type, ...] = (list, tuple)
) -> list[Callable[..., Any]]:
    """One callable per role: ``functions`` itself for every role, or one of a sequence each."""
    if isinstance(functions, sequence_types):
        listed: list[Callable[..., Any]] = list(functions)  # type: ignore[call-overload]
        if len(listed) != roles:
            msg = f"{name} holds {len(listed)} callables but inputs holds {roles} batches"
            raise ValueError(msg)
    elif callable(functions):
        listed = [cast("Callable[..., Any]", functions)] * roles
    else:
        msg = f"{name} must be a callable or a sequence of callables, got {_type_name(functions)}"
        raise TypeError(msg)
    for role, function in enumerate(listed):
        if not callable(function):
            msg = f"{name}[{role}] must be callable, got {_type_name(function)}"
            raise TypeError(msg)
    return listed


def common_rows(sizes: Sequence[tuple[str, int]], role: int) -> int:
    """The batch size of one role: every array of its batch must agree on its first dimension."""
    if len({rows for _, rows in sizes}) > 1:
        listed = ", ".join(f"{where}: {rows}" for where, rows in sizes)
        msg = f"the arrays of inputs[{role}] must share their first dimension, got {listed}"
        raise ValueError(msg)
    return sizes[0][1]


def slice_bounds(rows: int, chunk_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each slice; an empty batch is one empty slice."""
    return [(start, min(start + chunk_size, rows)) for start in range(0, max(rows, 1), chunk_size)]


def checked_embedding(
    embedding: Any, array_type: type[Any], kind: str, role: int, rows: int
) -> Any:
    """The encoder's output for a slice of ``rows`` rows of role ``role``, checked.

    It must be an ``array_type`` (named ``kind`` in the message) with one
    row per input row.
    """
    if not isinstance(embedding, array_type):
        msg = f"the encoder of inputs[{role}] must return {kind}, got {_type_name(embedding)}"
        raise TypeError(msg)
    if embedding.ndim == 0 or embedding.shape[0] != rows:
        msg = (
            f"the encoder of inputs[{role}] returned shape {tuple(embedding.shape)} for a "
            f"slice of {rows} rows; embeddings need one row per input row"
        )
        raise ValueError(msg)
    return embedding
