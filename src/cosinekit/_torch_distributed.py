"""A differentiable all-gather of uneven batches, and the losses of ``gather=True``.

Imported only with torch (by `cosinekit.torch`). The two ``autograd.Function``
classes are each other's backward: gathering's adjoint is summing every
rank's gradient and keeping one's own rows, whose adjoint is gathering. So
``create_graph=True`` differentiates through either to any order, with the
same collectives.

`info_nce_share` and `ntxent_share` return a rank's share of the loss of
every rank's rows (``W / N`` times the sum of its rows' losses; see the
contrastive guide). Every rank runs the same collectives in the same order,
whatever its batch (none included): the forward exchanges the row counts
and gathers, and the backward meets the gathers in the reverse order of
their creation (autograd runs the ready node created last first, and each
gather's backward is ready once everything after it has run), so a rank
with no rows keeps its loss connected to the gathered tensors.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from ._contrastive import info_nce_loss, ntxent_loss
from ._lib._contrastive_core import ntxent_sums
from ._lib._validation import floating_dtypes, positive_scalar, resolve, rows_of, vector_of

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
        group's backend serves (the CPU for gloo, the rank's GPU for NCCL;
        another, such as ``meta``, is a ``ValueError`` naming both, before
        any collective).
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
    of keys held by the ranks before it, plus ``i`` (what
    ``InfoNCELoss(gather=True)`` does)::

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
    if not gathering(group):
        return x
    check_devices((x,), ("x",), group)
    [counts] = row_counts((x,), ("x",), group)
    return gather_rows(x, counts, group)


def gathering(group: Any = None) -> bool:
    """Whether a process group of more than one process is there to gather over.

    A process outside ``group`` is a ``ValueError``.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return False
    if dist.get_rank(group) < 0:
        msg = "this process is not a member of the given process group"
        raise ValueError(msg)
    return bool(dist.get_world_size(group) > 1)


def check_devices(tensors: Sequence[Tensor], names: Sequence[str], group: Any) -> None:
    """A ``ValueError`` naming both devices for a tensor the group's backend cannot send.

    Checked before any collective, so that every rank given such a tensor
    raises the same error instead of failing inside one (a ``meta`` tensor
    has no values to send: torch's own error comes from reading the counts).
    """
    process_group = dist.group.WORLD if group is None else group
    # The device types the group's backends serve ("cpu" and "cuda" for
    # gloo, "cuda" for NCCL); the attribute is not public, so without it only
    # the meta device, which no backend serves, is refused.
    served = {torch.device(d).type for d in getattr(process_group, "_device_types", ())}
    for name, x in zip(names, tensors, strict=True):
        if x.device.type == "meta" or (served and x.device.type not in served):
            backend = dist.get_backend(group)
            devices = ", ".join(sorted(served)) or "the devices it serves"
            msg = (
                f"{name} is on device {x.device}, which the process group's backend "
                f"({backend}) cannot gather: it serves {devices}"
            )
            raise ValueError(msg)


def row_counts(tensors: Sequence[Tensor], names: Sequence[str], group: Any) -> list[list[int]]:
    """Every rank's number of rows of each tensor, after checking that the rest agrees.

    One small all-gather for all of them: each rank sends, per tensor, its
    row count and a checksum of its trailing shape and dtype; every rank
    receives all of them and so raises the same error, where a mismatched
    gather would fail on some ranks only, or read rows of the wrong shape.
    """
    mine = []
    for x in tensors:
        layout = repr((tuple(x.shape[1:]), str(x.dtype))).encode()
        mine += [x.shape[0], zlib.crc32(layout)]
    device = tensors[0].device
    sent = torch.tensor(mine, dtype=torch.int64, device=device)
    every = torch.empty(dist.get_world_size(group) * len(mine), dtype=torch.int64, device=device)
    dist.all_gather(list(every.view(-1, len(mine)).unbind(0)), sent, group=group)
    by_rank = every.view(-1, len(mine)).tolist()
    counts = []
    for i, (name, x) in enumerate(zip(names, tensors, strict=True)):
        if len({row[2 * i + 1] for row in by_rank}) > 1:
            msg = (
                f"gathering {name} needs the same trailing shape and dtype on every rank; "
                f"this rank has {tuple(x.shape[1:])} and {x.dtype}, and another rank differs"
            )
            raise ValueError(msg)
        counts.append([int(row[2 * i]) for row in by_rank])
    return counts


def gather_rows(x: Tensor, counts: list[int], group: Any) -> Tensor:
    """`all_gather` of ``x`` once every rank's row count is known (differentiable)."""
    return _Gather.apply(x, counts, group)


