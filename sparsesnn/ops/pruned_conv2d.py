"""``sparsesnn::pruned_conv2d``: event-driven conv2d over the pruned tap-row layout.

Layout (``csrc/include/sparsesnn/pruned_conv2d.h``): a conv weight ``[O, C, KH, KW]`` is
``C * KH * KW`` tap rows ``(c, ky, kx)`` of O output codes; only rows with a nonzero weight
are stored: ``index [R]`` int32 (kept row ids, ascending) and ``values`` their packed rows
``[R, ceil(O * bits / 8)]`` uint8 (fp32 ``[R, O]`` without quantization). A spike on channel
``c`` then touches only the kept taps of ``c``; with tap-structured pruning (whole
``(c, ky, kx)`` rows zero) the work falls with the kept fraction. Unstructured zeros leave
almost every row nonzero, so the layer keeps the dense packed layout there (chosen by bytes).

CPU binary spikes with one scale group run the gather kernel with a row map; other cases
(analog input, scale groups, fp32 values, CUDA) run the dense-row equivalent through
``sparsesnn::packed_conv2d`` (the CUDA path falls back that way too). Gradient flows to ``x``
only (inference layout; a dense transposed convolution).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _ext, reference
from ._checks import check_devices
from .layout_cache import cached_layout
from .packed_conv2d import (chunked_rows, kernel_params, one_group, out_size, packed_conv2d_kernel,
                            packed_conv2d_op)
from .packed_linear import check_spike_input, dequantized_weight as _dq_rows


def dense_rows(index: Tensor, values: Tensor, bits: int, out_channels: int, rows: int) -> Tensor:
    """The dense packed rows ``[rows, row_bytes]`` (fp32 ``[rows, O]`` for bits 32) equal to the
    pruned layout: dropped rows hold code 0."""
    if bits == 32:
        out = torch.zeros(rows, out_channels, dtype=torch.float32, device=values.device)
        out[index.long()] = values
        return out
    codes = torch.zeros(out_channels, rows, dtype=torch.int8, device=values.device)
    if index.numel():
        codes[:, index.long()] = reference.unpack_codes(values, bits, out_channels)
    return reference.pack_codes(codes, bits)


def row_map(index: Tensor, rows: int) -> Tensor:
    """int32 ``[rows]``: position of each kept row in ``values``, -1 for dropped rows."""
    m = torch.full((rows,), -1, dtype=torch.int32)
    m[index.long()] = torch.arange(index.numel(), dtype=torch.int32)
    return m


def kernel_layout(index: Tensor, values: Tensor, bits: int, out_channels: int, rows: int) -> tuple[Tensor, Tensor]:
    """(chunked kernel rows, row map), built once per ``values`` buffer (``layout_cache``)."""
    return cached_layout(values, f"pruned_conv_{bits}_{out_channels}_{rows}_{index.data_ptr()}",
                         lambda v: (chunked_rows(v, bits, out_channels), row_map(index, rows)))


def dequantized_weight(index: Tensor, values: Tensor, scale: Tensor, bits: int, out_channels: int,
                       in_channels: int, kernel_size: list[int], group_size: int) -> Tensor:
    """The fp32 ``[O, C, KH, KW]`` weight the pruned rows represent."""
    KK = in_channels * kernel_size[0] * kernel_size[1]
    w = _dq_rows(dense_rows(index, values, bits, out_channels, KK), scale, bits, out_channels, KK, group_size)
    return w.reshape(out_channels, in_channels, kernel_size[0], kernel_size[1])


def _check_layout(x: Tensor, index: Tensor, values: Tensor, bits: int, out_channels: int,
                  kernel_size: list[int]) -> None:
    rows = x.shape[1] * kernel_size[0] * kernel_size[1]
    if index.dtype != torch.int32 or index.dim() != 1:
        raise ValueError(f"index: expected a 1-D int32 tensor, got {index.dtype} shape {tuple(index.shape)}")
    width = out_channels if bits == 32 else (out_channels * bits + 7) // 8
    if values.dim() != 2 or tuple(values.shape) != (index.numel(), width):
        raise ValueError(f"values: expected shape ({index.numel()}, {width}), got {tuple(values.shape)}")
    if index.numel() and not x.is_cuda and (int(index.min()) < 0 or int(index.max()) >= rows):
        raise ValueError(f"index: expected row ids in [0, {rows}) (C * KH * KW), got "
                         f"[{int(index.min())}, {int(index.max())}]")


def pruned_conv2d_kernel(x: Tensor, index: Tensor, values: Tensor, scale: Tensor, bias: Optional[Tensor],
                         bits: int, out_channels: int, kernel_size: list[int], stride: list[int],
                         padding: list[int], dilation: list[int], group_size: int, spike: bool) -> Tensor:
    """The kernels on validated input (as :func:`packed_conv2d_kernel`): the pruned gather
    kernel where it applies, else the dense-row equivalent (built once per weight)."""
    rows = x.shape[1] * kernel_size[0] * kernel_size[1]
    gather = not x.is_cuda and bits != 32 and one_group(rows, group_size) and _ext.use_kernel(x)
    if gather and not spike:  # analog input: the gather kernel weighting each kept row by its value
        y = _gather(x, index, values, scale, bias, bits, out_channels, kernel_size, stride, padding, dilation,
                    group_size, analog=True)
        if y is not None:
            return y
    if not (spike and gather):
        dense = cached_layout(values, f"pruned_conv_dense_{bits}_{out_channels}_{rows}_{index.data_ptr()}",
                              lambda v: dense_rows(index, v, bits, out_channels, rows))
        op = packed_conv2d_kernel if _ext.use_kernel(x) else packed_conv2d_op
        return op(x, dense, scale, bias, bits, out_channels, kernel_size, stride, padding, dilation,
                  group_size, spike)
    y = _gather(x, index, values, scale, bias, bits, out_channels, kernel_size, stride, padding, dilation,
                group_size)
    if y is None:  # validated as binary by the op; the analog kernel all the same if not
        return pruned_conv2d_kernel(x, index, values, scale, bias, bits, out_channels, kernel_size, stride,
                                    padding, dilation, group_size, False)
    return y


def _gather(x: Tensor, index: Tensor, values: Tensor, scale: Tensor, bias: Optional[Tensor], bits: int,
            out_channels: int, kernel_size: list[int], stride: list[int], padding: list[int],
            dilation: list[int], group_size: int, analog: bool = False) -> Optional[Tensor]:
    """The pruned gather kernel on spikes (``None`` if it met input that is not 0/1), or with
    ``analog`` on any values (``None`` only for weights too large for its row offsets)."""
    rows = x.shape[1] * kernel_size[0] * kernel_size[1]
    OH = out_size(x.shape[2], kernel_size[0], stride[0], padding[0], dilation[0])
    OW = out_size(x.shape[3], kernel_size[1], stride[1], padding[1], dilation[1])
    y = torch.empty(x.shape[0], out_channels, OH, OW, dtype=torch.float32)
    if y.numel() == 0:
        return y
    wk, rmap = kernel_layout(index, values, bits, out_channels, rows)
    p = kernel_params(x, out_channels, kernel_size, stride, padding, dilation, bits, group_size, OH, OW)
    kernel = _ext._C.packed_conv2d_chunked_analog_cpu if analog else _ext._C.pruned_conv2d_cpu
    ok = kernel(p, x.data_ptr(), wk.data_ptr(), rmap.data_ptr(), scale.data_ptr(),
                bias.data_ptr() if bias is not None else 0, y.data_ptr())
    return y if ok else None


def pruned_conv2d_unchecked(x: Tensor, index: Tensor, values: Tensor, scale: Tensor, bias: Optional[Tensor],
                            bits: int, out_channels: int, kernel_size: list[int], stride: list[int],
                            padding: list[int], dilation: list[int], group_size: int) -> Optional[Tensor]:
    """As :func:`sparsesnn.ops.packed_conv2d.packed_conv2d_unchecked`, for the pruned layout."""
    rows = x.shape[1] * kernel_size[0] * kernel_size[1]
    if x.is_cuda or bits == 32 or not one_group(rows, group_size) or not _ext.use_kernel(x):
        return None
    y = _gather(x, index, values, scale, bias, bits, out_channels, kernel_size, stride, padding, dilation,
                group_size)
    if y is not None:
        return y
    return pruned_conv2d_kernel(x, index, values, scale, bias, bits, out_channels, kernel_size, stride,
                                padding, dilation, group_size, False)


@torch.library.custom_op("sparsesnn::pruned_conv2d", mutates_args=(), device_types=("cpu", "cuda"))
def pruned_conv2d_op(x: Tensor, index: Tensor, values: Tensor, scale: Tensor, bias: Optional[Tensor],
                     bits: int, out_channels: int, kernel_size: list[int], stride: list[int],
                     padding: list[int], dilation: list[int], group_size: int, spike: bool) -> Tensor:
    """``x [NB, C, H, W]`` fp32 -> ``[NB, O, OH, OW]`` fp32 over the pruned tap rows
    (``index [R]`` int32, ``values [R, row_bytes]``), ``scale [O, G]``; ``spike`` as
    ``sparsesnn::packed_conv2d``."""
    check_spike_input(x, spike)
    check_devices("x", x, index=index, values=values, scale=scale, bias=bias)
    _check_layout(x, index, values, bits, out_channels, kernel_size)
    return pruned_conv2d_kernel(x, index, values, scale, bias, bits, out_channels, kernel_size, stride,
                                padding, dilation, group_size, spike)


@pruned_conv2d_op.register_fake
def _(x, index, values, scale, bias, bits, out_channels, kernel_size, stride, padding, dilation, group_size, spike):
    OH = out_size(x.shape[2], kernel_size[0], stride[0], padding[0], dilation[0])
    OW = out_size(x.shape[3], kernel_size[1], stride[1], padding[1], dilation[1])
    return x.new_empty((x.shape[0], out_channels, OH, OW), dtype=torch.float32)


def _setup(ctx, inputs, output):
    x, index, values, scale, bias, bits, out_channels, kernel_size, stride, padding, dilation, group_size, spike = inputs
    ctx.save_for_backward(index, values, scale)
    ctx.args = (bits, out_channels, x.shape[1], list(x.shape), kernel_size, stride, padding, dilation, group_size)


def _backward(ctx, grad_y):
    index, values, scale = ctx.saved_tensors
    bits, O, C, shape, kernel_size, stride, padding, dilation, group_size = ctx.args
    w = dequantized_weight(index, values, scale, bits, O, C, kernel_size, group_size)
    gx = torch.nn.grad.conv2d_input(shape, w, grad_y.float(), stride, padding, dilation)
    return (gx,) + (None,) * 12


pruned_conv2d_op.register_autograd(_backward, setup_context=_setup)


def tap_mask(weight: Tensor, sparsity: float) -> Tensor:
    """Tap-structured pruning mask for a conv weight ``[O, C, KH, KW]``: keeps the
    ``1 - sparsity`` fraction of tap rows ``(c, ky, kx)`` (all O outputs of one input channel at
    one kernel position) with the largest L2 norm; bool, the weight's shape. This is the
    sparsity the pruned layout turns into speed (unstructured zeros leave nearly every row)."""
    if weight.dim() != 4:
        raise ValueError(f"weight: expected 4 dims [O, C, KH, KW], got shape {tuple(weight.shape)}")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity: expected a fraction in [0, 1], got {sparsity}")
    norms = weight.detach().float().pow(2).sum(0).flatten()  # [C*KH*KW]
    keep = norms.numel() - int(round(sparsity * norms.numel()))
    rows = torch.zeros_like(norms, dtype=torch.bool)
    if keep > 0:
        rows[norms.topk(keep).indices] = True
    return rows.reshape(weight.shape[1:]).unsqueeze(0).expand_as(weight).clone()
