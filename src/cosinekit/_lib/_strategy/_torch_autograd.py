"""PyTorch ``autograd.Function`` classes of the autodiff hooks (imported only with torch).

They live at module level, not built on first use inside a function, so that
``torch.compile`` can trace their use: Dynamo does not trace a class
definition.
"""

from __future__ import annotations

from typing import Any

import torch


class StraightThroughClamp(torch.autograd.Function):
    """A clamp whose backward is the identity."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Any, low: float, high: float) -> Any:
        return torch.clamp(x, low, high)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        return grad, None, None

    @staticmethod
    def jvp(ctx: Any, tangent: Any, *_: Any) -> Any:
        return tangent


class ClosedFormBackward(torch.autograd.Function):
    """Attaches a given backward to a given value (see ``closed_form_backward``)."""

    # The old (ctx-first) style: the setup_context style binds arguments
    # with inspect.signature on every call, about 20 microseconds.
    @staticmethod
    def forward(ctx: Any, value: Any, backward: Any, *inputs: Any) -> Any:
        ctx.backward = backward
        ctx.save_for_backward(*inputs)
        return value

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        needed = ctx.needs_input_grad[2:]
        # Grad mode is on here only under create_graph=True.
        recorded = torch.is_grad_enabled()
        return (None, None, *ctx.backward(grad, needed, recorded, *ctx.saved_tensors))


class HandWrittenReverse(torch.autograd.Function):
    """A `tiles.Rule`: its forward, and its backward as the derivative (see ``with_reverse``).

    The setup_context style with ``generate_vmap_rule``, so that
    ``torch.func`` (``grad``, ``vmap``) runs it too, and only inputs and
    outputs are saved: the backward recomputes everything else from them,
    in differentiable operations, so a derivative of the backward
    (``create_graph=True``, ``torch.func.grad`` of ``grad``) is exact.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(rule: Any, *args: Any) -> Any:
        return rule.compute(*args)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        rule, *args = inputs
        ctx.rule = rule
        # None for an output whose gradient is not asked for: the backward
        # skips its term instead of adding zeros as large as a tile.
        ctx.set_materialize_grads(False)
        ctx.tensors = tuple(isinstance(a, torch.Tensor) for a in args)
        ctx.constants = tuple(None if t else a for a, t in zip(args, ctx.tensors, strict=True))
        ctx.outputs = len(output)
        ctx.save_for_backward(*(a for a in args if isinstance(a, torch.Tensor)), *output)

    @staticmethod
    def backward(ctx: Any, *cotangents: Any) -> Any:
        saved = list(ctx.saved_tensors)
        outputs = tuple(saved[len(saved) - ctx.outputs :])
        tensors = iter(saved[: len(saved) - ctx.outputs])
        args = tuple(
            next(tensors) if is_tensor else constant
            for is_tensor, constant in zip(ctx.tensors, ctx.constants, strict=True)
        )
        needed = ctx.needs_input_grad[1:]
        if torch.compiler.is_compiling():
            # torch.compile materializes every cotangent (zeros for the
            # outputs the backward reads back), and never differentiates a
            # backward: those are zero, and skipping them skips their work.
            primary = ctx.rule.primary
            cotangents = (*cotangents[:primary], *(None for _ in cotangents[primary:]))
        return (None, *ctx.rule.reverse(cotangents, needed, args, outputs))