def _gather_padded(x: Tensor, counts: list[int], group: Any) -> Tensor:
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
        return _gather_padded(x, counts, group)

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


def info_nce_share(
    queries: Tensor,
    keys: Tensor,
    labels: Tensor | None,
    *,
    temperature: float | Tensor,
    symmetric: bool,
    reduction: str,
    eps: float | None,
    block_size: int | None = None,
) -> Tensor:
    """`info_nce_loss` of this rank's queries against every rank's keys, as its share.

    Rank ``r``'s keys are its queries' positives, then (optionally) extra
    negatives, so its ``i``-th query's positive is key ``i`` after the keys
    of the ranks before it. With ``labels``, they are positions among the
    gathered keys. ``symmetric`` gathers the queries too, and adds each of
    this rank's keys against every query. ``"mean"`` returns ``W / N`` times
    the sum of this rank's losses, ``"sum"`` ``W`` times it, and ``"none"``
    this rank's rows of the per-query losses. Without a process group of
    more than one process: `info_nce_loss`.
    """
    options: dict[str, Any] = {"temperature": temperature, "eps": eps, "block_size": block_size}
    if not gathering():
        return info_nce_loss(
            queries, keys, labels=labels, symmetric=symmetric, reduction=reduction, **options
        )
    # Every check that could fail on this rank alone, before any collective.
    present = {"queries": queries, "keys": keys, "labels": labels, "temperature": temperature}
    arrays = {name: x for name, x in present.items() if isinstance(x, torch.Tensor)}
    resolve(*arrays.values(), names=tuple(arrays), xp=None)
    rows_of(queries, "queries")
    rows_of(keys, "keys")
    if symmetric and (labels is not None or queries.shape[0] != keys.shape[0]):
        msg = (
            "symmetric=True needs labels=None and as many keys as queries on every rank, "
            f"got {queries.shape[0]} queries and {keys.shape[0]} keys"
        )
        raise ValueError(msg)
    check_devices((queries, keys), ("queries", "keys"), None)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    query_counts, key_counts = row_counts((queries, keys), ("queries", "keys"), None)
    every_key = gather_rows(keys, key_counts, None)
    options["reduction"] = "none" if reduction == "none" else "sum"
    if labels is None:
        offset = sum(key_counts[:rank])
        loss = info_nce_loss(queries, every_key, positive_offset=offset, **options)
    else:
        loss = info_nce_loss(queries, every_key, labels=labels, **options)
    if symmetric:
        every_query = gather_rows(queries, query_counts, None)
        offset = sum(query_counts[:rank])
        loss = (loss + info_nce_loss(keys, every_query, positive_offset=offset, **options)) / 2
    if reduction == "none":
        return loss
    total = sum(query_counts)
    # The loss of an empty batch is 0 (the mean of no queries), not 0 / 0.
    scale = world_size if reduction == "sum" else world_size / total if total else 0.0
    return loss * scale


def ntxent_share(
    embeddings: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    eps: float | None,
    block_size: int | None = None,
) -> Tensor:
    """`ntxent_loss` of this rank's rows as anchors against every rank's rows, as its share.

    Labels are compared across ranks. The share is ``W / C`` times the sum
    of the pair losses of this rank's anchors, where ``C`` is the number of
    positive pairs of the whole batch (an all-reduce of every rank's count),
    and 0 where there is none. Without a process group of more than one
    process: `ntxent_loss`.
    """
    if not gathering():
        return ntxent_loss(
            embeddings, labels, temperature=temperature, eps=eps, block_size=block_size
        )
    names = ("embeddings", "labels")
    xp, mode = resolve(embeddings, labels, names=names, xp=None)
    rows_of(embeddings, "embeddings")
    vector_of(labels, embeddings.shape[0], "labels", embeddings, "embeddings")
    check_devices((embeddings, labels), names, None)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    counts, _ = row_counts((embeddings, labels), names, None)
    every_embedding = gather_rows(embeddings, counts, None)
    every_label = gather_rows(labels, counts, None)
    result_dtype, compute_dtype = floating_dtypes(xp, embeddings)
    like = torch.zeros((), dtype=compute_dtype, device=embeddings.device)
    scalar = positive_scalar(xp, mode, temperature, "temperature", like, inverse=True)
    total, count = ntxent_sums(
        xp,
        mode,
        embeddings,
        labels,
        every_embedding,
        every_label,
        sum(counts[:rank]),
        scalar,
        block_size,
        eps,
    )
    dist.all_reduce(count)
    share = total * world_size / count.clamp(min=1)  # 0 without pairs
    return share.to(result_dtype)
