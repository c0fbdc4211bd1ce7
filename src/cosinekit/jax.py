"""JAX helpers: gradient caching through the encoder (GradCache) for a pure encode function.

Importable only where JAX is installed (``import cosinekit`` itself never
imports JAX). `cached_value_and_grad` is ``jax.value_and_grad`` of a loss on
embeddings, for a batch whose encoder activations would not fit at once: the
encoder's activations are held for one slice of ``chunk_size`` rows at a
time. It is the counterpart of `cosinekit.torch.cached_backward`.

Examples
--------
>>> import jax
>>> import jax.numpy as jnp
>>> import cosinekit as ck
>>> from cosinekit.jax import cached_value_and_grad
>>> def encode(params, x):
...     return jnp.tanh(x @ params["w1"]) @ params["w2"]
>>> def loss_fn(anchors, positives):
...     return ck.info_nce_loss(anchors, positives)
>>> keys = jax.random.split(jax.random.key(0), 4)
>>> params = {"w1": jax.random.normal(keys[0], (32, 64)) / 6,
...           "w2": jax.random.normal(keys[1], (64, 16)) / 8}
>>> anchors, positives = (jax.random.normal(k, (128, 32)) for k in keys[2:])
>>> @jax.jit
... def step(params, anchors, positives):
...     return cached_value_and_grad(loss_fn, encode, params, [anchors, positives],
...                                  chunk_size=32)
>>> loss, grads = step(params, anchors, positives)
>>> plain_loss, plain_grads = jax.jit(jax.value_and_grad(
...     lambda p: loss_fn(encode(p, anchors), encode(p, positives))))(params)
>>> bool(jnp.allclose(loss, plain_loss))
True
>>> bool(jnp.allclose(grads["w1"], plain_grads["w1"], atol=1e-6))
True

"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._lib._cache_args import checked_embedding, common_rows, per_role, role_batches
from ._lib._validation import _type_name, positive_integer

__all__ = ["cached_value_and_grad"]

Array = Any
PyTree = Any
Encode = Callable[..., Array]


def cached_value_and_grad(
    loss_fn: Callable[..., Array],
    encode: Encode | Sequence[Encode],
    params: PyTree,
    inputs: Sequence[PyTree],
    /,
    *,
    chunk_size: int,
    rng: Array | None = None,
) -> tuple[Array, PyTree]:
    """``jax.value_and_grad`` of a loss on embeddings, one slice of activations at a time.

    Gradient caching (GradCache) for a parameter pytree and a pure encoder.
    The first pass embeds every batch in slices of ``chunk_size`` rows
    (``jax.lax.map`` over the whole slices, then the rest) and takes
    ``loss_fn(*embeddings)`` and its gradient with respect to the
    embeddings; the second pass takes, slice by slice in a ``jax.lax.scan``,
    the vector-Jacobian product of the encoder with respect to ``params``
    with that slice's part of the gradient, and sums them. The encoder's
    activations exist for one slice at a time; the embeddings and their
    gradient for the whole batch.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(*embeddings)`` returns a real scalar, the loss of the
        embeddings of every role, in the order of ``inputs``.
    encode : callable or sequence of callables
        ``encode(params, batch_slice)``, or with ``rng``
        ``encode(params, batch_slice, key)``: a pure function returning the
        embeddings of the slice, an array whose first axis is the slice's
        rows (usually ``(c, d)``). One callable is shared by every role; a
        list or tuple holds one per role, each given the whole ``params``
        (separate towers read their own part of it, for example
        ``params["query"]`` and ``params["document"]``, and shared parts are
        shared). Each row's embedding must depend only on that row.
    params : pytree
        The parameters, a pytree of floating arrays; ``grads`` has its
        structure.
    inputs : list or tuple
        One batch per role (anchors, positives, negatives, ...), each a
        pytree of arrays with a common leading batch axis (an array, or a
        dict such as a tokenizer's ``input_ids`` and ``attention_mask``).
        Slices keep the batch's structure. Roles may have different batch
        sizes.
    chunk_size : int
        Rows per slice; the last slice of a role holds the rest. A
        ``chunk_size`` at least the batch size encodes each role at once.
    rng : jax.Array, optional
        A PRNG key for a random encoder (dropout). The rows ``[s * c, (s +
        1) * c)`` of role ``r`` (``c = chunk_size``) are encoded with the key
        ``jax.random.fold_in(jax.random.fold_in(rng, r), s)``, in both
        passes.

    Returns
    -------
    loss : jax.Array
        The loss.
    grads : pytree
        Its gradient with respect to ``params``.

    Raises
    ------
    TypeError
        ``chunk_size`` not an integer; ``inputs`` not a list or tuple, or a
        batch with a leaf that is not an array; ``encode`` or ``loss_fn``
        not callable; a non-floating leaf in ``params``; ``rng`` not a key;
        ``encode`` returning something other than an array, or ``loss_fn``
        something other than a real floating value.
    ValueError
        ``chunk_size`` below 1; the arrays of a batch disagreeing on their
        leading axis, or a 0-d one; as many encoders as roles not given;
        ``encode`` returning another number of rows than it was given;
        ``loss_fn`` returning a non-scalar.

    See Also
    --------
    cosinekit.torch.cached_backward : The PyTorch counterpart.

    Notes
    -----
    **What it equals.** Without ``rng``, the result is
    ``jax.value_and_grad(lambda p: loss_fn(*(encode_r(p, b_r) for each
    role r)))(params)`` (equal up to the rounding of summing the slices'
    gradients). With ``rng``, it is the ``jax.value_and_grad`` of the same
    computation written with the slices' keys:
    ``loss_fn(*(concat([encode_r(p, b_r[s*c:(s+1)*c], fold_in(fold_in(rng,
    r), s)) for s in range(ceil(n_r / c))]) for each role r))``; an empty
    batch is one slice, ``s = 0``. The keys depend on ``chunk_size``, so
    another ``chunk_size`` draws other dropout masks.

    **Under jit.** The function is traceable: wrap a training step that
    calls it in ``jax.jit`` with ``loss_fn``, ``encode`` and ``chunk_size``
    fixed (closed over); ``params``, ``inputs`` and ``rng`` may be traced.
    Shapes are static, so the number of slices is fixed at trace time; the
    program holds a fixed number of copies of each role's encoder (in the
    map, in the scan, and for the shorter last slice), whatever the batch
    size. Called eagerly, it traces the map and the scan at every call.

    **Rows must be independent.** An encoder that mixes rows (batch
    statistics) sees one slice at a time, so the result is that of the
    sliced computation, not of the whole batch.

    """
    if not callable(loss_fn):
        msg = f"loss_fn must be callable, got {_type_name(loss_fn)}"
        raise TypeError(msg)
    size = positive_integer(chunk_size, "chunk_size")
    batches = role_batches(inputs)
    rows = [_batch_rows(batch, role) for role, batch in enumerate(batches)]
    encoders = per_role(encode, len(batches), "encode")
    _check_params(params)
    role_keys: list[Array | None] = [None] * len(batches)
    if rng is not None:
        _check_key(rng)
        role_keys = [jax.random.fold_in(rng, role) for role in range(len(batches))]
    roles = [
        _Role(encoder, batch, n, size, key, role)
        for role, (encoder, batch, n, key) in enumerate(
            zip(encoders, batches, rows, role_keys, strict=True)
        )
    ]

    embeddings = [role.embed(params) for role in roles]
    loss, pullback = jax.vjp(loss_fn, *embeddings)
    _check_loss(loss)
    cotangents = pullback(jnp.ones_like(loss))

    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    for role, cotangent in zip(roles, cotangents, strict=True):
        grads = role.accumulate(params, cotangent, grads)
    return loss, grads


class _Role:
    """One role's batch cut into ``whole`` slices of ``size`` rows and a shorter ``rest``."""

    def __init__(
        self, encode: Encode, batch: PyTree, rows: int, size: int, key: Array | None, role: int
    ) -> None:
        self.encode, self.rows, self.size, self.role = encode, rows, size, role
        self.whole = rows // size
        cut = self.whole * size
        self.head = jax.tree_util.tree_map(lambda x: _fold(x[:cut], self.whole, size), batch)
        # An empty batch is one empty slice, so that its embeddings have a shape.
        self.rest = None
        if cut < rows or rows == 0:
            self.rest = jax.tree_util.tree_map(lambda x: x[cut:], batch)
        self.head_keys = self.rest_key = None
        if key is not None:
            self.head_keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(self.whole))
            self.rest_key = jax.random.fold_in(key, self.whole)

    def _apply(self, params: PyTree, piece: PyTree, key: Array | None, rows: int) -> Array:
        embedding = self.encode(params, piece) if key is None else self.encode(params, piece, key)
        return checked_embedding(embedding, jax.Array, "an array", self.role, rows)

    def embed(self, params: PyTree) -> Array:
        """Pass 1: the embeddings of every row, slice by slice."""
        parts = []
        if self.whole:
            mapped = jax.lax.map(
                lambda xs: self._apply(params, xs[0], xs[1], self.size),
                (self.head, self.head_keys),
            )
            parts.append(jnp.reshape(mapped, (self.whole * self.size, *mapped.shape[2:])))
        if self.rest is not None:
            rows = self.rows - self.whole * self.size
            parts.append(self._apply(params, self.rest, self.rest_key, rows))
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts)

    def accumulate(self, params: PyTree, cotangent: Array, grads: PyTree) -> PyTree:
        """Pass 2: ``grads`` plus each slice's vector-Jacobian product (``params``)."""

        def pulled(piece: PyTree, key: Array | None, rows: int, part: Array) -> PyTree:
            _, pullback = jax.vjp(lambda p: self._apply(p, piece, key, rows), params)
            return pullback(part)[0]

        cut = self.whole * self.size
        if self.whole:

            def step(total: PyTree, xs: tuple[PyTree, Array | None, Array]) -> tuple[PyTree, None]:
                piece, key, part = xs
                return _add(total, pulled(piece, key, self.size, part)), None

            head = _fold(cotangent[:cut], self.whole, self.size)
            grads, _ = jax.lax.scan(step, grads, (self.head, self.head_keys, head))
        if self.rest is not None:
            grads = _add(grads, pulled(self.rest, self.rest_key, self.rows - cut, cotangent[cut:]))
        return grads


