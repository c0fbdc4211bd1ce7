"""PyTorch modules for every cosinekit loss, gradient caching, and a differentiable all-gather.

Importable only where torch is installed (``import cosinekit`` itself never
imports torch). Each module calls the cosinekit function of the same loss
with its keyword arguments fixed at construction, so it computes exactly
what the function computes, and works under ``torch.compile``.

`all_gather` concatenates a tensor's rows from every process of a
``torch.distributed`` group, with the gradient flowing back to each process,
so that a loss can see negatives from every process. `cached_backward`
trains an encoder with any of them (or any loss on
embeddings) at a batch size whose activations would not fit at once
(GradCache).

Examples
--------
>>> import torch
>>> from cosinekit.torch import InfoNCELoss
>>> loss_fn = InfoNCELoss(temperature=0.07, learn_temperature=True)
>>> queries, keys = torch.randn(8, 16), torch.randn(8, 16)
>>> loss = loss_fn(queries, keys)
>>> loss.backward()
>>> loss_fn.log_inverse_temperature.grad is not None
True

"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._contrastive import cosent_loss, cosine_triplet_loss, info_nce_loss, ntxent_loss
from ._losses import cosine_distance_loss, cosine_embedding_loss
from ._torch_distributed import all_gather
from ._torch_cache import cached_backward

__all__ = [
    "CoSENTLoss",
    "CosineDistanceLoss",
    "CosineEmbeddingLoss",
    "CosineTripletLoss",
    "InfoNCELoss",
    "NTXentLoss",
    "all_gather",
    "cached_backward",
]

Tensor = Any

#: The largest inverse temperature a learned one may reach, as CLIP's clamp.
MAX_INVERSE_TEMPERATURE = 100.0


class _Loss(torch.nn.Module):
    """A loss with its keyword arguments fixed at construction."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options

    def extra_repr(self) -> str:
        """The fixed keyword arguments, for ``repr``."""
        return ", ".join(f"{name}={value!r}" for name, value in self.options.items())


class CosineDistanceLoss(_Loss):
    """`cosinekit.cosine_distance_loss` as a module (TensorFlow's loss, made safe).

    Parameters
    ----------
    axis, reduction, assume_normalized, eps
        As in `cosinekit.cosine_distance_loss`; ``forward(labels,
        predictions, weights=None)`` takes the per-example weights.

    """

    def __init__(
        self,
        *,
        axis: int = -1,
        reduction: str = "sum_by_nonzero_weights",
        assume_normalized: bool = False,
        eps: float | None = None,
    ) -> None:
        super().__init__(
            axis=axis, reduction=reduction, assume_normalized=assume_normalized, eps=eps
        )

    def forward(
        self, labels: Tensor, predictions: Tensor, weights: Tensor | float | None = None
    ) -> Tensor:
        """The loss of ``labels`` and ``predictions``."""
        return cosine_distance_loss(labels, predictions, weights=weights, **self.options)


class CosineEmbeddingLoss(_Loss):
    """`cosinekit.cosine_embedding_loss` as a module (``nn.CosineEmbeddingLoss``, made safe).

    Parameters
    ----------
    margin, axis, reduction, eps
        As in `cosinekit.cosine_embedding_loss`.

    """

    def __init__(
        self,
        *,
        margin: float = 0.0,
        axis: int = -1,
        reduction: str = "mean",
        eps: float | None = None,
    ) -> None:
        super().__init__(margin=margin, axis=axis, reduction=reduction, eps=eps)

    def forward(self, x1: Tensor, x2: Tensor, target: Tensor) -> Tensor:
        """The loss of the pairs ``(x1, x2)`` with ``target`` 1 or -1."""
        return cosine_embedding_loss(x1, x2, target, **self.options)


