"""``sparsesnn::lif`` / ``sparsesnn::plif`` custom ops and their backward op.

Arguments arrive validated and contiguous from ``sparsesnn.functional``; here we only route
to the compiled kernel (CPU or CUDA) or the reference, and wire autograd. The neuron's
settings travel as two lists (``Neuron.pack``): torch re-reads an op's schema once per argument
on every autograd call, so 15 separate arguments cost ~55 us per call and 6 cost a few.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import _ext, reference
from ..fixed_point import ROUNDINGS, FixedPoint
from ..surrogate import SURROGATES

_SURROGATE_NAMES = {kind: name for name, (kind, _) in SURROGATES.items()}
_CUDA_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_ROUNDING_NAMES = {v: k for k, v in ROUNDINGS.items()}


class Neuron(NamedTuple):
    """The neuron's settings other than its tensors and decay."""

    v_threshold: float = 1.0
    v_reset: Optional[float] = 0.0  # None: soft reset
    alpha: float = 4.0              # surrogate sharpness
    decay_input: bool = True
    leak: bool = True               # False: IF neuron
    detach_reset: bool = False
    surrogate: int = 0              # kind, see surrogate.SURROGATES
    state: tuple[int, int, int, int] = (0, 0, 0, 0)  # fixed-point state: bits, frac, rounding, seed

    def pack(self) -> tuple[list[float], list[int]]:
        """``(scalars, options)`` as the ops take them; a soft reset is a NaN ``v_reset``."""
        reset = math.nan if self.v_reset is None else float(self.v_reset)
        options = [int(self.decay_input), int(self.leak), int(self.detach_reset), int(self.surrogate)]
        return [float(self.v_threshold), reset, float(self.alpha)], options + [int(s) for s in self.state]

    @staticmethod
    def unpack(scalars: list[float], options: list[int]) -> "Neuron":
        if len(scalars) != 3 or len(options) != 8:
            raise ValueError(f"scalars/options: expected 3 and 8 values (Neuron.pack()), got "
                             f"{len(scalars)} and {len(options)}")
        vth, reset, alpha = scalars
        decay_input, leak, detach, surrogate, *state = options
        if surrogate not in _SURROGATE_NAMES:
            raise ValueError(f"options[3] (surrogate): expected one of {sorted(_SURROGATE_NAMES)}, "
                             f"got {surrogate}")
        if state[2] not in _ROUNDING_NAMES:
            raise ValueError(f"options[6] (state rounding): expected one of "
                             f"{sorted(_ROUNDING_NAMES)}, got {state[2]}")
        return Neuron(vth, None if math.isnan(reset) else reset, alpha, bool(decay_input),
                      bool(leak), bool(detach), surrogate, tuple(state))

    @property
    def quant(self) -> Optional[FixedPoint]:
        """The fixed-point state format (``None``: plain fp32 state)."""
        bits, frac_bits, rounding, seed = self.state
        return FixedPoint(bits, frac_bits, _ROUNDING_NAMES[rounding], seed) if bits else None


def _params(T: int, N: int, decay: float, n: Neuron):
    return _cached_params(T, N, decay, n, _ext.num_threads())


@functools.lru_cache(maxsize=512)
def _cached_params(T: int, N: int, decay: float, n: Neuron, threads: int):
    """Kernel parameters, built once per shape and setting (never mutated after)."""
    p = _ext._C.LifParams()
    p.T, p.N, p.decay, p.v_threshold = T, N, decay, n.v_threshold
    p.hard_reset = n.v_reset is not None
    p.v_reset = float(n.v_reset) if n.v_reset is not None else 0.0
    p.decay_input, p.leak, p.detach_reset = n.decay_input, n.leak, n.detach_reset
    p.surrogate, p.alpha, p.threads = n.surrogate, n.alpha, threads
    quant = n.quant
    if quant is not None:
        p.state_step, p.state_min, p.state_max = quant.step, quant.min, quant.max
        p.state_rounding, p.seed = quant.mode, quant.seed
    return p


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _device_decay(decay, like: Tensor) -> tuple[float, Optional[Tensor]]:
    """``(p.decay, fp32 device tensor or None)`` for a CUDA kernel: a decay tensor on ``like``'s
    device is read by the kernel itself (``float()`` of it would stall the stream on a host
    sync). The caller keeps the returned tensor alive across the launch."""
    if isinstance(decay, Tensor):
        if decay.device == like.device:
            return 0.0, decay.detach().to(torch.float32).reshape(())
        return float(decay), None  # a CPU scalar: reading it costs no sync
    return float(decay), None


