"""``sparsesnn::spike_conv2d`` (event-driven convolution of spikes) and its grad_weight op.

Padding is passed as ``[top, left]`` plus the output size ``out_hw``, which covers symmetric
padding, ``"valid"`` and ``"same"`` (possibly asymmetric) alike. Backward: ``grad_weight`` is
event-driven (only active input pixels contribute), ``grad_s`` is dense (a transposed
convolution: the previous layer's surrogate needs a gradient at every pixel).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _ext, reference
from .layout_cache import cached_layout
from .spike_linear import SPIKE_TYPES


def rearrange_weight(weight: Tensor, groups: int) -> Tensor:
    """``[O, C/G, KH, KW]`` -> the kernel's channels-last layout ``[G, KH, KW, C/G, O/G]``."""
    O, Cg, KH, KW = weight.shape
    w = weight.detach().reshape(groups, O // groups, Cg, KH, KW)
    return w.permute(0, 3, 4, 2, 1).contiguous().float()


def cached_rearranged_weight(weight: Tensor, groups: int) -> Tensor:
    """:func:`rearrange_weight`, built once per weight version (see ``layout_cache``)."""
    if torch.compiler.is_compiling():
        return rearrange_weight(weight, groups)
    return cached_layout(weight, f"conv_g{groups}", lambda w: rearrange_weight(w, groups))


def _params(s: Tensor, weight_size: list[int], stride: list[int], padding: list[int],
            out_hw: list[int], dilation: list[int], groups: int):
    p = _ext._C.SpikeConv2dParams()
    p.N, p.C, p.H, p.W = s.shape
    p.O, p.KH, p.KW = weight_size[0], weight_size[2], weight_size[3]
    p.OH, p.OW = out_hw
    p.stride_h, p.stride_w = stride
    p.pad_top, p.pad_left = padding
    p.dil_h, p.dil_w = dilation
    p.groups, p.spike_type, p.threads = groups, SPIKE_TYPES[s.dtype], _ext.num_threads()
    return p


@torch.library.custom_op("sparsesnn::spike_conv2d", mutates_args=(), device_types=("cpu", "cuda"))
def spike_conv2d_op(s: Tensor, weight: Tensor, weight_r: Tensor, bias: Optional[Tensor],
                    stride: list[int], padding: list[int], out_hw: list[int], dilation: list[int],
                    groups: int) -> Tensor:
    """``s [N, C, H, W]`` binary (fp32/uint8/bool, contiguous), ``weight [O, C/G, KH, KW]`` fp32
    (carries the gradient), ``weight_r`` its ``[G, KH, KW, C/G, O/G]`` copy (what the kernel
    reads), ``bias [O]`` -> ``[N, O, OH, OW]`` fp32."""
    if not _ext.use_kernel(s):
        return reference.spike_conv2d(s, weight, bias, stride, padding, out_hw, dilation, groups)
    out = torch.empty((s.shape[0], weight.shape[0], out_hw[0], out_hw[1]), dtype=torch.float32,
                      device=s.device)
    p = _params(s, list(weight.shape), stride, padding, out_hw, dilation, groups)
    bias_ptr = 0 if bias is None else bias.data_ptr()
    if s.is_cuda:
        _ext._C.spike_conv2d_forward_cuda(p, s.data_ptr(), weight_r.data_ptr(), bias_ptr, out.data_ptr(),
                                          s.device.index, _ext.cuda_stream(s.device))
    else:
        _ext._C.spike_conv2d_forward_cpu(p, s.data_ptr(), weight_r.data_ptr(), bias_ptr, out.data_ptr())
    return out


@torch.library.custom_op("sparsesnn::spike_conv2d_grad_weight", mutates_args=(),
                         device_types=("cpu", "cuda"))
def spike_conv2d_grad_weight_op(s: Tensor, grad_out: Tensor, weight_size: list[int], stride: list[int],
                                padding: list[int], dilation: list[int], groups: int) -> Tensor:
    """Event-driven ``grad_weight [O, C/G, KH, KW]`` from ``s [N, C, H, W]`` and fp32
    ``grad_out [N, O, OH, OW]``."""
    if not _ext.use_kernel(s):
        return reference.spike_conv2d_grad_weight(s, grad_out, weight_size, stride, padding, dilation, groups)
    grad_cl = grad_out.permute(0, 2, 3, 1).contiguous()
    gw = torch.empty(weight_size, dtype=torch.float32, device=s.device)
    p = _params(s, weight_size, stride, padding, list(grad_out.shape[-2:]), dilation, groups)
    if s.is_cuda:
        _ext._C.spike_conv2d_grad_weight_cuda(p, s.data_ptr(), grad_cl.data_ptr(), gw.data_ptr(),
                                              s.device.index, _ext.cuda_stream(s.device))
    else:
        _ext._C.spike_conv2d_grad_weight_cpu(p, s.data_ptr(), grad_cl.data_ptr(), gw.data_ptr())
    return gw


@spike_conv2d_op.register_fake
def _(s, weight, weight_r, bias, stride, padding, out_hw, dilation, groups):
    return s.new_empty((s.shape[0], weight.shape[0], out_hw[0], out_hw[1]), dtype=torch.float32)


@spike_conv2d_grad_weight_op.register_fake
def _(s, grad_out, weight_size, stride, padding, dilation, groups):
    return grad_out.new_empty(weight_size, dtype=torch.float32)


def _setup(ctx, inputs, output):
    s, weight, weight_r, bias, stride, padding, out_hw, dilation, groups = inputs
    ctx.save_for_backward(s, weight)
    ctx.conf = (list(stride), list(padding), list(dilation), groups)


def _backward(ctx, grad):
    s, weight = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.conf
    grad = grad.contiguous().float()
    gs = gw = gb = None
    if ctx.needs_input_grad[0]:
        gs = reference.spike_conv2d_grad_input(grad, weight.to(grad.dtype), s.shape[-2:], stride,
                                               padding, dilation, groups).to(s.dtype)
    if ctx.needs_input_grad[1]:
        gw = spike_conv2d_grad_weight_op(s, grad, list(weight.shape), stride, padding, dilation,
                                         groups).to(weight.dtype)
    if ctx.needs_input_grad[3]:
        gb = grad.sum((0, 2, 3))
    return gs, gw, None, gb, None, None, None, None, None


spike_conv2d_op.register_autograd(_backward, setup_context=_setup)
