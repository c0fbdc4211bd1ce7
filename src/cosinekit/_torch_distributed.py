"""A differentiable all-gather of uneven batches over ``torch.distributed``.

Imported only with torch (by `cosinekit.torch`). The two ``autograd.Function``
classes are each other's backward: gathering's adjoint is summing every
rank's gradient and keeping one's own rows, whose adjoint is gathering. So
``create_graph=True`` differentiates through either to any order, with the
same collectives.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
import torch.distributed as dist

Tensor = Any


def all_gather(x: Tensor, /, *, group: Any = None) -> Tensor:
    """The rows of ``x`` from every rank, concatenated in rank order; differentiable.

    The building block of contrastive training on several processes: every
    rank scores its own queries against the keys of all ranks. Ranks may
    hold different numbers of rows (the last batch of an epoch), none
    included.

    Parameters
    ----------
    x : torch.Tensor
        Shape ``(n_r, ...)`` on rank ``r``: ``n_r`` may differ between ranks
        (and be 0); the trailing shape and the dtype must be the same on
        every rank (``ValueError`` on every rank otherwise), on a device the
        group's backend serves (the CPU for gloo, the rank's GPU for NCCL).
    group : torch.distributed.ProcessGroup, optional
        The process group; the default group by default. The calling
        process must be a member.

    Returns
    -------
    torch.Tensor
        Shape ``(n_0 + ... + n_{W-1}, ...)``: rank 0's rows, then rank 1's,
        and so on. Without an initialized process group, or with a group of
        one process, ``x`` itself.

    Notes
    -----
    The gradient that reaches a rank's own ``x`` is the sum, over every
    rank, of the gradients of that rank's use of its rows: exactly the
    gradient of the sum of all ranks' losses, as
    ``torch.distributed.nn.functional.all_gather`` (which needs equal
    sizes). Averaging the parameter gradients over ranks, as
    ``DistributedDataParallel`` does, then gives the gradient of the mean of
    the ranks' losses (see the contrastive guide for the scaling that makes
    that mean the single-process loss).

    Like every collective, each call must be made by every rank of the
    group, in the same order, and so must the backward pass: every rank must
    backpropagate through the result (a rank whose loss does not depend on
    it leaves the others waiting until the group's timeout), running the
    same code so that its backward meets the gathers in the same order.
    The same holds for a double backward: ``torch.autograd.grad(...,
    create_graph=True)`` differentiates through the gather to any order.
    Forward-mode AD and ``torch.func`` transforms are not supported.

    The forward pass exchanges the row counts (one small all-gather, and a
    read of its values: a device synchronization on a GPU), then the rows
    padded to the largest count. The backward pass all-reduces the
    ``(N, ...)`` gradient and keeps the rank's own rows.

    Examples
    --------
    Without a process group it returns its input:

    >>> import torch
    >>> from cosinekit.torch import all_gather
    >>> x = torch.randn(3, 4, requires_grad=True)
    >>> all_gather(x) is x
    True

    Under ``torchrun`` each rank scores its own queries against every
    rank's keys; the positive of its ``i``-th query is the key at the number
    of keys held by the ranks before it, plus ``i``::

        keys = all_gather(local_keys)
        counts = all_gather(torch.tensor([local_keys.shape[0]]))
        start = int(counts[: torch.distributed.get_rank()].sum())
        labels = start + torch.arange(local_queries.shape[0])
        total = cosinekit.info_nce_loss(local_queries, keys, labels=labels, reduction="sum")
        loss = total * counts.numel() / counts.sum()  # this rank's share

    """
    if not isinstance(x, torch.Tensor):
        msg = f"x must be a torch.Tensor, got {type(x).__name__}"
        raise TypeError(msg)
    if x.ndim == 0:
        msg = "x must have at least one dimension (the rows to gather)"
        raise ValueError(msg)
    if not (dist.is_available() and dist.is_initialized()):
        return x
    if dist.get_rank(group) < 0:
        msg = "this process is not a member of the given process group"
        raise ValueError(msg)
    if dist.get_world_size(group) == 1:
        return x
    return _Gather.apply(x, _row_counts(x, group), group)


def _row_counts(x: Tensor, group: Any) -> list[int]:
    """Every rank's number of rows, after checking that the rest of the shapes agree.

    Each rank sends its row count and a checksum of its trailing shape and
    dtype; every rank receives all of them and so raises the same error,
    where a mismatched gather would fail on some ranks only, or read rows
    of the wrong shape.
    """
    layout = repr((tuple(x.shape[1:]), str(x.dtype))).encode()
    mine = torch.tensor([x.shape[0], zlib.crc32(layout)], dtype=torch.int64, device=x.device)
    every = torch.empty(dist.get_world_size(group) * 2, dtype=torch.int64, device=x.device)
    dist.all_gather(list(every.view(-1, 2).unbind(0)), mine, group=group)
    counts, layouts = every.view(-1, 2).T.tolist()
    if len(set(layouts)) > 1:
        msg = (
            "all_gather needs the same trailing shape and dtype on every rank; "
            f"this rank has {tuple(x.shape[1:])} and {x.dtype}, and another rank differs"
        )
        raise ValueError(msg)
    return [int(count) for count in counts]


def _gather_rows(x: Tensor, counts: list[int], group: Any) -> Tensor:
    """The forward collective: pad to the largest count, gather, drop the padding."""
    largest = max(counts)
    if x.shape[0] < largest:
        padded = x.new_zeros((largest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        x = padded
    x = x.contiguous()
    out = x.new_empty((len(counts), largest, *x.shape[1:]))
    # The list form of all_gather, into views of one buffer: every backend
    # has it (gloo's needs equal sizes, hence the padding), and it is not
    # deprecated as the tensor form is in recent releases.
    dist.all_gather(list(out.unbind(0)), x, group=group)
    if all(count == largest for count in counts):
        return out.view(-1, *x.shape[1:])
    return torch.cat([out[rank, :count] for rank, count in enumerate(counts)])


def _sum_own_rows(grad: Tensor, counts: list[int], group: Any) -> Tensor:
    """The backward collective: sum every rank's ``(N, ...)`` gradient, keep one's own rows.

    An all-reduce then a slice, not a reduce-scatter: every backend and
    release has all-reduce, where reduce-scatter is missing from some (off
    NCCL, torch's own differentiable all_gather falls back to an
    all-to-all), and the tensor forms of both collectives are deprecated
    for renamed ones in recent releases; it needs no padding of the uneven
    rows either. It moves about twice the bytes of a reduce-scatter, the
    size of the gathered embeddings: small beside the all-reduce of the
    parameters' gradients that data-parallel training does anyway.
    """
    rank = dist.get_rank(group)
    start = sum(counts[:rank])
    total = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return total[start : start + counts[rank]]


class _Gather(torch.autograd.Function):
    """All-gather forward; backward through `_SumOwnRows` (differentiable again)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, counts: list[int], group: Any) -> Tensor:
        ctx.counts, ctx.group = counts, group
        return _gather_rows(x, counts, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return _SumOwnRows.apply(grad, ctx.counts, ctx.group), None, None


class _SumOwnRows(torch.autograd.Function):
    """All-reduce and slice forward; backward through `_Gather` (its adjoint)."""

    @staticmethod
    def forward(ctx: Any, grad: Tensor, counts: list[int], group: Any) -> Tensor:
        ctx.counts, ctx.group = counts, group
        return _sum_own_rows(grad, counts, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return _Gather.apply(grad, ctx.counts, ctx.group), None, None
