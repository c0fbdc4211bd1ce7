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
