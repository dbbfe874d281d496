"""``sparsesnn::packed_conv2d``: event-driven conv2d over packed low-bit (or fp32) weight
rows ``(c, ky, kx)``. ``spike=True``: binary x, integer accumulation; ``False``: analog x.
Gradient flows to ``x`` only (``sparsesnn::packed_conv2d_backward``, a dense transposed conv).

On CPU, binary spikes with one scale group run the register-tiled gather kernel
(``csrc/cpu/conv_gather.h``) over the *chunked* form of the packed rows: per 64-byte chunk,
slot ``s`` of byte ``j`` holds output ``s * 64 + j``, so every unpacked slot is 64
consecutive outputs. It is derived once per weight buffer (``layout_cache``), never per call.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _ext, reference
from ._checks import check_devices
from .layout_cache import cached_layout
from .packed_linear import check_spike_input


def out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def chunked_rows(rows: Tensor, bits: int, out_channels: int) -> Tensor:
    """Packed rows ``[R, ceil(O * bits / 8)]`` (pack.h) -> chunked kernel rows uint8
    ``[R, nch * 64]``, ``nch = ceil(O / (512 / bits))``: in chunk ``q``, bits ``[s * bits, (s + 1)
    * bits)`` of byte ``j`` hold the stored (unsigned) code of output ``q * 512 / bits + s * 64
    + j``; padding outputs hold 0."""
    R = rows.shape[0]
    per = 8 // bits
    cw = 64 * per  # outputs per chunk
    nch = max(1, -(-out_channels // cw))
    shifts = torch.arange(per, dtype=torch.int32) * bits
    u = ((rows.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).reshape(R, rows.shape[1] * per)
    u = u[:, :out_channels]
    full = torch.zeros(R, nch * cw, dtype=torch.int32)
    full[:, :out_channels] = u
    full = full.reshape(R, nch, per, 64) << shifts.view(1, 1, per, 1)
    return full.sum(2).to(torch.uint8).reshape(R, nch * 64).contiguous()


def one_group(rows: int, group_size: int) -> bool:
    """Whether ``group_size`` gives a single scale group over ``rows`` kernel rows."""
    return group_size <= 0 or group_size >= rows


def kernel_params(x: Tensor, out_channels: int, kernel_size: list[int], stride: list[int],
                  padding: list[int], dilation: list[int], bits: int, group_size: int, OH: int, OW: int):
    """The ``PackedConv2dParams`` of a call."""
    p = _ext._C.PackedConv2dParams()
    p.NB, p.C, p.H, p.W = x.shape
    p.O, p.KH, p.KW, p.OH, p.OW = out_channels, kernel_size[0], kernel_size[1], OH, OW
    p.sh, p.sw, p.ph, p.pw, p.dh, p.dw = stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]
    p.bits, p.group_size, p.threads = bits, group_size, _ext.num_threads()
    return p


def dequantized_weight(weights: Tensor, scale: Tensor, bits: int, out_channels: int,
                       in_channels: int, kernel_size: list[int], group_size: int) -> Tensor:
    """The fp32 ``[O, C, KH, KW]`` weight the packed rows represent."""
    from .packed_linear import dequantized_weight as dq

    KK = in_channels * kernel_size[0] * kernel_size[1]
    w = dq(weights, scale, bits, out_channels, KK, group_size)
    return w.reshape(out_channels, in_channels, kernel_size[0], kernel_size[1])


def packed_conv2d_kernel(x: Tensor, weights: Tensor, scale: Tensor, bias: Optional[Tensor], bits: int,
                         out_channels: int, kernel_size: list[int], stride: list[int], padding: list[int],
                         dilation: list[int], group_size: int, spike: bool) -> Tensor:
    """The compiled kernel on validated input (``x`` fp32 contiguous ``[NB, C, H, W]``, binary
    if ``spike``, tensors on one device). The op calls it after its checks; modules call it
    directly on their inference fast path."""
    NB, C, H, W = x.shape
    OH = out_size(H, kernel_size[0], stride[0], padding[0], dilation[0])
    OW = out_size(W, kernel_size[1], stride[1], padding[1], dilation[1])
    y = torch.empty(NB, out_channels, OH, OW, dtype=torch.float32, device=x.device)
    if y.numel() == 0:
        return y
    p = kernel_params(x, out_channels, kernel_size, stride, padding, dilation, bits, group_size, OH, OW)
    b = bias.data_ptr() if bias is not None else 0
    if x.is_cuda:
        _ext._C.packed_conv2d_cuda(p, spike, x.data_ptr(), weights.data_ptr(), scale.data_ptr(), b,
                                   y.data_ptr(), x.device.index, _ext.cuda_stream(x.device))
        return y
    if bits != 32 and one_group(weights.shape[0], group_size):
        # The gather kernel: integer code sums for spikes, value-weighted fp32 sums otherwise.
        # It refuses only weights too large for its row offsets (> 2 GiB).
        wk = cached_layout(weights, f"conv_chunked_{bits}_{out_channels}",
                           lambda w: chunked_rows(w, bits, out_channels))
        if spike:
            ok = _ext._C.packed_conv2d_chunked_cpu(p, x.data_ptr(), wk.data_ptr(), scale.data_ptr(), b,
                                                   y.data_ptr())
        else:
            ok = _ext._C.packed_conv2d_chunked_analog_cpu(p, x.data_ptr(), wk.data_ptr(), 0, scale.data_ptr(), b,
                                                          y.data_ptr())
        if ok:
            return y
    _ext._C.packed_conv2d_cpu(p, spike, x.data_ptr(), weights.data_ptr(), scale.data_ptr(), b, y.data_ptr())
    return y


def packed_conv2d_unchecked(x: Tensor, weights: Tensor, scale: Tensor, bias: Optional[Tensor], bits: int,
                            out_channels: int, kernel_size: list[int], stride: list[int], padding: list[int],
                            dilation: list[int], group_size: int) -> Optional[Tensor]:
    """Inference fast path for input whose binarity is not known (``x`` fp32 contiguous on the
    CPU): the spike kernel checks it while listing the events and, if a value is neither 0 nor 1,
    the analog kernel runs instead -- no separate pass over ``x``. None where the spike kernel
    does not apply (the caller then checks the input itself)."""
    if x.is_cuda or bits == 32 or not one_group(weights.shape[0], group_size) or not _ext.use_kernel(x):
        return None
    NB, C, H, W = x.shape
    OH = out_size(H, kernel_size[0], stride[0], padding[0], dilation[0])
    OW = out_size(W, kernel_size[1], stride[1], padding[1], dilation[1])
    y = torch.empty(NB, out_channels, OH, OW, dtype=torch.float32)
    if y.numel() == 0:
        return y
    p = kernel_params(x, out_channels, kernel_size, stride, padding, dilation, bits, group_size, OH, OW)
    wk = cached_layout(weights, f"conv_chunked_{bits}_{out_channels}", lambda w: chunked_rows(w, bits, out_channels))
    b = bias.data_ptr() if bias is not None else 0
    if _ext._C.packed_conv2d_chunked_cpu(p, x.data_ptr(), wk.data_ptr(), scale.data_ptr(), b, y.data_ptr()):
        return y
    return packed_conv2d_kernel(x, weights, scale, bias, bits, out_channels, kernel_size, stride, padding,
                                dilation, group_size, False)


@torch.library.custom_op("sparsesnn::packed_conv2d", mutates_args=(), device_types=("cpu", "cuda"))
def packed_conv2d_op(x: Tensor, weights: Tensor, scale: Tensor, bias: Optional[Tensor], bits: int,
                     out_channels: int, kernel_size: list[int], stride: list[int],
                     padding: list[int], dilation: list[int], group_size: int, spike: bool) -> Tensor:
    """``x [NB, C, H, W]`` fp32 -> ``[NB, O, OH, OW]`` fp32. ``spike``: as
    ``sparsesnn::packed_linear``."""
    check_spike_input(x, spike)
    check_devices("x", x, weights=weights, scale=scale, bias=bias)
    if not _ext.use_kernel(x):
        return reference.packed_conv2d(x, weights, scale, bias, bits, out_channels, tuple(kernel_size),
                                       tuple(stride), tuple(padding), tuple(dilation), group_size)
    return packed_conv2d_kernel(x, weights, scale, bias, bits, out_channels, kernel_size, stride, padding,
                                dilation, group_size, spike)


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