def _forward(x: Tensor, v0: Optional[Tensor], decay, n: Neuron, want_h: bool):
    """``(spikes, v_last, H or an empty tensor)``; only CUDA and the reference can emit H.
    ``decay``: a float, or PLIF's 0-dim tensor."""
    if not (x.is_cuda and _ext.use_kernel(x)):
        decay = float(decay)
    if not _ext.use_kernel(x):
        s, v_last, h = reference.lif_forward(x, v0, decay, n.v_threshold, n.v_reset,
                                             n.decay_input, n.leak, n.quant)
        return s, v_last, (h if want_h else h.new_empty(0))
    if not x.is_cuda:
        if want_h:
            raise RuntimeError("the CPU LIF kernel does not emit H (its backward recomputes it)")
        return (*lif_inference(x, v0, decay, n), x.new_empty(0, dtype=torch.float32))
    T, N = x.shape[0], math.prod(x.shape[1:])
    spikes = torch.empty_like(x)
    v_last = torch.empty(x.shape[1:], dtype=torch.float32, device=x.device)
    h = torch.empty(x.shape if want_h else (0,), dtype=torch.float32, device=x.device)
    d, d_dev = _device_decay(decay, x)
    _ext._C.lif_forward_cuda(_params(T, N, d, n), _CUDA_DTYPES[x.dtype], _ptr(d_dev), x.data_ptr(),
                             _ptr(v0), spikes.data_ptr(), v_last.data_ptr(),
                             _ptr(h) if want_h else 0, x.device.index, _ext.cuda_stream(x.device))
    return spikes, v_last, h


