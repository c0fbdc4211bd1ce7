"""Gradient caching through the encoder (GradCache) for PyTorch; imported with torch.

A contrastive loss couples every row of a batch to every other, so the
batch cannot be split into independent micro-batches; but the loss needs
only the embeddings, which are small next to the encoder's activations.
`cached_backward` embeds the batch slice by slice without a graph, takes the
loss and its gradient with respect to the embeddings, then embeds each slice
again with a graph and backpropagates its share of that gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ._lib._cache_args import (
    checked_embedding,
    common_rows,
    per_role,
    role_batches,
    slice_bounds,
)
from ._lib._validation import _type_name, positive_integer

Tensor = Any
# The CPU generator's state, then (device, state) for each accelerator generator.
RandomState = tuple[Tensor, list[tuple[Any, Tensor]]]


def cached_backward(
    loss_fn: Callable[..., Tensor],
    encoders: Callable[[Any], Tensor] | Sequence[Callable[[Any], Tensor]],
    inputs: Sequence[Any],
    /,
    *,
    chunk_size: int,
) -> Tensor:
    """Backpropagate a loss on embeddings of a large batch, one slice of activations at a time.

    Gradient caching (GradCache; sentence-transformers' ``Cached*`` losses)
    for any loss on embeddings. Every batch is embedded in slices of
    ``chunk_size`` rows under ``torch.no_grad``, recording the random state
    before each slice; ``loss_fn(*embeddings)`` is computed on the
    concatenated embeddings and backpropagated to them (and to ``loss_fn``'s
    own parameters, such as a learned temperature). Then each slice is
    embedded again with a graph, its random state restored so that dropout
    draws the same masks, and its part of the embeddings' gradient is
    backpropagated through the encoder. The encoders' activations are held
    for one slice at a time; the embeddings and their gradients for the whole
    batch.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(*embeddings)`` returns a 0-d tensor, the loss of the
        embeddings of every role (for example ``InfoNCELoss()`` on anchors
        and positives). It may hold parameters of its own; their gradients
        are accumulated too. It is called once.
    encoders : callable or sequence of callables
        One callable shared by every role, or a list or tuple (or a
        ``torch.nn.ModuleList``) with one per role. Each maps a slice of its
        role's batch, of the batch's structure, to embeddings: a tensor whose
        first dimension is the slice's rows (usually ``(c, d)``). Each row's
        embedding must depend only on that row (see Notes).
    inputs : list or tuple
        One batch per role (anchors, positives, negatives, ...). A batch is
        a tensor, or a dict (any mapping: it is sliced into a dict), tuple or
        list of tensors, all with the batch as their first dimension (as a
        tokenizer's ``input_ids`` and ``attention_mask``). Roles may have
        different batch sizes.
    chunk_size : int
        Rows per slice, the last slice of a role holding the rest. A
        ``chunk_size`` at least the batch size encodes each role at once.

    Returns
    -------
    torch.Tensor
        The loss, detached.

    Raises
    ------
    TypeError
        ``chunk_size`` not an integer; ``inputs`` not a list or tuple, or a
        batch that is not a tensor or a dict, tuple or list of tensors;
        ``encoders`` or ``loss_fn`` not callable; an encoder or ``loss_fn``
        returning something other than a tensor.
    ValueError
        ``chunk_size`` below 1; the tensors of a batch disagreeing on their
        first dimension; a 0-d tensor in a batch; a number of encoders other
        than the number of roles; an encoder returning another number of
        rows than it was given; ``loss_fn`` returning a non-scalar, or a
        value that does not depend on the embeddings.

    See Also
    --------
    cosinekit.jax.cached_value_and_grad : The JAX counterpart.

    Notes
    -----
    **What the gradients equal.** Afterwards every parameter's ``.grad`` has
    been increased by the gradient of the loss of the embeddings computed
    slice by slice, from the random state at the call: the plain backward
    ``loss_fn(*(torch.cat([encoder(s) for s in slices(b)]) for b in
    inputs)).backward()`` (equal to float64 rounding, dropout included). It
    accumulates into ``.grad`` as that backward does, so gradient
    accumulation over several calls works unchanged. Without randomness, or
    with ``chunk_size`` at least every batch size, that is the plain
    ``loss_fn(*(encoder(b) for b in inputs)).backward()``; with dropout and
    smaller slices, the masks are drawn slice by slice instead of for the
    whole batch at once (a different but equally distributed draw).

    **Random state.** The state of the CPU generator is recorded before each
    slice, and that of the generators of the accelerators involved: the
    devices of the inputs and, once CUDA is initialized, the current CUDA
    device. After the call every generator is where the plain computation
    above leaves it: after the first pass and the loss (the second pass
    replays recorded states and then restores that one). A training loop
    that calls ``cached_backward`` draws the same random numbers afterwards
    as one that calls the plain backward.

    **Rows must be independent.** Layers that mix rows of a batch see one
    slice at a time: BatchNorm in training mode normalizes each slice by its
    own statistics, and its running statistics are updated twice, in both
    passes (as in GradCache and sentence-transformers' cached losses). Put
    such layers in ``eval()`` mode or use LayerNorm.

    **Mixed precision.** Run the call under ``torch.autocast`` as a plain step
    would; with a ``GradScaler``, scale inside the loss,
    ``loss_fn=lambda *e: scaler.scale(loss(*e))``, then ``scaler.step``.

    Examples
    --------
    >>> import torch
    >>> from cosinekit.torch import InfoNCELoss, cached_backward
    >>> _ = torch.manual_seed(0)
    >>> encoder = torch.nn.Sequential(
    ...     torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)
    ... )
    >>> anchors, positives = torch.randn(128, 32), torch.randn(128, 32)
    >>> loss = cached_backward(InfoNCELoss(), encoder, [anchors, positives], chunk_size=32)
    >>> cached = [p.grad.clone() for p in encoder.parameters()]
    >>> encoder.zero_grad()
    >>> plain = InfoNCELoss()(encoder(anchors), encoder(positives))
    >>> plain.backward()
    >>> torch.allclose(loss, plain)
    True
    >>> all(torch.allclose(c, p.grad, atol=1e-6) for c, p in zip(cached, encoder.parameters()))
    True

    """
    if not callable(loss_fn):
        msg = f"loss_fn must be callable, got {_type_name(loss_fn)}"
        raise TypeError(msg)
    size = positive_integer(chunk_size, "chunk_size")
    batches = role_batches(inputs)
    rows = [_batch_rows(batch, role) for role, batch in enumerate(batches)]
    per_role_encoders = per_role(encoders, len(batches), "encoders", _ENCODER_SEQUENCES)
    roles = list(enumerate(zip(per_role_encoders, batches, rows, strict=True)))
    devices = _accelerators(batches)

    # Pass 1: every slice without a graph, the random state before each.
    states: list[list[RandomState]] = []
    embeddings = []
    with torch.no_grad():
        for role, (encoder, batch, n) in roles:
            pieces, role_states = [], []
            for start, stop in slice_bounds(n, size):
                role_states.append(_random_state(devices))
                pieces.append(_embed(encoder, _rows(batch, start, stop), stop - start, role))
            states.append(role_states)
            embeddings.append(torch.cat(pieces).requires_grad_())

    with torch.enable_grad():
        loss = loss_fn(*embeddings)
        _check_loss(loss)
        # Reaches the embeddings and any parameter of the loss itself.
        torch.autograd.backward(loss)
    after = _random_state(devices)

    # Pass 2: each slice again with a graph, its random state replayed.
    try:
        for role, (encoder, batch, n) in roles:
            grad = embeddings[role].grad
            if grad is None:  # the loss does not use this role
                continue
            for (start, stop), state in zip(slice_bounds(n, size), states[role], strict=True):
                _set_random_state(state)
                with torch.enable_grad():
                    piece = _embed(encoder, _rows(batch, start, stop), stop - start, role)
                if piece.requires_grad:  # a frozen encoder has nothing to update
                    torch.autograd.backward(piece, grad[start:stop])
                del piece
    finally:
        _set_random_state(after)
    return loss.detach()


_ENCODER_SEQUENCES = (list, tuple, torch.nn.ModuleList)


def _batch_rows(batch: Any, role: int) -> int:
    """The rows of one role's batch, checking its structure."""
    where = f"inputs[{role}]"
    if isinstance(batch, torch.Tensor):
        tensors = [(where, batch)]
    elif isinstance(batch, Mapping):
        tensors = [(f"{where}[{key!r}]", value) for key, value in batch.items()]
    elif isinstance(batch, (list, tuple)):
        tensors = [(f"{where}[{i}]", value) for i, value in enumerate(batch)]
    else:
        kinds = "a tensor or a dict, tuple or list of tensors"
        msg = f"{where} must be {kinds}, got {_type_name(batch)}"
        raise TypeError(msg)
    if not tensors:
        msg = f"{where} holds no tensor"
        raise ValueError(msg)
    for name, value in tensors:
        if not isinstance(value, torch.Tensor):
            msg = f"{name} must be a torch.Tensor, got {_type_name(value)}"
            raise TypeError(msg)
        if value.ndim == 0:
            msg = f"{name} is 0-d; batches need a first dimension to slice"
            raise ValueError(msg)
    return common_rows([(name, int(value.shape[0])) for name, value in tensors], role)


def _rows(batch: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a batch, in the batch's structure (a mapping becomes a dict)."""
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, Mapping):
        return {key: value[start:stop] for key, value in batch.items()}
    pieces = [value[start:stop] for value in batch]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*pieces)
    return type(batch)(pieces) if isinstance(batch, tuple) else pieces


def _embed(encoder: Callable[[Any], Tensor], piece: Any, rows: int, role: int) -> Tensor:
    return checked_embedding(encoder(piece), torch.Tensor, "a tensor", role, rows)


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, torch.Tensor):
        msg = f"loss_fn must return a tensor, got {_type_name(loss)}"
        raise TypeError(msg)
    if loss.ndim != 0:
        msg = f"loss_fn must return a scalar (0-d tensor), got shape {tuple(loss.shape)}"
        raise ValueError(msg)
    if not loss.requires_grad:
        msg = "loss_fn's result does not depend on the embeddings: nothing to backpropagate"
        raise ValueError(msg)


