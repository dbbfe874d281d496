"""``sparsesnn::packed_conv2d``: event-driven conv2d over packed low-bit (or fp32) weight
rows ``(c, ky, kx)``. ``spike=True``: binary x, integer accumulation; ``False``: analog x.
Gradient flows to ``x`` only (``sparsesnn::packed_conv2d_backward``, a dense transposed conv).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _ext, reference
from ._checks import check_devices
from .packed_linear import check_spike_input


def out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def dequantized_weight(weights: Tensor, scale: Tensor, bits: int, out_channels: int,
                       in_channels: int, kernel_size: list[int], group_size: int) -> Tensor:
    """The fp32 ``[O, C, KH, KW]`` weight the packed rows represent."""
    from .packed_linear import dequantized_weight as dq

    KK = in_channels * kernel_size[0] * kernel_size[1]
    w = dq(weights, scale, bits, out_channels, KK, group_size)
    return w.reshape(out_channels, in_channels, kernel_size[0], kernel_size[1])


@torch.library.custom_op("sparsesnn::packed_conv2d", mutates_args=(), device_types=("cpu", "cuda"))
def packed_conv2d_op(x: Tensor, weights: Tensor, scale: Tensor, bias: Optional[Tensor], bits: int,
                     out_channels: int, kernel_size: list[int], stride: list[int],
                     padding: list[int], dilation: list[int], group_size: int, spike: bool) -> Tensor:
    """``x [NB, C, H, W]`` fp32 -> ``[NB, O, OH, OW]`` fp32. ``spike``: as
    ``sparsesnn::packed_linear``."""
    check_spike_input(x, spike)
    check_devices("x", x, weights=weights, scale=scale, bias=bias)
    NB, C, H, W = x.shape
    OH = out_size(H, kernel_size[0], stride[0], padding[0], dilation[0])
    OW = out_size(W, kernel_size[1], stride[1], padding[1], dilation[1])
    if not _ext.use_kernel(x):
        return reference.packed_conv2d(x, weights, scale, bias, bits, out_channels, tuple(kernel_size),
                                       tuple(stride), tuple(padding), tuple(dilation), group_size)
    y = torch.empty(NB, out_channels, OH, OW, dtype=torch.float32, device=x.device)
    if y.numel() == 0:
        return y
    p = _ext._C.PackedConv2dParams()
    p.NB, p.C, p.H, p.W, p.O = NB, C, H, W, out_channels
    p.KH, p.KW, p.OH, p.OW = kernel_size[0], kernel_size[1], OH, OW
    p.sh, p.sw, p.ph, p.pw, p.dh, p.dw = stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]
    p.bits, p.group_size, p.threads = bits, group_size, _ext.num_threads()
    b = bias.data_ptr() if bias is not None else 0
    if x.is_cuda:
        _ext._C.packed_conv2d_cuda(p, spike, x.data_ptr(), weights.data_ptr(), scale.data_ptr(), b,
                                   y.data_ptr(), x.device.index, _ext.cuda_stream(x.device))
    else:
        _ext._C.packed_conv2d_cpu(p, spike, x.data_ptr(), weights.data_ptr(), scale.data_ptr(), b,
                                  y.data_ptr())
    return y


@packed_conv2d_op.register_fake
def _(x, weights, scale, bias, bits, out_channels, kernel_size, stride, padding, dilation, group_size, spike):
    OH = out_size(x.shape[2], kernel_size[0], stride[0], padding[0], dilation[0])
    OW = out_size(x.shape[3], kernel_size[1], stride[1], padding[1], dilation[1])
    return x.new_empty((x.shape[0], out_channels, OH, OW), dtype=torch.float32)


@torch.library.custom_op("sparsesnn::packed_conv2d_backward", mutates_args=(), device_types=("cpu", "cuda"))
def packed_conv2d_backward_op(grad_y: Tensor, weights: Tensor, scale: Tensor, bits: int,
                              input_shape: list[int], kernel_size: list[int], stride: list[int],
                              padding: list[int], dilation: list[int], group_size: int) -> Tensor:
    """``grad_x`` of the convolution (dense transposed convolution with ``W_hat``)."""
    w = dequantized_weight(weights, scale, bits, grad_y.shape[1], input_shape[1], kernel_size, group_size)
    return torch.nn.grad.conv2d_input(list(input_shape), w, grad_y.float(), stride, padding, dilation)


@packed_conv2d_backward_op.register_fake
def _(grad_y, weights, scale, bits, input_shape, kernel_size, stride, padding, dilation, group_size):
    return grad_y.new_empty(list(input_shape), dtype=torch.float32)


def _setup(ctx, inputs, output):
    x, weights, scale, bias, bits, out_channels, kernel_size, stride, padding, dilation, group_size, spike = inputs
    ctx.save_for_backward(weights, scale)
    ctx.args = (bits, list(x.shape), kernel_size, stride, padding, dilation, group_size)


def _backward(ctx, grad_y):
    weights, scale = ctx.saved_tensors
    gx = packed_conv2d_backward_op(grad_y.contiguous(), weights, scale, *ctx.args)
    return (gx,) + (None,) * 11


packed_conv2d_op.register_autograd(_backward, setup_context=_setup)
