"""``sparsesnn::lif`` / ``sparsesnn::plif`` custom ops and their backward op.

Arguments arrive validated and contiguous from ``sparsesnn.functional``; here we only route
to the compiled kernel (CPU or CUDA) or the reference, and wire autograd.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import _ext, reference
from ..fixed_point import ROUNDINGS, FixedPoint
from ..surrogate import SURROGATES

_SURROGATE_NAMES = {kind: name for name, (kind, _) in SURROGATES.items()}
_CUDA_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_ROUNDING_NAMES = {v: k for k, v in ROUNDINGS.items()}


def _state_quant(bits: int, frac_bits: int, rounding: int, seed: int) -> Optional[FixedPoint]:
    """The fixed-point state format the op was asked for (``bits == 0``: plain fp32 state)."""
    return FixedPoint(bits, frac_bits, _ROUNDING_NAMES[rounding], seed) if bits else None


def _params(T: int, N: int, decay: float, v_threshold: float, v_reset: Optional[float],
            decay_input: bool, leak: bool, detach_reset: bool, surrogate: int, alpha: float):
    p = _ext._C.LifParams()
    p.T, p.N, p.decay, p.v_threshold = T, N, decay, v_threshold
    p.hard_reset = v_reset is not None
    p.v_reset = float(v_reset) if v_reset is not None else 0.0
    p.decay_input, p.leak, p.detach_reset = decay_input, leak, detach_reset
    p.surrogate, p.alpha, p.threads = surrogate, alpha, _ext.num_threads()
    return p


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _forward(x: Tensor, v0: Optional[Tensor], decay: float, v_threshold: float,
             v_reset: Optional[float], decay_input: bool, leak: bool, want_h: bool,
             quant: Optional[FixedPoint]):
    """``(spikes, v_last, H or an empty tensor)``; only CUDA and the reference can emit H."""
    if not _ext.use_kernel(x):
        s, v_last, h = reference.lif_forward(x, v0, decay, v_threshold, v_reset, decay_input, leak,
                                             quant)
        return s, v_last, (h if want_h else h.new_empty(0))
    T, N = x.shape[0], math.prod(x.shape[1:])
    spikes = torch.empty_like(x)
    v_last = torch.empty(x.shape[1:], dtype=torch.float32, device=x.device)
    h = torch.empty(x.shape if want_h else (0,), dtype=torch.float32, device=x.device)
    p = _params(T, N, decay, v_threshold, v_reset, decay_input, leak, False, 0, 1.0)
    if quant is not None:
        p.state_step, p.state_min, p.state_max = quant.step, quant.min, quant.max
        p.state_rounding, p.seed = quant.mode, quant.seed
    if x.is_cuda:
        _ext._C.lif_forward_cuda(p, _CUDA_DTYPES[x.dtype], x.data_ptr(), _ptr(v0), spikes.data_ptr(),
                                 v_last.data_ptr(), _ptr(h) if want_h else 0, _ext.cuda_stream(x.device))
    else:
        if want_h:
            raise RuntimeError("the CPU LIF kernel does not emit H (its backward recomputes it)")
        _ext._C.lif_forward_cpu(p, x.data_ptr(), _ptr(v0), spikes.data_ptr(), v_last.data_ptr())
    return spikes, v_last, h


def _saves_h(x: Tensor) -> bool:
    """Whether training saves H for backward. On CPU backward recomputes H from x instead,
    which moves 20 instead of 24 bytes per neuron-step; the CUDA backward reads a saved H."""
    return x.is_cuda


@torch.library.custom_op("sparsesnn::lif", mutates_args=(), device_types=("cpu", "cuda"))
def lif_op(x: Tensor, v0: Optional[Tensor], decay: float, v_threshold: float,
           v_reset: Optional[float], decay_input: bool, leak: bool, detach_reset: bool,
           surrogate: int, alpha: float, save_h: bool, state_bits: int = 0,
           state_frac_bits: int = 0, state_rounding: int = 0, seed: int = 0,
           ) -> tuple[Tensor, Tensor, Tensor]:
    """Fused multi-step LIF/IF. x ``[T, *]`` -> spikes ``[T, *]``, v_last ``[*]`` (fp32), H.

    ``save_h``: a backward will follow. H ``[T, *]`` fp32 is then returned where the backward
    reads it (CUDA); elsewhere, and without ``save_h``, H is an empty tensor.
    ``state_bits > 0`` puts H on that fixed-point grid each step (see ``fixed_point.py``).
    """
    return _forward(x, v0, decay, v_threshold, v_reset, decay_input, leak,
                    save_h and _saves_h(x),
                    _state_quant(state_bits, state_frac_bits, state_rounding, seed))


@torch.library.custom_op("sparsesnn::plif", mutates_args=(), device_types=("cpu", "cuda"))
def plif_op(x: Tensor, v0: Optional[Tensor], decay: Tensor, v_threshold: float,
            v_reset: Optional[float], decay_input: bool, detach_reset: bool, surrogate: int,
            alpha: float, save_h: bool, state_bits: int = 0, state_frac_bits: int = 0,
            state_rounding: int = 0, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """PLIF: as ``lif`` with a learnable 0-dim ``decay`` tensor (``sigmoid(w)``)."""
    return _forward(x, v0, float(decay), v_threshold, v_reset, decay_input, True,
                    save_h and _saves_h(x),
                    _state_quant(state_bits, state_frac_bits, state_rounding, seed))


@torch.library.custom_op("sparsesnn::lif_backward", mutates_args=(), device_types=("cpu", "cuda"))
def lif_backward_op(grad_spikes: Tensor, grad_v_last: Optional[Tensor], x: Optional[Tensor],
                    h: Optional[Tensor], v0: Optional[Tensor], decay: Tensor, v_threshold: float,
                    v_reset: Optional[float], decay_input: bool, leak: bool, detach_reset: bool,
                    surrogate: int, alpha: float, want_decay: bool, state_bits: int = 0,
                    state_frac_bits: int = 0, state_rounding: int = 0, seed: int = 0,
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """Reverse recurrence: ``(grad_x [T, *], grad_v0 [*] fp32, grad_decay 0-dim fp32)``.

    Give either the saved ``h`` or the forward's input ``x`` (H is then recomputed, with the
    same fixed-point state arguments as the forward). ``decay`` is a 0-dim tensor so PLIF's
    backward needs no host read while tracing.
    """
    decay = float(decay)
    if (x is None) == (h is None):
        raise ValueError("lif_backward: give exactly one of x (to recompute H) and h (saved H)")
    like = x if x is not None else h
    quant = _state_quant(state_bits, state_frac_bits, state_rounding, seed)
    recompute_in_kernel = x is not None and _ext.use_kernel(x) and not x.is_cuda
    if h is None and not recompute_in_kernel:
        h = _forward(x, v0, decay, v_threshold, v_reset, decay_input, leak, True, quant)[2]
    if not (recompute_in_kernel or (h.is_cuda and _ext.use_kernel(h))):
        gx, gv0, gd = reference.lif_backward(grad_spikes, grad_v_last, h, v0, decay, v_threshold,
                                             v_reset, decay_input, leak, detach_reset,
                                             _SURROGATE_NAMES[surrogate], alpha)
        return gx.to(grad_spikes.dtype), gv0, gd
    T, N = like.shape[0], math.prod(like.shape[1:])
    grad_spikes = grad_spikes.contiguous()
    grad_v_last = grad_v_last.contiguous() if grad_v_last is not None else None
    gx = torch.empty_like(grad_spikes)
    gv0 = torch.empty(like.shape[1:], dtype=torch.float32, device=like.device)
    p = _params(T, N, decay, v_threshold, v_reset, decay_input, leak, detach_reset, surrogate, alpha)
    if like.is_cuda:
        gd = torch.zeros((), dtype=torch.float32, device=like.device)
        _ext._C.lif_backward_cuda(p, _CUDA_DTYPES[gx.dtype], grad_spikes.data_ptr(), _ptr(grad_v_last),
                                  h.contiguous().data_ptr(), _ptr(v0), gx.data_ptr(), gv0.data_ptr(),
                                  gd.data_ptr() if want_decay else 0, _ext.cuda_stream(like.device))
        return gx, gv0, gd
    if quant is not None:
        p.state_step, p.state_min, p.state_max = quant.step, quant.min, quant.max
        p.state_rounding, p.seed = quant.mode, quant.seed
    x = x.contiguous()
    g = _ext._C.lif_backward_cpu(p, grad_spikes.data_ptr(), _ptr(grad_v_last), x.data_ptr(),
                                 _ptr(v0), gx.data_ptr(), gv0.data_ptr(), want_decay)
    return gx, gv0, torch.tensor(g, dtype=torch.float32)


# ---- fake (meta) implementations: shapes only, for torch.compile -------------------------
def _fake_forward(x: Tensor, save_h: bool):
    h = x.new_empty(x.shape if save_h and _saves_h(x) else (0,), dtype=torch.float32)
    return torch.empty_like(x), x.new_empty(x.shape[1:], dtype=torch.float32), h


@lif_op.register_fake
def _(x, v0, decay, v_threshold, v_reset, decay_input, leak, detach_reset, surrogate, alpha, save_h,
      state_bits=0, state_frac_bits=0, state_rounding=0, seed=0):
    return _fake_forward(x, save_h)


@plif_op.register_fake
def _(x, v0, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, save_h,
      state_bits=0, state_frac_bits=0, state_rounding=0, seed=0):
    return _fake_forward(x, save_h)


@lif_backward_op.register_fake
def _(grad_spikes, grad_v_last, x, h, v0, decay, v_threshold, v_reset, decay_input, leak,
      detach_reset, surrogate, alpha, want_decay, state_bits=0, state_frac_bits=0,
      state_rounding=0, seed=0):
    like = x if x is not None else h
    return (torch.empty_like(grad_spikes), like.new_empty(like.shape[1:], dtype=torch.float32),
            like.new_empty((), dtype=torch.float32))


# ---- autograd ------------------------------------------------------------------------------
def _save(ctx, op_name: str, x: Tensor, h: Tensor, save_h: bool, *extra) -> None:
    """Save what backward needs: H where the forward emitted it, else x (H is recomputed)."""
    if not save_h:
        raise RuntimeError(f"sparsesnn::{op_name} was called with save_h=False but a gradient is "
                           "required")
    # H is an output only so it can be saved; unused outputs get None instead of a zero tensor.
    ctx.set_materialize_grads(False)
    recompute = not _saves_h(x)
    ctx.save_for_backward(x if recompute else None, None if recompute else h, *extra)
    ctx.x_meta = (x.shape, x.dtype, x.device)


def _grad_spikes(ctx, grad_s: Optional[Tensor]) -> Tensor:
    shape, dtype, device = ctx.x_meta
    return grad_s if grad_s is not None else torch.zeros(shape, dtype=dtype, device=device)


def _setup_lif(ctx, inputs, output):
    x, v0, decay, v_threshold, v_reset, decay_input, leak, detach_reset, surrogate, alpha, save_h = inputs[:11]
    _save(ctx, "lif", x, output[2], save_h, v0)
    ctx.decay = decay
    ctx.args = (v_threshold, v_reset, decay_input, leak, detach_reset, surrogate, alpha)
    ctx.state = tuple(inputs[11:])
    ctx.v0_dtype = None if v0 is None else v0.dtype


def _backward_lif(ctx, grad_s, grad_v, grad_h):
    x, h, v0 = ctx.saved_tensors
    decay = torch.tensor(ctx.decay, dtype=torch.float32, device=ctx.x_meta[2])
    gx, gv0, _ = lif_backward_op(_grad_spikes(ctx, grad_s), grad_v, x, h, v0, decay, *ctx.args,
                                 False, *ctx.state)
    return (gx, None if v0 is None else gv0.to(ctx.v0_dtype)) + (None,) * 13


lif_op.register_autograd(_backward_lif, setup_context=_setup_lif)


def _setup_plif(ctx, inputs, output):
    x, v0, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, save_h = inputs[:10]
    _save(ctx, "plif", x, output[2], save_h, v0, decay)
    ctx.args = (v_threshold, v_reset, decay_input, True, detach_reset, surrogate, alpha)
    ctx.state = tuple(inputs[10:])
    ctx.v0_dtype = None if v0 is None else v0.dtype


def _backward_plif(ctx, grad_s, grad_v, grad_h):
    x, h, v0, decay = ctx.saved_tensors
    gx, gv0, gd = lif_backward_op(_grad_spikes(ctx, grad_s), grad_v, x, h, v0, decay.detach(),
                                  *ctx.args, True, *ctx.state)
    gv0 = None if v0 is None else gv0.to(ctx.v0_dtype)
    return (gx, gv0, gd.to(decay.dtype).reshape(decay.shape)) + (None,) * 11


plif_op.register_autograd(_backward_plif, setup_context=_setup_plif)