def _accelerators(batches: Sequence[Any]) -> list[Any]:
    """The non-CPU devices whose generators an encoder may draw from.

    The devices of the inputs, and the current CUDA device once CUDA is
    initialized (an encoder on the GPU may be given CPU inputs). Generators
    of other devices are left alone: reading one would create a CUDA context
    there, as ``torch.random.fork_rng`` warns.
    """
    devices = set()
    for batch in batches:
        values = batch.values() if isinstance(batch, Mapping) else batch
        for tensor in [batch] if isinstance(batch, torch.Tensor) else values:
            # The CPU generator is always recorded; devices without a
            # generator of their own (meta) draw nothing.
            kind = tensor.device.type
            if kind != "cpu" and hasattr(getattr(torch, kind, None), "get_rng_state"):
                devices.add(tensor.device)
    if torch.cuda.is_initialized():
        devices.add(torch.device("cuda", torch.cuda.current_device()))
    return sorted(devices, key=str)


def _random_state(devices: Sequence[Any]) -> RandomState:
    accelerators = [
        (device, getattr(torch, device.type).get_rng_state(device)) for device in devices
    ]
    return torch.get_rng_state(), accelerators


def _set_random_state(state: RandomState) -> None:
    cpu, accelerators = state
    torch.set_rng_state(cpu)
    for device, device_state in accelerators:
        getattr(torch, device.type).set_rng_state(device_state, device)
