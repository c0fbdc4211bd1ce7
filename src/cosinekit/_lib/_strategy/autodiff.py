"""Autodiff hooks: what the standard lacks for gradients, per library and `Mode`.

``stop_gradient``
    Straight-through clipping and constant scale factors need it; the
    standard has no autodiff. Libraries without autodiff get the identity.
``clip_straight_through``
    Bounds clipping whose gradient is the identity. The portable form
    ``x + stop_gradient(clip(x) - x)`` reads and writes the result three
    times, which on a pairwise ``(n, m)`` matrix costs more than half the
    matmul on NumPy and PyTorch. Libraries without autodiff clip once;
    eager PyTorch clamps once and, when a gradient is recorded (or a
    ``torch.func`` transform runs), passes it through an
    ``autograd.Function``; JAX and ``torch.compile`` keep the portable form,
    which their compilers fuse into one pass.
``closed_form_backward``
    Attaches a hand-written backward to a value computed outside the
    gradient. Eager PyTorch autograd records and replays each of the dozen
    small operations of the cosine's fast path; the closed form costs a few
    passes (see ``benchmarks/``). The same ``autograd.Function`` is traced by
    ``torch.compile``.
``closed_form_jvp``
    The same closed form under JAX transformations, as a ``jax.custom_jvp``:
    XLA would otherwise keep the intermediates of the differentiated forward
    and of both ``lax.cond`` branches.
``traced_branch``
    A conditional that runs inside a trace: ``lax.cond`` on JAX and
    ``torch.cond`` under ``torch.compile``, so that the common case is one
    fused pass and the rescaled path runs only when some row needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import is_jax_namespace, is_numpy_namespace, is_torch_namespace

from .mode import Autodiff, Mode

Array = Any


def stop_gradient(xp: ModuleType, x: Array) -> Array:
    """Return ``x`` with its gradient path cut (identity without autodiff)."""
    if is_torch_namespace(xp):
        return x.detach()
    if is_jax_namespace(xp):
        import jax

        return jax.lax.stop_gradient(x)
    return x


def clip_straight_through(
    xp: ModuleType, mode: Mode, x: Array, low: float, high: float, *, owned: bool = False
) -> Array:
    """Clip values to ``[low, high]`` but pass the gradient through unchanged.

    ``owned=True`` says that ``x`` is a fresh intermediate nobody else holds,
    so NumPy and PyTorch (without autodiff) may clip it in place and spare
    the allocation of a second result as large as a pairwise matrix.
    """
    if is_jax_namespace(xp):
        return x + stop_gradient(xp, xp.clip(x, low, high) - x)
    if is_torch_namespace(xp):
        return _torch_clip_straight_through(mode, x, low, high, owned=owned)
    if owned and is_numpy_namespace(xp) and isinstance(x, np.ndarray):
        return np.clip(x, low, high, out=x)
    return xp.clip(x, low, high)


def _torch_clip_straight_through(
    mode: Mode, x: Array, low: float, high: float, *, owned: bool
) -> Array:
    import torch

    autodiff = mode.autodiff
    if autodiff is Autodiff.TORCH_COMPILE:
        # The compiler fuses the portable form into one pass anyway.
        return x + (torch.clamp(x, low, high) - x).detach()
    if autodiff is Autodiff.TORCH_FUNC or (
        autodiff is Autodiff.TORCH_AUTOGRAD and x.requires_grad
    ):
        from ._torch_autograd import StraightThroughClamp

        return StraightThroughClamp.apply(x, low, high)
    if owned:
        return x.clamp_(low, high)
    return torch.clamp(x, low, high)


def closed_form_backward(
    xp: ModuleType, mode: Mode, *inputs: Array
) -> Callable[..., Array] | None:
    """``attach(value, backward, *inputs)``, where a hand-written backward pays; else None.

    ``attach`` returns ``value`` (computed outside the gradient) with
    ``backward(grad, needed, recorded, *inputs)`` as its gradient with
    respect to ``inputs``; ``needed`` says per input whether its gradient is
    wanted (the others may be None), and ``recorded`` that the backward
    itself is being differentiated (``create_graph=True``), so that it must
    recompute from ``inputs`` what it would otherwise take from the forward.
    Eager PyTorch recording a gradient of one of ``inputs`` gets it, and
    ``torch.compile``, which traces the Function into its graph; under
    ``torch.func`` it is never asked for.
    """
    if mode.autodiff not in (Autodiff.TORCH_AUTOGRAD, Autodiff.TORCH_COMPILE):
        return None
    import torch

    if not torch.is_grad_enabled() or not any(x.requires_grad for x in inputs):
        return None
    from ._torch_autograd import ClosedFormBackward

    def attach(value: Array, backward: Callable[..., Any], *arrays: Array) -> Array:
        return ClosedFormBackward.apply(value, backward, *arrays)

    return attach


def closed_form_jvp(xp: ModuleType) -> Callable[..., Callable[..., Array]] | None:
    """``define(parts, value, tangent)``: a traced function with a hand-written derivative.

    The function of ``inputs`` is ``value(parts(*inputs))``; its derivative
    in the direction of ``tangents`` is ``tangent(parts(*inputs), tangents,
    *inputs)``, where a tangent that is known to be zero is None. Only JAX
    (``jax.custom_jvp``): XLA fuses the closed form into two passes over the
    data where the differentiated program takes several with materialized
    intermediates, and a ``lax.cond`` inside ``parts`` keeps only per-row
    residuals (a differentiated ``lax.cond`` keeps the residuals of both
    branches). A jvp rule, not a vjp, so that forward mode (``jvp``,
    ``jacfwd``) and higher orders keep working.
    """
    if not is_jax_namespace(xp):
        return None
    return _jax_closed_form_jvp


def _jax_closed_form_jvp(
    parts: Callable[..., Any], value: Callable[[Any], Array], tangent: Callable[..., Array]
) -> Callable[..., Array]:
    import jax
    from jax.custom_derivatives import SymbolicZero

    @jax.custom_jvp  # type: ignore[untyped-decorator]
    def function(*inputs: Array) -> Array:
        return value(parts(*inputs))

    def rule(primals: tuple[Array, ...], tangents: tuple[Any, ...]) -> tuple[Array, Array]:
        computed = parts(*primals)
        # symbolic_zeros: an input that is not differentiated costs nothing.
        live = tuple(None if isinstance(t, SymbolicZero) else t for t in tangents)
        return value(computed), tangent(computed, live, *primals)

    function.defjvp(rule, symbolic_zeros=True)
    return function  # type: ignore[no-any-return]


def traced_branch(xp: ModuleType, mode: Mode) -> Callable[..., Any] | None:
    """``cond(predicate, if_true, if_false)`` that works under a trace, or None.

    JAX's ``lax.cond`` runs just the chosen branch, and under ``vmap`` turns
    into a select of both, which is still correct. Under ``torch.compile``,
    ``torch.cond``: its branches must compute what they return (no aliases
    of their inputs, no None).
    """
    if is_jax_namespace(xp):
        import jax

        cond: Callable[..., Any] = jax.lax.cond
        return cond
    if mode.autodiff is Autodiff.TORCH_COMPILE:
        return _torch_cond
    return None


def _torch_cond(predicate: Array, if_true: Callable[[], Any], if_false: Callable[[], Any]) -> Any:
    import torch

    # The branches close over their tensors; the compiler lifts them.
    return torch.cond(predicate, if_true, if_false, ())