def _fold(x: Array, slices: int, size: int) -> Array:
    """``(slices * size, ...)`` rows as ``(slices, size, ...)``."""
    return jnp.reshape(x, (slices, size, *x.shape[1:]))


def _add(total: PyTree, part: PyTree) -> PyTree:
    return jax.tree_util.tree_map(jnp.add, total, part)


def _batch_rows(batch: PyTree, role: int) -> int:
    """The rows of one role's batch: every leaf an array with the same leading axis."""
    leaves = jax.tree_util.tree_leaves_with_path(batch)
    if not leaves:
        msg = f"inputs[{role}] holds no array"
        raise ValueError(msg)
    sizes = []
    for path, leaf in leaves:
        where = f"inputs[{role}]{jax.tree_util.keystr(path)}"
        if not isinstance(leaf, jax.Array) and not hasattr(leaf, "__array__"):
            msg = f"{where} must be an array, got {_type_name(leaf)}"
            raise TypeError(msg)
        if jnp.ndim(leaf) == 0:
            msg = f"{where} is 0-d; batches need a leading axis to slice"
            raise ValueError(msg)
        sizes.append((where, int(jnp.shape(leaf)[0])))
    return common_rows(sizes, role)


def _check_params(params: PyTree) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            msg = (
                f"params{jax.tree_util.keystr(path)} must be floating to be differentiated, "
                f"got {jnp.result_type(leaf)}"
            )
            raise TypeError(msg)


def _check_key(rng: Array) -> None:
    typed = isinstance(rng, jax.Array) and jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
    raw = isinstance(rng, jax.Array) and rng.dtype == jnp.uint32 and rng.ndim == 1
    if not (typed and rng.ndim == 0) and not raw:
        msg = (
            "rng must be one PRNG key (jax.random.key or jax.random.PRNGKey), "
            f"got {_type_name(rng)} of shape {getattr(rng, 'shape', None)}"
        )
        raise TypeError(msg)


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, jax.Array):
        msg = f"loss_fn must return an array, got {_type_name(loss)}"
        raise TypeError(msg)
    if loss.shape != ():
        msg = f"loss_fn must return a scalar, got shape {loss.shape}"
        raise ValueError(msg)
    if not jnp.issubdtype(loss.dtype, jnp.floating):
        msg = f"loss_fn must return a real floating value, got {loss.dtype}"
        raise TypeError(msg)
