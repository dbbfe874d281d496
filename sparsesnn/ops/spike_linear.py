"""``sparsesnn::spike_linear`` (event-driven spike x weight) and its event-driven grad_weight.

Arguments arrive validated and contiguous from ``sparsesnn.functional`` / the modules; here we
route to the compiled kernel (CPU or CUDA) or the reference, and wire autograd:
``grad_weight`` is event-driven (only active inputs contribute), ``grad_s`` is the dense
product ``grad_out @ weight`` (the previous layer's surrogate gradient needs every entry).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _ext, reference
from .layout_cache import cached_layout

# Spike element types the kernels read directly (bool is one byte 0/1, like uint8).
SPIKE_TYPES = {torch.float32: 0, torch.uint8: 1, torch.bool: 1}


def spike_stats(s: Tensor) -> tuple[int, int]:
    """``(non-zero count, count of values other than 0 and 1)`` of a spike tensor, one pass.

    The modules use it both to measure the density for dispatch and to detect analog input.
    """
    if s.numel() == 0:
        return 0, 0
    if _ext.available() and s.device.type == "cpu" and s.dtype in SPIKE_TYPES and s.is_contiguous():
        nz, bad = _ext._C.spike_count_cpu(s.data_ptr(), SPIKE_TYPES[s.dtype], s.numel(), _ext.num_threads())
        return int(nz), int(bad)
    if s.dtype == torch.bool:
        return int(torch.count_nonzero(s)), 0
    # Both counts in one device-to-host read: on CUDA each read is a stream sync.
    nz, bad = torch.stack([torch.count_nonzero(s), torch.count_nonzero((s != 0) & (s != 1))]).tolist()
    return nz, bad


def _transpose(weight: Tensor) -> Tensor:
    return weight.detach().t().contiguous()


def row_stride(n: int) -> int:
    """Row stride (floats) of the CPU input-major weight with ``n`` columns. A row of an even
    number of 64-byte lines (any power-of-two width >= 32) is padded by one line: with a
    power-of-two stride the rows of a column tile fall into a few cache sets and evict each
    other long before L2 is full (K=N=2048: 1.3-1.6x slower)."""
    return n + 16 if n % 32 == 0 else n


def _transpose_padded(weight: Tensor) -> Tensor:
    N, K = weight.shape
    ld = row_stride(N)
    if ld == N:
        return _transpose(weight)
    buf = weight.new_empty((K, ld))
    buf[:, :N].copy_(weight.detach().t())
    return buf[:, :N]


def _panels(weight: Tensor) -> Tensor:
    """``weight [N, K]`` as column panels ``[ceil(N / P), K, P]`` (P: the CPU kernel's output
    tile, the last panel zero-padded): each panel's K rows are contiguous, so the kernel
    streams a panel's rows in order instead of one strided row segment per page."""
    N, K = weight.shape
    P = _ext._C.spike_linear_panel_width()
    w = weight.detach()
    if N % P:
        w = torch.cat([w, w.new_zeros(P - N % P, K)])
    return w.reshape(-(-N // P), P, K).transpose(1, 2).contiguous()


def kernel_weight(weight: Tensor) -> Tensor:
    """The layout ``spike_linear_op`` reads fastest, built once per weight version: column
    panels on CPU (see ``_panels``), ``[K, N]`` on CUDA and while tracing (a plain transpose
    in the graph)."""
    if weight.device.type == "cpu" and _ext.available() and not torch.compiler.is_compiling():
        return cached_layout(weight, "linear_panels", _panels)
    return input_major_weight(weight)


def input_major_weight(weight: Tensor) -> Tensor:
    """``weight [N, K]`` as the kernel reads it, ``[K, N]`` with unit column stride (rows
    padded on CPU, see ``row_stride``): built once per weight version (see ``layout_cache``);
    while tracing, a plain transpose in the graph."""
    if torch.compiler.is_compiling():
        return _transpose(weight)
    if weight.device.type == "cpu":
        return cached_layout(weight, "linear_t_padded", _transpose_padded)
    return cached_layout(weight, "linear_t", _transpose)


def _params(M: int, K: int, N: int, s: Tensor):
    p = _ext._C.SpikeLinearParams()
    p.M, p.K, p.N = M, K, N
    p.spike_type, p.threads = SPIKE_TYPES[s.dtype], _ext.num_threads()
    return p


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


@torch.library.custom_op("sparsesnn::spike_linear", mutates_args=(), device_types=("cpu", "cuda"))
def spike_linear_op(s: Tensor, weight: Tensor, weight_t: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``s [M, K]`` binary (fp32/uint8/bool, contiguous), ``weight [N, K]`` fp32 and a copy
    the kernel reads, ``weight_t``: input-major ``[K, N]`` (unit column stride, rows may be
    padded) or, on CPU, the column panels of ``kernel_weight``; ``bias [N]`` -> ``[M, N]`` fp32.
    ``weight`` carries the gradient; ``weight_t`` is a cache (no gradient)."""
    if not _ext.use_kernel(s):
        return reference.spike_linear(s, weight, bias)
    M, K = s.shape
    N = weight.shape[0]
    p = _params(M, K, N, s)
    if weight_t.dim() == 3:  # column panels [ceil(N / P), K, P] (CPU only, built contiguous)
        P = weight_t.shape[2]
        if s.is_cuda or not weight_t.is_contiguous() or weight_t.shape[:2] != (-(-N // P), K):
            raise ValueError(f"weight_t: expected contiguous CPU column panels [{-(-N // P)}, {K}, {P}], "
                             f"got {tuple(weight_t.shape)} on {weight_t.device}, strides {weight_t.stride()}")
        p.panel = P
    else:
        # The CPU kernel takes padded rows (stride >= N); the CUDA kernel reads dense ones.
        if s.is_cuda or weight_t.stride(0) < N or (N > 1 and weight_t.stride(1) != 1):
            weight_t = weight_t.contiguous()
        p.ldw = weight_t.stride(0)
    out = torch.empty((M, N), dtype=torch.float32, device=s.device)
    if s.is_cuda:
        _ext._C.spike_linear_forward_cuda(p, s.data_ptr(), weight_t.data_ptr(), _ptr(bias),
                                          out.data_ptr(), s.device.index, _ext.cuda_stream(s.device))
    else:
        _ext._C.spike_linear_forward_cpu(p, s.data_ptr(), weight_t.data_ptr(), _ptr(bias), out.data_ptr())
    return out


@torch.library.custom_op("sparsesnn::spike_linear_grad_weight", mutates_args=(),
                         device_types=("cpu", "cuda"))
def spike_linear_grad_weight_op(s: Tensor, grad_out: Tensor) -> Tensor:
    """Event-driven ``grad_weight [N, K] = grad_out^T s``: each active ``s[m, k]`` adds row
    ``grad_out[m]`` to column ``k``. ``s [M, K]`` and ``grad_out [M, N]`` fp32 contiguous."""
    if not _ext.use_kernel(s):
        return reference.spike_linear_grad_weight(s, grad_out)
    M, K = s.shape
    N = grad_out.shape[1]
    gw = torch.empty((N, K), dtype=torch.float32, device=s.device)
    p = _params(M, K, N, s)
    if s.is_cuda:
        _ext._C.spike_linear_grad_weight_cuda(p, s.data_ptr(), grad_out.data_ptr(), gw.data_ptr(),
                                              s.device.index, _ext.cuda_stream(s.device))
    else:
        _ext._C.spike_linear_grad_weight_cpu(p, s.data_ptr(), grad_out.data_ptr(), gw.data_ptr())
    return gw


@spike_linear_op.register_fake
def _(s, weight, weight_t, bias):
    return s.new_empty((s.shape[0], weight.shape[0]), dtype=torch.float32)


@spike_linear_grad_weight_op.register_fake
def _(s, grad_out):
    return grad_out.new_empty((grad_out.shape[1], s.shape[1]), dtype=torch.float32)


def _setup(ctx, inputs, output):
    s, weight, weight_t, bias = inputs
    ctx.save_for_backward(s, weight)


def _backward(ctx, grad):
    s, weight = ctx.saved_tensors
    grad = grad.contiguous().float()
    gs = gw = gb = None
    if ctx.needs_input_grad[0]:
        gs = (grad @ weight.to(grad.dtype)).to(s.dtype)
    if ctx.needs_input_grad[1]:
        gw = spike_linear_grad_weight_op(s, grad).to(weight.dtype)
    if ctx.needs_input_grad[3]:
        gb = grad.sum(0)
    return gs, gw, None, gb


spike_linear_op.register_autograd(_backward, setup_context=_setup)
