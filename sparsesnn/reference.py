"""Pure-PyTorch reference of every op: ground truth for tests and fallback without ``_C``.

Each reference spells the math out step by step in the same operation order as the kernels,
so forward results are bit-identical and gradients agree to fp32 rounding.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import surrogate as _sg
from .fixed_point import FixedPoint

# ---------------------------------------------------------------------------------------
# LIF / IF / PLIF neuron (see DESIGN.md "Neuron semantics")
# ---------------------------------------------------------------------------------------


def _charge(v: torch.Tensor, x: torch.Tensor, decay, vr: float, decay_input: bool, leak: bool):
    if not leak:
        return v + x
    if decay_input:
        return v + (x - (v - vr)) * decay
    return v - (v - vr) * decay + x


def lif_autograd(
    x: torch.Tensor,
    v0: Optional[torch.Tensor] = None,
    decay: float | torch.Tensor = 0.5,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    leak: bool = True,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LIF over ``x`` ``[T, *]`` differentiated by autograd (SpikingJelly-style loop).

    ``decay`` may be a tensor (PLIF: ``sigmoid(w)``) to get its gradient. Returns
    ``(spikes [T, *], v_last [*])``.
    """
    hard = v_reset is not None
    vr = float(v_reset) if hard else 0.0
    v = v0 if v0 is not None else torch.full_like(x[0], vr)
    out = []
    for t in range(x.shape[0]):
        h = _charge(v, x[t], decay, vr, decay_input, leak)
        s = _sg.spike(h - v_threshold, surrogate, alpha)
        sd = s.detach() if detach_reset else s
        v = h * (1 - sd) + vr * sd if hard else h - v_threshold * sd
        out.append(s)
    if not out:
        return x.new_empty(x.shape), (v0 if v0 is not None else x.new_full(x.shape[1:], vr))
    return torch.stack(out), v


