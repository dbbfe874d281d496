"""``sparsesnn::packed_linear``: linear layer over packed low-bit (or fp32 input-major)
weights. ``spike=True`` runs the integer event-driven kernel (x must be binary), ``False`` the
dense-path kernel (fp32 accumulation; analog input or high density).

Arguments arrive validated and contiguous from ``sparsesnn.nn.PackedSpikingLinear`` /
``sparsesnn.functional.packed_linear``. Gradient flows to ``x`` only (weights are frozen
integer buffers); the backward is the ``sparsesnn::packed_linear_backward`` op.
"""
from __future__ import annotations

import functools

from typing import Optional

import torch
from torch import Tensor

from .. import _ext, reference
from . import _checks as C


def _params(M: int, K: int, N: int, bits: int, group_size: int):
    return _cached_params(M, K, N, bits, group_size, _ext.num_threads())


@functools.lru_cache(maxsize=1024)
def _cached_params(M: int, K: int, N: int, bits: int, group_size: int, threads: int):
    """Kernel parameters, built once per shape (never mutated after)."""
    p = _ext._C.PackedLinearParams()
    p.M, p.K, p.N, p.bits, p.group_size, p.threads = M, K, N, bits, group_size, threads
    return p


def packed_linear_cpu(x: Tensor, weights: Tensor, scale: Tensor, bias: Optional[Tensor], bits: int,
                      out_features: int, group_size: int, spike: bool) -> Tensor:
    """The CPU kernel on validated input: ``x [M, K]`` fp32 contiguous, binary if ``spike``.
    The op calls it after its checks; modules call it directly on their inference fast path."""
    M, K = x.shape
    y = torch.empty(M, out_features)
    if M and out_features:
        _ext._C.packed_linear_cpu(_params(M, K, out_features, bits, group_size), spike, x.data_ptr(),
                                  weights.data_ptr(), scale.data_ptr(),
                                  0 if bias is None else bias.data_ptr(), y.data_ptr())
    return y


def check_spike_input(x: Tensor, spike: bool) -> None:
    """``spike=True`` means binary x: the CPU spike kernels count any nonzero as 1."""
    if not spike or x.numel() == 0 or not C.data_checks(x):
        return
    if x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() and _ext.available():
        if _ext._C.is_binary_f32_cpu(x.data_ptr(), x.numel()):
            return
    C.check_binary("x", x)


def dequantized_weight(weights: Tensor, scale: Tensor, bits: int, out_features: int,
                       in_features: int, group_size: int) -> Tensor:
    """The fp32 ``[N, K]`` weight the packed buffers represent."""
    from .pack import unpack_op

    if bits == 32:
        return weights.t()
    codes = unpack_op(weights, bits, out_features).float()
    G, L = reference._groups(in_features, group_size)
    s = scale.reshape(out_features, G).repeat_interleave(L, dim=1)[:, :in_features]
    return codes * s


@torch.library.custom_op("sparsesnn::packed_linear", mutates_args=(), device_types=("cpu", "cuda"))
def packed_linear_op(x: Tensor, weights: Tensor, scale: Tensor, bias: Optional[Tensor], bits: int,
                     out_features: int, group_size: int, spike: bool) -> Tensor:
    """``x [M, K]`` fp32 -> ``[M, N]`` fp32. ``spike=True`` requires binary x (checked on CPU;
    on CUDA only with ``SPARSESNN_CUDA_CHECKS=1``, and the CUDA kernel sums other values
    correctly anyway)."""
    M, K = x.shape
    N = out_features
    check_spike_input(x, spike)
    C.check_devices("x", x, weights=weights, scale=scale, bias=bias)
    if not _ext.use_kernel(x):
        return reference.packed_linear(x, weights, scale, bias, bits, N, group_size)
    if not x.is_cuda:
        return packed_linear_cpu(x, weights, scale, bias, bits, N, group_size, spike)
    y = torch.empty(M, N, dtype=torch.float32, device=x.device)
    if M and N:
        p = _params(M, K, N, bits, group_size)
        b = bias.data_ptr() if bias is not None else 0
        _ext._C.packed_linear_cuda(p, spike, x.data_ptr(), weights.data_ptr(), scale.data_ptr(), b,
                                   y.data_ptr(), x.device.index, _ext.cuda_stream(x.device))
    return y


@packed_linear_op.register_fake
def _(x, weights, scale, bias, bits, out_features, group_size, spike):
    return x.new_empty((x.shape[0], out_features), dtype=torch.float32)


@torch.library.custom_op("sparsesnn::packed_linear_backward", mutates_args=(), device_types=("cpu", "cuda"))
def packed_linear_backward_op(grad_y: Tensor, weights: Tensor, scale: Tensor, bits: int,
                              in_features: int, group_size: int) -> Tensor:
    """``grad_x [M, K] = grad_y [M, N] @ W_hat [N, K]`` (dense: the previous layer's surrogate
    needs every entry)."""
    w = dequantized_weight(weights, scale, bits, grad_y.shape[1], in_features, group_size)
    return grad_y.float() @ w


@packed_linear_backward_op.register_fake
def _(grad_y, weights, scale, bits, in_features, group_size):
    return grad_y.new_empty((grad_y.shape[0], in_features), dtype=torch.float32)


def _setup(ctx, inputs, output):
    x, weights, scale, bias, bits, out_features, group_size, spike = inputs
    ctx.save_for_backward(weights, scale)
    ctx.args = (bits, x.shape[1], group_size)


def _backward(ctx, grad_y):
    weights, scale = ctx.saved_tensors
    gx = packed_linear_backward_op(grad_y.contiguous(), weights, scale, *ctx.args)
    return gx, None, None, None, None, None, None, None


packed_linear_op.register_autograd(_backward, setup_context=_setup)
