"""``sparsesnn::pruned_linear``: linear layer over pruned weights in the compressed-row
layout indexed by input neuron (values fp32 or packed low-bit codes). ``spike=True``: binary
x, integer accumulation of codes; ``False``: fp32 accumulation of ``x * value`` over x != 0.
Gradient flows to ``x`` only, through ``sparsesnn::pruned_linear_backward``.
"""
from __future__ import annotations

import functools

from typing import Optional

import torch
from torch import Tensor

from .. import _ext, reference
from . import _checks as C
from .packed_linear import _params as packed_params, check_spike_input
from .pruned_blocks import spike_layout


def dequantized_weight(row_ptr: Tensor, index: Tensor, values: Tensor, scale: Tensor, bits: int,
                       out_features: int, group_size: int) -> Tensor:
    """The fp32 ``[N, K]`` weight (zeros where pruned)."""
    dense = reference.pruned_dense_codes(row_ptr, index, values, bits, out_features)
    if bits == 32:
        return dense
    K = dense.shape[1]
    G, L = reference._groups(K, group_size)
    s = scale.reshape(out_features, G).repeat_interleave(L, dim=1)[:, :K]
    return dense.float() * s


@functools.lru_cache(maxsize=1024)
def _cpu_params(M: int, K: int, N: int, bits: int, group_size: int, index16: bool, threads: int):
    p = _ext._C.PrunedLinearParams()
    p.M, p.K, p.N, p.bits, p.group_size = M, K, N, bits, group_size
    p.index16, p.threads = index16, threads
    return p


def pruned_linear_cpu(x: Tensor, row_ptr: Tensor, index: Tensor, values: Tensor, scale: Tensor,
                      bias: Optional[Tensor], bits: int, out_features: int, group_size: int,
                      spike: bool) -> Tensor:
    """The CPU kernels on validated input: ``x [M, K]`` fp32 contiguous, binary if ``spike``
    (then the blocked or dense packed layout, whichever is cheaper: ``pruned_blocks``). The op calls it after its
    checks; modules call it directly on their inference fast path."""
    M, K = x.shape
    N = out_features
    y = torch.empty(M, N)
    if not (M and N):
        return y
    b = 0 if bias is None else bias.data_ptr()
    layout = spike_layout(row_ptr, index, values, bits, N) if spike else None
    if layout is not None and layout[0] == "dense":
        _ext._C.packed_linear_cpu(packed_params(M, K, N, bits, group_size), True, x.data_ptr(),
                                  layout[1].data_ptr(), scale.data_ptr(), b, y.data_ptr())
        return y
    p = _cpu_params(M, K, N, bits, group_size, index.dtype == torch.uint16, _ext.num_threads())
    if layout is not None:
        _ext._C.pruned_blocks_spike_linear_cpu(p, x.data_ptr(), *(t.data_ptr() for t in layout[1]),
                                               scale.data_ptr(), b, y.data_ptr())
    else:
        _ext._C.pruned_linear_cpu(p, spike, x.data_ptr(), row_ptr.data_ptr(), index.data_ptr(),
                                  values.data_ptr(), scale.data_ptr(), b, y.data_ptr())
    return y


@torch.library.custom_op("sparsesnn::pruned_linear", mutates_args=(), device_types=("cpu", "cuda"))
def pruned_linear_op(x: Tensor, row_ptr: Tensor, index: Tensor, values: Tensor, scale: Tensor,
                     bias: Optional[Tensor], bits: int, out_features: int, group_size: int,
                     spike: bool) -> Tensor:
    """``x [M, K]`` fp32 -> ``[M, N]`` fp32. ``spike``: as ``sparsesnn::packed_linear``."""
    M, K = x.shape
    N = out_features
    check_spike_input(x, spike)
    C.check_devices("x", x, row_ptr=row_ptr, index=index, values=values, scale=scale, bias=bias)
    if not _ext.use_kernel(x):
        return reference.pruned_linear(x, row_ptr, index, values, scale, bias, bits, N, group_size)
    if not x.is_cuda:
        return pruned_linear_cpu(x, row_ptr, index, values, scale, bias, bits, N, group_size, spike)
    p = _ext._C.PrunedLinearParams()
    p.M, p.K, p.N, p.bits, p.group_size = M, K, N, bits, group_size
    p.index16, p.threads = index.dtype == torch.uint16, _ext.num_threads()
    b = bias.data_ptr() if bias is not None else 0
    y = torch.empty(M, N, dtype=torch.float32, device=x.device)
    # Per-block scratch (not [M, N]); the kernel leaves it zero again.
    work = torch.zeros(_ext._C.pruned_linear_cuda_work_floats(p), dtype=torch.float32, device=x.device)
    if M and N:
        _ext._C.pruned_linear_cuda(p, spike, x.data_ptr(), row_ptr.data_ptr(), index.data_ptr(),
                                   values.data_ptr(), scale.data_ptr(), b, y.data_ptr(),
                                   work.data_ptr(), x.device.index, _ext.cuda_stream(x.device))
    return y


@pruned_linear_op.register_fake
def _(x, row_ptr, index, values, scale, bias, bits, out_features, group_size, spike):
    return x.new_empty((x.shape[0], out_features), dtype=torch.float32)


@torch.library.custom_op("sparsesnn::pruned_linear_backward", mutates_args=(), device_types=("cpu", "cuda"))
def pruned_linear_backward_op(grad_y: Tensor, row_ptr: Tensor, index: Tensor, values: Tensor,
                              scale: Tensor, bits: int, group_size: int) -> Tensor:
    """``grad_x = grad_y @ W_hat`` (dense)."""
    w = dequantized_weight(row_ptr, index, values, scale, bits, grad_y.shape[1], group_size)
    return grad_y.float() @ w


@pruned_linear_backward_op.register_fake
def _(grad_y, row_ptr, index, values, scale, bits, group_size):
    return grad_y.new_empty((grad_y.shape[0], row_ptr.shape[0] - 1), dtype=torch.float32)


def _setup(ctx, inputs, output):
    x, row_ptr, index, values, scale, bias, bits, out_features, group_size, spike = inputs
    ctx.save_for_backward(row_ptr, index, values, scale)
    ctx.args = (bits, group_size)


def _backward(ctx, grad_y):
    gx = pruned_linear_backward_op(grad_y.contiguous(), *ctx.saved_tensors, *ctx.args)
    return (gx,) + (None,) * 9


pruned_linear_op.register_autograd(_backward, setup_context=_setup)