@torch.no_grad()
def lif_forward(
    x: torch.Tensor,
    v0: Optional[torch.Tensor],
    decay: float,
    v_threshold: float,
    v_reset: Optional[float],
    decay_input: bool,
    leak: bool,
    state_quant: Optional[FixedPoint] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward pass as the kernel does it: ``(spikes, v_last, H)`` with H saved for backward.

    Computes in fp32 whatever the input dtype (as the CUDA kernel); spikes in ``x.dtype``.
    With ``state_quant``, H is rounded onto that fixed-point grid before firing.
    """
    hard = v_reset is not None
    vr = float(v_reset) if hard else 0.0
    xf = x.float()
    v = v0.float().clone() if v0 is not None else xf.new_full(x.shape[1:], vr)
    h_all = torch.empty_like(xf)
    s_all = torch.empty_like(xf)
    for t in range(x.shape[0]):
        h = _charge(v, xf[t], decay, vr, decay_input, leak)
        if state_quant is not None:
            h = state_quant.quantize(h, index_offset=t * h.numel())
        s = (h >= v_threshold).float()
        h_all[t], s_all[t] = h, s
        v = torch.where(s != 0, torch.full_like(h, vr), h) if hard else h - v_threshold * s
    return s_all.to(x.dtype), v, h_all


@torch.no_grad()
def lif_backward(
    grad_spikes: torch.Tensor,
    grad_v_last: Optional[torch.Tensor],
    h: torch.Tensor,
    v0: Optional[torch.Tensor],
    decay: float,
    v_threshold: float,
    v_reset: Optional[float],
    decay_input: bool,
    leak: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reverse recurrence over saved ``H``: ``(grad_x, grad_v0, grad_decay)`` (all fp32).

    ``grad_decay`` is dL/d(decay) summed over time and neurons (a 0-dim tensor); zero for IF
    (``leak=False``), whose H does not depend on decay.
    """
    hard = v_reset is not None
    vr = float(v_reset) if hard else 0.0
    vth = v_threshold
    dh_dv = 1.0 - decay if leak else 1.0
    dh_dx = decay if (leak and decay_input) else 1.0
    gv = grad_v_last.float().clone() if grad_v_last is not None else torch.zeros_like(h[0])
    gx = torch.empty_like(h)
    gdecay = torch.zeros((), dtype=torch.float64, device=h.device)
    for t in range(h.shape[0] - 1, -1, -1):
        hh = h[t]
        s = (hh >= vth).float()
        g = _sg.surrogate_grad(surrogate, hh - vth, alpha)
        if hard:
            dv_dh = 1 - s if detach_reset else 1 - s + (vr - hh) * g
        else:
            dv_dh = torch.ones_like(hh) if detach_reset else 1 - vth * g
        gh = grad_spikes[t].float() * g + gv * dv_dh
        gx[t] = gh * dh_dx
        gv = gh * dh_dv
        if not leak:
            continue  # IF: H does not depend on decay, so no decay gradient
        if t > 0:
            hp = h[t - 1]
            sp = (hp >= vth).float()
            vprev = torch.where(sp != 0, torch.full_like(hp, vr), hp) if hard else hp - vth * sp
        else:
            vprev = v0.float() if v0 is not None else torch.full_like(hh, vr)
        dh_dd = (hh - vprev) / decay if decay_input else -(vprev - vr)
        gdecay += (gh * dh_dd).sum(dtype=torch.float64)
    return gx, gv, gdecay.float()


# ---------------------------------------------------------------------------------------
# Event-driven spike x weight layers (spike_linear, spike_conv2d): dense equivalents
# ---------------------------------------------------------------------------------------


def spike_linear(s: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``s [..., K]`` (binary, any dtype) x ``weight [N, K]`` -> ``[..., N]`` in weight's dtype."""
    return torch.nn.functional.linear(s.to(weight.dtype), weight, bias)


def spike_linear_grad_weight(s: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """``grad_out [M, N]``, ``s [M, K]`` -> ``grad_weight [N, K] = grad_out^T s``."""
    return grad_out.t() @ s.to(grad_out.dtype)


def _conv_pads(in_hw, kernel_hw, stride, padding, out_hw, dilation) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding that makes a stride/dilation conv with no padding
    produce exactly ``out_hw`` from ``in_hw`` given the top/left padding (negative = crop)."""
    (H, W), (KH, KW), (sh, sw), (pt, pl), (OH, OW), (dh, dw) = in_hw, kernel_hw, stride, padding, out_hw, dilation
    lh = (OH - 1) * sh + dh * (KH - 1) + 1
    lw = (OW - 1) * sw + dw * (KW - 1) + 1
    return pl, lw - pl - W, pt, lh - pt - H


def spike_conv2d(s: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding,
                 out_hw, dilation, groups: int) -> torch.Tensor:
    """``conv2d`` of spikes ``[N, C, H, W]`` with top/left ``padding`` and output size ``out_hw``."""
    pads = _conv_pads(s.shape[-2:], weight.shape[-2:], stride, padding, out_hw, dilation)
    x = torch.nn.functional.pad(s.to(weight.dtype), pads)
    return torch.nn.functional.conv2d(x, weight, bias, tuple(stride), 0, tuple(dilation), groups)


def spike_conv2d_grad_weight(s: torch.Tensor, grad_out: torch.Tensor, weight_size, stride, padding,
                             dilation, groups: int) -> torch.Tensor:
    """``grad_weight [O, C/G, KH, KW]`` of :func:`spike_conv2d`."""
    pads = _conv_pads(s.shape[-2:], weight_size[-2:], stride, padding, grad_out.shape[-2:], dilation)
    x = torch.nn.functional.pad(s.to(grad_out.dtype), pads)
    return torch.nn.grad.conv2d_weight(x, list(weight_size), grad_out, tuple(stride), 0,
                                       tuple(dilation), groups)


def spike_conv2d_grad_input(grad_out: torch.Tensor, weight: torch.Tensor, in_hw, stride, padding,
                            dilation, groups: int) -> torch.Tensor:
    """Dense ``grad_input [N, C, H, W]`` of :func:`spike_conv2d` (transposed convolution)."""
    pads = _conv_pads(in_hw, weight.shape[-2:], stride, padding, grad_out.shape[-2:], dilation)
    l, r, t, b = pads
    padded = (grad_out.shape[0], weight.shape[1] * groups, in_hw[0] + t + b, in_hw[1] + l + r)
    gx = torch.nn.grad.conv2d_input(padded, weight, grad_out, tuple(stride), 0, tuple(dilation), groups)
    return torch.nn.functional.pad(gx, (-l, -r, -t, -b))
# Low-bit packed / pruned weights (layout: csrc/include/sparsesnn/pack.h)
# ---------------------------------------------------------------------------------------


def _code_mul_off(bits: int) -> tuple[int, int]:
    return (2, 1) if bits == 1 else (1, 2 ** (bits - 1))


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """int8 codes ``[N, K]`` -> uint8 ``[K, ceil(N * bits / 8)]`` (input-major, LSB first)."""
    N, K = codes.shape
    mul, off = _code_mul_off(bits)
    per = 8 // bits
    rb = (N * bits + 7) // 8
    u = torch.div(codes.to(torch.int32) + off, mul, rounding_mode="floor").t()
    u = torch.nn.functional.pad(u, (0, rb * per - N)).reshape(K, rb, per)
    shifts = torch.arange(per, device=codes.device, dtype=torch.int32) * bits
    return (u << shifts).sum(-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, N: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: uint8 ``[K, row_bytes]`` -> int8 ``[N, K]``."""
    K, rb = packed.shape
    mul, off = _code_mul_off(bits)
    per = 8 // bits
    shifts = torch.arange(per, device=packed.device, dtype=torch.int32) * bits
    u = (packed.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    u = u.reshape(K, rb * per)[:, :N]
    return (u * mul - off).t().to(torch.int8).contiguous()


def _groups(K: int, group_size: int) -> tuple[int, int]:
    L = K if group_size <= 0 or group_size >= K else group_size
    L = max(L, 1)
    return (K + L - 1) // L, L


def _grouped_int_linear(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor,
                        bias: Optional[torch.Tensor], group_size: int) -> torch.Tensor:
    """Sum of codes per group in float64 (exact for binary x), then ``scale`` once per group
    in fp32 in the kernels' order: ``y = ((0 + s_0 c_0) + s_1 c_1 ...) + bias``."""
    M, K = x.shape
    N = codes.shape[0]
    G, L = _groups(K, group_size)
    y = torch.zeros(M, N, dtype=torch.float32, device=x.device)
    xd, cd = x.double(), codes.double()
    for g in range(G):
        sl = slice(g * L, min(K, (g + 1) * L))
        cs = (xd[:, sl] @ cd[:, sl].t()).float()
        y = y + scale.reshape(N, G)[:, g] * cs
    return y + bias if bias is not None else y


def packed_linear(x: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor,
                  bias: Optional[torch.Tensor], bits: int, out_features: int,
                  group_size: int) -> torch.Tensor:
    """``x`` ``[M, K]`` times packed weights (``bits`` 8/4/2/1) or input-major fp32 weights
    ``[K, N]`` (``bits`` 32), per-output/group ``scale`` ``[N, G]``, plus bias -> ``[M, N]``."""
    if bits == 32:
        y = (x.double() @ weights.double())
        if bias is not None:
            y = y + bias.double()
        return y.float()
    codes = unpack_codes(weights, bits, out_features)
    return _grouped_int_linear(x, codes, scale, bias, group_size)


def pruned_dense_codes(row_ptr: torch.Tensor, index: torch.Tensor, values: torch.Tensor,
                       bits: int, N: int) -> torch.Tensor:
    """Compressed rows by input (``row_ptr [K+1]``, ``index [nnz]``, ``values``) -> dense
    ``[N, K]`` (int8 codes for packed values, fp32 for ``bits`` 32)."""
    K = row_ptr.numel() - 1
    nnz = index.numel()
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    k = torch.repeat_interleave(torch.arange(K, device=index.device), counts)
    n = index.to(torch.int64)
    if bits == 32:
        out = torch.zeros(N, K, dtype=torch.float32, device=values.device)
        out[n, k] = values
        return out
    vals = unpack_codes(values.reshape(1, -1), bits, nnz).reshape(-1) if nnz else \
        torch.zeros(0, dtype=torch.int8, device=values.device)
    out = torch.zeros(N, K, dtype=torch.int8, device=values.device)
    out[n, k] = vals
    return out


def pruned_linear(x: torch.Tensor, row_ptr: torch.Tensor, index: torch.Tensor,
                  values: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor],
                  bits: int, out_features: int, group_size: int) -> torch.Tensor:
    """Linear over the pruned compressed-row layout (see ``pruned_linear.h``)."""
    dense = pruned_dense_codes(row_ptr, index, values, bits, out_features)
    if bits == 32:
        return packed_linear(x, dense.t(), scale, bias, 32, out_features, group_size)
    return _grouped_int_linear(x, dense, scale, bias, group_size)


def packed_conv2d(x: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor,
                  bias: Optional[torch.Tensor], bits: int, out_channels: int,
                  kernel_size: tuple[int, int], stride: tuple[int, int],
                  padding: tuple[int, int], dilation: tuple[int, int],
                  group_size: int) -> torch.Tensor:
    """conv2d of ``x`` ``[NB, C, H, W]`` with packed rows ``(c, ky, kx)`` of O codes."""
    O = out_channels
    KH, KW = kernel_size
    C = x.shape[1]
    KK = C * KH * KW
    conv = torch.nn.functional.conv2d
    if bits == 32:
        w = weights.t().reshape(O, C, KH, KW).double()
        y = conv(x.double(), w, None, stride, padding, dilation)
        if bias is not None:
            y = y + bias.double().view(1, -1, 1, 1)
        return y.float()
    codes = unpack_codes(weights, bits, O).double()  # [O, KK]
    G, L = _groups(KK, group_size)
    s = scale.reshape(O, G)
    y = None
    for g in range(G):
        cg = torch.zeros_like(codes)
        sl = slice(g * L, min(KK, (g + 1) * L))
        cg[:, sl] = codes[:, sl]
        cs = conv(x.double(), cg.reshape(O, C, KH, KW), None, stride, padding, dilation).float()
        term = s[:, g].view(1, O, 1, 1) * cs
        y = term if y is None else y + term
    if y is None:
        raise ValueError("packed_conv2d: empty kernel")
    return y + bias.view(1, -1, 1, 1) if bias is not None else y
