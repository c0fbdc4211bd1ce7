"""The reduction of per-example losses, shared by every loss."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ._kernels import safe_divide
from ._validation import known_count

Array = Any

#: TensorFlow's reductions (``cosine_distance_loss``).
WEIGHTED_REDUCTIONS = ("none", "sum", "mean", "sum_over_batch_size", "sum_by_nonzero_weights")
#: PyTorch's reductions (every other loss).
REDUCTIONS = ("none", "sum", "mean")


def reduce_loss(xp: ModuleType, loss: Array, weights: Array | None, reduction: str) -> Array:
    """Reduce per-example ``loss`` (weighted by ``weights``, or all ones) by ``reduction``.

    A zero denominator gives 0, never NaN; a mean over no examples is 0.
    """
    weighted = loss if weights is None else weights * loss
    if reduction == "none":
        return weighted
    total = xp.sum(weighted)
    if reduction == "sum":
        return total
    if reduction == "mean" and weights is not None:
        denominator = xp.sum(weights)
    elif reduction == "sum_by_nonzero_weights" and weights is not None:
        denominator = xp.sum(xp.astype(weights != 0, loss.dtype))
    else:  # sum_over_batch_size, or mean and nonzero count with unit weights
        count = known_count(loss)
        if count is None:  # lazy sizes stay lazy
            denominator = xp.sum(xp.ones_like(loss))
        else:
            # A Python number: no scalar array to copy to the device.
            return total / count if count else xp.zeros_like(total)
    return safe_divide(xp, total, denominator)