def lif_inference(x: Tensor, v0: Optional[Tensor], decay: float, n: Neuron) -> tuple[Tensor, Tensor]:
    """``(spikes, v_last)`` from the CPU kernel. Also the fast path of ``functional`` for
    validated, contiguous CPU input when no gradient or tracing is involved (``ops._fast``)."""
    shape = x.shape
    spikes = torch.empty_like(x)
    # torch.empty(*ints) parses several times faster than torch.empty(torch.Size, dtype=...)
    v_last = torch.empty(*shape[1:]) if len(shape) > 1 else torch.empty(())
    T = shape[0]
    p = _params(T, x.numel() // T if T else math.prod(shape[1:]), decay, n)
    _ext._C.lif_forward_cpu(p, x.data_ptr(), _ptr(v0), spikes.data_ptr(), v_last.data_ptr())
    return spikes, v_last


def _saves_h(x: Tensor) -> bool:
    """Whether training saves H for backward. On CPU backward recomputes H from x instead,
    which moves 20 instead of 24 bytes per neuron-step; the CUDA backward reads a saved H."""
    return x.is_cuda


@torch.library.custom_op("sparsesnn::lif", mutates_args=(), device_types=("cpu", "cuda"))
def lif_op(x: Tensor, v0: Optional[Tensor], decay: float, scalars: list[float],
           options: list[int], save_h: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Fused multi-step LIF/IF. x ``[T, *]`` -> spikes ``[T, *]``, v_last ``[*]`` (fp32), H.

    ``scalars, options = Neuron(...).pack()``. ``save_h``: a backward will follow; H ``[T, *]``
    fp32 is then returned where the backward reads it (CUDA); elsewhere, and without
    ``save_h``, H is an empty tensor.
    """
    return _forward(x, v0, decay, Neuron.unpack(scalars, options), save_h and _saves_h(x))


@torch.library.custom_op("sparsesnn::plif", mutates_args=(), device_types=("cpu", "cuda"))
def plif_op(x: Tensor, v0: Optional[Tensor], decay: Tensor, scalars: list[float],
            options: list[int], save_h: bool) -> tuple[Tensor, Tensor, Tensor]:
    """PLIF: as ``lif`` with a learnable 0-dim ``decay`` tensor (``sigmoid(w)``)."""
    return _forward(x, v0, decay, Neuron.unpack(scalars, options), save_h and _saves_h(x))


@torch.library.custom_op("sparsesnn::lif_backward", mutates_args=(), device_types=("cpu", "cuda"))
def lif_backward_op(grad_spikes: Tensor, grad_v_last: Optional[Tensor], x: Optional[Tensor],
                    h: Optional[Tensor], v0: Optional[Tensor], decay: Tensor,
                    scalars: list[float], options: list[int], want_decay: bool,
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """Reverse recurrence: ``(grad_x [T, *], grad_v0 [*] fp32, grad_decay 0-dim fp32)``.

    Give either the saved ``h`` or the forward's input ``x`` (H is then recomputed, with the
    same fixed-point state as the forward). ``decay`` is a 0-dim tensor so PLIF's backward
    needs no host read while tracing.
    """
    n = Neuron.unpack(scalars, options)
    if (x is None) == (h is None):
        raise ValueError("lif_backward: give exactly one of x (to recompute H) and h (saved H)")
    like = x if x is not None else h
    if not (like.is_cuda and _ext.use_kernel(like)):
        decay = float(decay)  # the CUDA kernel reads a device decay itself: no host sync
    recompute_in_kernel = x is not None and _ext.use_kernel(x) and not x.is_cuda
    if h is None and not recompute_in_kernel:
        h = _forward(x, v0, decay, n, True)[2]
    if not (recompute_in_kernel or (h.is_cuda and _ext.use_kernel(h))):
        gx, gv0, gd = reference.lif_backward(grad_spikes, grad_v_last, h, v0, decay, n.v_threshold,
                                             n.v_reset, n.decay_input, n.leak, n.detach_reset,
                                             _SURROGATE_NAMES[n.surrogate], n.alpha)
        return gx.to(grad_spikes.dtype), gv0, gd
    T, N = like.shape[0], math.prod(like.shape[1:])
    grad_v_last = grad_v_last.contiguous() if grad_v_last is not None else None
    gx = torch.empty(like.shape, dtype=grad_spikes.dtype, device=like.device)
    gv0 = torch.empty(like.shape[1:], dtype=torch.float32, device=like.device)
    if like.is_cuda:
        grad_spikes = grad_spikes.contiguous()
        h = h.contiguous()  # named: a temporary's memory could be reused before the kernel runs
        d, d_dev = _device_decay(decay, like)
        gd = torch.zeros((), dtype=torch.float32, device=like.device)
        work = torch.empty(_ext._C.lif_cuda_work_doubles(N) if want_decay else 0,
                           dtype=torch.float64, device=like.device)
        _ext._C.lif_backward_cuda(_params(T, N, d, n), _CUDA_DTYPES[gx.dtype], _ptr(d_dev),
                                  grad_spikes.data_ptr(), _ptr(grad_v_last), h.data_ptr(), _ptr(v0),
                                  gx.data_ptr(), gv0.data_ptr(), gd.data_ptr() if want_decay else 0,
                                  work.data_ptr() if want_decay else 0, like.device.index,
                                  _ext.cuda_stream(like.device))
        return gx, gv0, gd
    p = _params(T, N, decay, n)
    x = x.contiguous()
    if T > 1 and grad_spikes.stride(0) == 0:
        # The same gradient at every step (autograd's broadcast from a sum or mean over T):
        # the kernel reads one row instead of a [T, N] copy of it.
        grad_spikes, stride = grad_spikes[0].contiguous(), 0
    else:
        grad_spikes, stride = grad_spikes.contiguous(), N
    g = _ext._C.lif_backward_cpu(p, grad_spikes.data_ptr(), _ptr(grad_v_last), x.data_ptr(),
                                 _ptr(v0), gx.data_ptr(), gv0.data_ptr(), want_decay, stride)
    return gx, gv0, torch.tensor(g, dtype=torch.float32)


# ---- fake (meta) implementations: shapes only, for torch.compile -------------------------
def _fake_forward(x: Tensor, save_h: bool):
    h = x.new_empty(x.shape if save_h and _saves_h(x) else (0,), dtype=torch.float32)
    return torch.empty_like(x), x.new_empty(x.shape[1:], dtype=torch.float32), h


@lif_op.register_fake
def _(x, v0, decay, scalars, options, save_h):
    return _fake_forward(x, save_h)


@plif_op.register_fake
def _(x, v0, decay, scalars, options, save_h):
    return _fake_forward(x, save_h)


@lif_backward_op.register_fake
def _(grad_spikes, grad_v_last, x, h, v0, decay, scalars, options, want_decay):
    like = x if x is not None else h
    return (torch.empty_like(grad_spikes), like.new_empty(like.shape[1:], dtype=torch.float32),
            like.new_empty((), dtype=torch.float32))


# ---- autograd ------------------------------------------------------------------------------
def _setup(ctx, inputs, output, decay_is_tensor: bool):
    """Save what backward needs: H where the forward emitted it, else x (H is recomputed)."""
    x, v0, decay, scalars, options, save_h = inputs
    if not save_h:
        raise RuntimeError("sparsesnn::lif/plif was called with save_h=False but a gradient is "
                           "required")
    # H is an output only so it can be saved; unused outputs get None instead of a zero tensor.
    ctx.set_materialize_grads(False)
    recompute = not _saves_h(x)
    ctx.save_for_backward(x if recompute else None, None if recompute else output[2], v0,
                          decay if decay_is_tensor else None)
    ctx.decay = None if decay_is_tensor else decay  # PLIF's decay tensor is saved above
    ctx.neuron = (scalars, options)
    ctx.x_meta = (x.shape, x.dtype, x.device)
    ctx.v0_dtype = None if v0 is None else v0.dtype


def _backward(ctx, grad_s: Optional[Tensor], grad_v: Optional[Tensor], want_decay: bool):
    x, h, v0, decay = ctx.saved_tensors
    shape, dtype, device = ctx.x_meta
    grad_s = grad_s if grad_s is not None else torch.zeros(shape, dtype=dtype, device=device)
    # LIF's float decay travels as a CPU scalar: a device copy would cost a transfer + a sync.
    decay = decay.detach() if decay is not None else torch.tensor(ctx.decay, dtype=torch.float32)
    gx, gv0, gd = lif_backward_op(grad_s, grad_v, x, h, v0, decay, *ctx.neuron, want_decay)
    gv0 = None if v0 is None else gv0.to(ctx.v0_dtype)
    if not want_decay:
        return gx, gv0, None, None, None, None
    return gx, gv0, gd.to(decay.dtype).reshape(decay.shape), None, None, None


def _setup_lif(ctx, inputs, output):
    _setup(ctx, inputs, output, decay_is_tensor=False)


def _setup_plif(ctx, inputs, output):
    _setup(ctx, inputs, output, decay_is_tensor=True)


def _backward_lif(ctx, grad_s, grad_v, grad_h):
    return _backward(ctx, grad_s, grad_v, want_decay=False)


def _backward_plif(ctx, grad_s, grad_v, grad_h):
    return _backward(ctx, grad_s, grad_v, want_decay=True)


lif_op.register_autograd(_backward_lif, setup_context=_setup_lif)
plif_op.register_autograd(_backward_plif, setup_context=_setup_plif)