class InfoNCELoss(_Loss):
    """`cosinekit.info_nce_loss` as a module, with an optional learned temperature.

    Parameters
    ----------
    temperature : float, optional
        The temperature, or with ``learn_temperature`` its initial value.
        Default 0.05.
    learn_temperature : bool, optional
        Hold one parameter, ``log_inverse_temperature`` (CLIP's
        ``logit_scale``), initialized to ``log(1 / temperature)``. Before
        every forward pass it is clamped in place to at most
        ``log(100)``, so that ``1 / temperature <= 100`` as CLIP does after
        each optimizer step; clamped there (not only in the forward value)
        the gradient keeps flowing, and ``state_dict`` saves the clamped
        value. It needs ``temperature >= 0.01``.
    symmetric, reduction, eps
        As in `cosinekit.info_nce_loss`; ``forward(queries, keys,
        labels=None)`` takes the labels.

    Examples
    --------
    >>> import torch
    >>> from cosinekit.torch import InfoNCELoss
    >>> loss_fn = InfoNCELoss(temperature=0.07, learn_temperature=True, symmetric=True)
    >>> round(loss_fn.temperature, 4)
    0.07
    >>> list(loss_fn.state_dict())
    ['log_inverse_temperature']

    """

    def __init__(
        self,
        temperature: float = 0.05,
        learn_temperature: bool = False,
        *,
        symmetric: bool = False,
        reduction: str = "mean",
        eps: float | None = None,
    ) -> None:
        super().__init__(symmetric=symmetric, reduction=reduction, eps=eps)
        if not (math.isfinite(temperature) and temperature > 0):
            msg = f"temperature must be a positive finite number, got {temperature!r}"
            raise ValueError(msg)
        self.learn_temperature = learn_temperature
        if learn_temperature:
            if 1 / temperature > MAX_INVERSE_TEMPERATURE:
                msg = (
                    f"a learned temperature is clamped to >= {1 / MAX_INVERSE_TEMPERATURE}; "
                    f"got {temperature!r}"
                )
                raise ValueError(msg)
            self.log_inverse_temperature = torch.nn.Parameter(
                torch.tensor(math.log(1 / temperature))
            )
        else:
            self.fixed_temperature = temperature

    @property
    def temperature(self) -> float:
        """The temperature in use, as a Python float (clamped where learned)."""
        if not self.learn_temperature:
            return self.fixed_temperature
        cap = math.log(MAX_INVERSE_TEMPERATURE)
        return math.exp(-min(float(self.log_inverse_temperature.detach()), cap))

    def forward(self, queries: Tensor, keys: Tensor, labels: Tensor | None = None) -> Tensor:
        """The InfoNCE loss of ``queries`` against ``keys``."""
        if self.learn_temperature:
            with torch.no_grad():
                self.log_inverse_temperature.clamp_(max=math.log(MAX_INVERSE_TEMPERATURE))
            temperature = torch.exp(-self.log_inverse_temperature)
        else:
            temperature = self.fixed_temperature
        return info_nce_loss(queries, keys, temperature=temperature, labels=labels, **self.options)

    def extra_repr(self) -> str:
        """The constructor's arguments, for ``repr``."""
        learned = f"learn_temperature={self.learn_temperature}"
        if not self.learn_temperature:
            learned = f"temperature={self.fixed_temperature!r}, {learned}"
        return f"{learned}, {super().extra_repr()}"


class NTXentLoss(_Loss):
    """`cosinekit.ntxent_loss` as a module (SimCLR's NT-Xent).

    Parameters
    ----------
    temperature, eps
        As in `cosinekit.ntxent_loss`.

    """

    def __init__(self, temperature: float = 0.07, *, eps: float | None = None) -> None:
        super().__init__(temperature=temperature, eps=eps)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of ``embeddings`` grouped by ``labels``."""
        return ntxent_loss(embeddings, labels, **self.options)


class CoSENTLoss(_Loss):
    """`cosinekit.cosent_loss` as a module.

    Parameters
    ----------
    scale, axis, eps
        As in `cosinekit.cosent_loss`.

    """

    def __init__(self, scale: float = 20.0, *, axis: int = -1, eps: float | None = None) -> None:
        super().__init__(scale=scale, axis=axis, eps=eps)

    def forward(self, x1: Tensor, x2: Tensor, scores: Tensor) -> Tensor:
        """The loss of the pairs ``(x1, x2)`` with gold ``scores``."""
        return cosent_loss(x1, x2, scores, **self.options)


class CosineTripletLoss(_Loss):
    """`cosinekit.cosine_triplet_loss` as a module.

    Parameters
    ----------
    margin, swap, axis, reduction, eps
        As in `cosinekit.cosine_triplet_loss`.

    """

    def __init__(
        self,
        margin: float = 1.0,
        *,
        swap: bool = False,
        axis: int = -1,
        reduction: str = "mean",
        eps: float | None = None,
    ) -> None:
        super().__init__(margin=margin, swap=swap, axis=axis, reduction=reduction, eps=eps)

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        """The loss of the triplets."""
        return cosine_triplet_loss(anchor, positive, negative, **self.options)
