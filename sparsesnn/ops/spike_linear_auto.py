"""``sparsesnn::spike_linear_auto``: ``SpikingLinear``'s density dispatch as one op.

In eager mode the module measures the density in Python and picks a path. Under
``torch.compile`` that measurement (a data-dependent branch on a kernel's count) would break
the graph, so the module calls this op instead: it measures the input when it runs, then takes
the event-driven kernel (binary input below the break-even density) or the dense product.
Its gradient is the dense one either way (it is the same function).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _ext, dispatch
from ._fast import direct
from .spike_linear import SPIKE_TYPES, kernel_weight, spike_linear_op, spike_stats


@torch.library.custom_op("sparsesnn::spike_linear_auto", mutates_args=(), device_types=("cpu", "cuda"))
def spike_linear_auto_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], break_even: float) -> Tensor:
    """``x [M, K]`` (contiguous; binary spikes or analog values) -> ``[M, N]`` fp32.
    ``break_even``: density below which binary input runs event-driven; negative: the
    module's default (``sparsesnn.dispatch.choose``)."""
    dense = lambda: torch.nn.functional.linear(x.to(weight.dtype), weight, bias).float()  # noqa: E731
    if x.numel() and x.dtype in SPIKE_TYPES and _ext.use_kernel(x):
        nonzero, nonbinary = spike_stats(x)
        if not nonbinary:
            override = None if break_even < 0 else break_even
            return dispatch.choose("linear", nonzero / x.numel(), x.shape[0], x.device.type, override,
                                   tuple(weight.shape[::-1]), dense,
                                   lambda: direct(spike_linear_op)(x, weight, kernel_weight(weight), bias))[1]
    return dense()


@spike_linear_auto_op.register_fake
def _(x, weight, bias, break_even):
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=torch.float32)


def _setup(ctx, inputs, output):
    x, weight, bias, _ = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    gx = gw = gb = None
    if ctx.needs_input_grad[0]:
        gx = (grad @ weight).to(x.dtype)
    if ctx.needs_input_grad[1]:
        gw = grad.t() @ x.to(grad.dtype)
    if ctx.needs_input_grad[2]:
        gb = grad.sum(0)
    return gx, gw, gb, None


spike_linear_auto_op.register_autograd(_backward, setup_context=_setup)
