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

    ``grad_decay`` is dL/d(decay) summed over time and neurons (a 0-dim tensor).
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
