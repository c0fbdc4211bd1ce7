"""PyTorch modules for every cosinekit loss, gradient caching, and a differentiable all-gather.

Importable only where torch is installed (``import cosinekit`` itself never
imports torch). Each module calls the cosinekit function of the same loss
with its keyword arguments checked and fixed at construction, so it
computes exactly what the function computes, and works under
``torch.compile``. `all_gather` concatenates a tensor's rows from every
process of a ``torch.distributed`` group, with the gradient flowing back to
each process, so that a loss can see negatives from every process;
``InfoNCELoss(gather=True)`` and ``NTXentLoss(gather=True)`` use it and
return each rank's share of the loss of every rank's rows.
`cached_backward` trains an encoder with any of them (or any loss on
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

from ._contrastive import info_nce_loss, ntxent_loss
from ._lib._reduce import REDUCTIONS, WEIGHTED_REDUCTIONS
from ._lib._validation import (
    choice,
    finite_real,
    flag,
    integer,
    positive_integer,
    positive_number,
)
from ._losses import cosine_distance_loss, cosine_embedding_loss
from ._ranking import cosent_loss, cosine_triplet_loss
from ._torch_cache import cached_backward
from ._torch_distributed import all_gather, info_nce_share, ntxent_share

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
_LOG_CAP = math.log(MAX_INVERSE_TEMPERATURE)


def _eps(value: object, name: str) -> float | None:
    return None if value is None else positive_number(value, name)


def _block_size(value: object, name: str) -> int | None:
    return None if value is None else positive_integer(value, name)


# How every constructor checks each of its arguments, by name: the checks
# the functions make, less those that need the inputs' dtype (whether
# 1 / temperature overflows it), which the first call makes.
_CHECKS = {
    "axis": integer,
    "eps": _eps,
    "margin": finite_real,
    "temperature": positive_number,
    "scale": positive_number,
    "assume_normalized": flag,
    "symmetric": flag,
    "swap": flag,
    "learn_temperature": flag,
    "gather": flag,
    "block_size": _block_size,
}


def _checked(name: str, value: object, reductions: tuple[str, ...] = REDUCTIONS) -> Any:
    """``value`` of the constructor argument ``name``, checked (and normalized)."""
    if name == "reduction":
        return choice(value, reductions, name)
    return _CHECKS[name](value, name)


class _Loss(torch.nn.Module):
    """A loss with its keyword arguments checked and fixed at construction."""

    #: The reductions its function takes.
    reductions: tuple[str, ...] = REDUCTIONS

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = {name: _checked(name, v, self.reductions) for name, v in options.items()}

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

    reductions = WEIGHTED_REDUCTIONS

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
        The temperature, a positive Python number, or with
        ``learn_temperature`` its initial value (at least 0.01). Default 0.05.
    learn_temperature : bool, optional
        Hold one parameter, ``log_inverse_temperature`` (CLIP's
        ``logit_scale``), initialized to ``log(1 / temperature)``. The
        forward pass uses ``min(log_inverse_temperature, log(100))``, so that
        ``1 / temperature <= 100`` as CLIP's clamp, and never writes to the
        parameter (nor to a tensor given for it by
        ``torch.func.functional_call`` or stacked by
        ``torch.func.stack_module_state``). Below the bound the gradient is
        exact; at or past it (an optimizer step may carry the parameter past
        it), a gradient that would lower the parameter passes and one that
        would raise it further is 0, so the temperature can always move
        back and the parameter does not drift up. ``.temperature`` and
        ``state_dict`` report the clamped value, the one the next forward
        pass uses (``state_dict(keep_vars=True)`` hands over the parameter
        itself).
    symmetric, reduction, eps, block_size
        As in `cosinekit.info_nce_loss`; ``forward(queries, keys,
        labels=None)`` takes the labels. With ``gather``, ``block_size``
        tiles this rank's queries against the gathered keys.
    gather : bool, optional
        Under an initialized ``torch.distributed`` process group of ``W > 1``
        processes, each rank passes its own batch; the keys of every rank
        (with ``symmetric``, the queries too) are gathered with `all_gather`,
        and this rank's queries are scored against all of them. The
        positive of its ``i``-th query is its own ``i``-th key (its keys
        may hold extra negatives after the positives); explicit ``labels``
        are positions among the gathered keys. The value returned is this
        rank's share of the loss of the concatenated batch: for ``"mean"``,
        ``W / N`` times the sum of its queries' losses (``N`` queries in
        all, 0 when ``N`` is 0), for ``"sum"`` ``W`` times it, so that the
        mean over ranks is the loss of the concatenated batch, whatever the
        ranks' batch sizes, and after ``DistributedDataParallel`` averages
        the gradients every parameter's gradient is that of one process.
        ``"none"`` gives this rank's queries' losses. Every rank must call it
        and backpropagate, as for `all_gather`; a rank with no rows included.
        Without a process group, or with one process, the plain loss.
        Default False.

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
        block_size: int | None = None,
        gather: bool = False,
    ) -> None:
        super().__init__(symmetric=symmetric, reduction=reduction, eps=eps, block_size=block_size)
        temperature = _checked("temperature", temperature)
        self.learn_temperature = _checked("learn_temperature", learn_temperature)
        self.gather = _checked("gather", gather)
        if self.learn_temperature:
            if 1 / temperature > MAX_INVERSE_TEMPERATURE:
                msg = (
                    f"a learned temperature is clamped to >= {1 / MAX_INVERSE_TEMPERATURE}; "
                    f"got {temperature!r}"
                )
                raise ValueError(msg)
            self.log_inverse_temperature = torch.nn.Parameter(
                torch.tensor(math.log(1 / temperature))
            )
            self.register_state_dict_post_hook(_save_clamped)
        else:
            self.fixed_temperature = temperature

    @property
    def temperature(self) -> float:
        """The temperature the next forward pass uses, as a Python float."""
        if not self.learn_temperature:
            return self.fixed_temperature
        return math.exp(-min(float(self.log_inverse_temperature.detach()), _LOG_CAP))

    def forward(self, queries: Tensor, keys: Tensor, labels: Tensor | None = None) -> Tensor:
        """The InfoNCE loss of ``queries`` against ``keys`` (this rank's share with ``gather``)."""
        if self.learn_temperature:
            log_scale = _ClampFromAbove.apply(self.log_inverse_temperature, _LOG_CAP)
            temperature = torch.exp(-log_scale)
        else:
            temperature = self.fixed_temperature
        if self.gather:
            return info_nce_share(queries, keys, labels, temperature=temperature, **self.options)
        return info_nce_loss(queries, keys, temperature=temperature, labels=labels, **self.options)

    def extra_repr(self) -> str:
        """The constructor's arguments, for ``repr``."""
        learned = f"learn_temperature={self.learn_temperature}"
        if not self.learn_temperature:
            learned = f"temperature={self.fixed_temperature!r}, {learned}"
        return f"{learned}, {super().extra_repr()}, gather={self.gather}"


class _ClampFromAbove(torch.autograd.Function):
    """``min(x, high)``, whose gradient never pushes ``x`` further past ``high``.

    Below ``high`` the gradient is the identity; at or above it, a positive
    gradient (gradient descent lowers ``x``, back towards the range) passes
    and a negative one is 0. A plain clamp's gradient, 0 past the bound,
    would leave a parameter stuck there once a step had carried it past; a
    straight-through one would let it drift up without limit, where it
    would have to come back before the value moves. At module level so that
    ``torch.compile`` traces it; ``setup_context`` and the vmap rule serve
    ``torch.func`` (stacked module states under ``vmap``). No forward mode
    (``torch.func.jvp``): Dynamo cannot trace a Function that defines one.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, high: float) -> Tensor:
        return torch.clamp(x, max=high)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, float], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.high = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        outward = (x >= ctx.high) & (grad < 0)
        return torch.where(outward, torch.zeros_like(grad), grad), None


def _save_clamped(
    module: torch.nn.Module, state_dict: dict[str, Any], prefix: str, metadata: Any
) -> None:
    """Save a learned log inverse temperature as the forward pass uses it: clamped."""
    key = prefix + "log_inverse_temperature"
    saved = state_dict.get(key)
    # keep_vars=True hands over the parameter itself: left as it is.
    if saved is not None and saved is not module.log_inverse_temperature:
        state_dict[key] = torch.clamp(saved, max=_LOG_CAP)


class NTXentLoss(_Loss):
    """`cosinekit.ntxent_loss` as a module (SimCLR's NT-Xent).

    Parameters
    ----------
    temperature, eps, block_size
        As in `cosinekit.ntxent_loss`; ``temperature`` a positive Python
        number. With ``gather``, ``block_size`` tiles this rank's anchors
        against the gathered rows.
    gather : bool, optional
        Under an initialized ``torch.distributed`` process group of ``W > 1``
        processes, each rank passes its own embeddings and labels; those of
        every rank are gathered with `all_gather`, and each of this rank's
        rows is an anchor against all of them. Labels are compared across
        ranks: rows with equal labels on different ranks are positives of
        each other, so two views of a rank's items are labelled with global
        ids (the rank's first global item index plus ``arange(n_items)``),
        never with ``arange`` alone. The value returned is ``W / C`` times
        the sum of this rank's anchors' pair losses, ``C`` the number of
        positive pairs of the whole batch (0 when there is none), so that
        the mean over ranks is the loss of the concatenated batch and after
        ``DistributedDataParallel`` averages the gradients every parameter's
        gradient is that of one process. Every rank must call it and
        backpropagate, as for `all_gather`; a rank with no rows included.
        Without a process group, or with one process, the plain loss.
        Default False.

    """

    def __init__(
        self,
        temperature: float = 0.07,
        *,
        eps: float | None = None,
        block_size: int | None = None,
        gather: bool = False,
    ) -> None:
        super().__init__(temperature=temperature, eps=eps, block_size=block_size)
        self.gather = _checked("gather", gather)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of ``embeddings`` grouped by ``labels`` (this rank's share with ``gather``)."""
        if self.gather:
            return ntxent_share(embeddings, labels, **self.options)
        return ntxent_loss(embeddings, labels, **self.options)

    def extra_repr(self) -> str:
        """The constructor's arguments, for ``repr``."""
        return f"{super().extra_repr()}, gather={self.gather}"


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
