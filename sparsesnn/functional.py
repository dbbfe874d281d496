"""Public functional API. Validates every argument, then calls the ``sparsesnn::*`` ops."""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
from torch import Tensor

from . import ops as _ops  # noqa: F401  (registers the custom ops)
from .fixed_point import FixedPoint
from .ops import _checks as C
from .ops._fast import direct, eager_cpu
from .ops.lif import Neuron, lif_inference, lif_op, plif_op
from .ops.spike_conv2d import cached_rearranged_weight
from .ops.spike_conv2d import spike_conv2d_op
from .ops.spike_linear import kernel_weight, spike_linear_op, spike_stats
from .surrogate import resolve as _resolve_surrogate

__all__ = ["lif", "plif", "if_neuron", "spike_linear", "spike_conv2d"]

_F32 = torch.float32
_NEURON_DTYPES = {"cpu": (torch.float32,), "cuda": (torch.float32, torch.float16, torch.bfloat16)}


def _neuron_inputs(x: Tensor, v0: Optional[Tensor]):
    C.check_tensor("x", x)
    if not (x.is_cpu and x.dtype is torch.float32):  # the common case needs no more checks
        if x.device.type not in _NEURON_DTYPES:
            raise ValueError(f"x: expected a cpu or cuda tensor, got device {x.device}")
        C.check_dtype("x", x, _NEURON_DTYPES[x.device.type])
    C.check_min_dim("x", x, 1, "([T, *] time-major)")
    if v0 is not None:
        C.check_tensor("v0", v0)
        C.check_same_device("v0", v0, "x", x)
        if not v0.is_floating_point():
            raise ValueError(f"v0: expected a floating-point tensor, got dtype {v0.dtype}")
        if v0.shape != x.shape[1:]:
            try:
                v0 = v0.expand(x.shape[1:])
            except RuntimeError:
                raise ValueError(
                    f"v0: expected shape {tuple(x.shape[1:])} (x.shape[1:]), got {tuple(v0.shape)}"
                ) from None
        v0 = v0.float().contiguous()
    return x.contiguous(), v0


def _state_args(state_quant: Optional[FixedPoint]) -> tuple[int, int, int, int]:
    if state_quant is None:
        return (0, 0, 0, 0)
    if not isinstance(state_quant, FixedPoint):
        raise ValueError(f"state_quant: expected a sparsesnn.FixedPoint or None, got {type(state_quant).__name__}")
    return (state_quant.bits, state_quant.frac_bits, state_quant.mode, state_quant.seed)


_NO_TAU = object()  # IF (no leak) and PLIF (decay from its parameter) take no tau


def _build_settings(tau, v_threshold, v_reset, decay_input, leak, detach_reset, surrogate, alpha,
                    state_quant) -> tuple[float, Neuron]:
    """Validated ``(decay, Neuron)``; ``tau`` ``_NO_TAU``: decay 1 (unused by PLIF)."""
    decay = 1.0 if tau is _NO_TAU else 1.0 / C.check_greater("tau", tau, 1.0)
    C.check_finite("v_threshold", v_threshold)
    if v_reset is not None:
        C.check_finite("v_reset", v_reset)
    _, kind, alpha = _resolve_surrogate(surrogate, alpha)
    return decay, Neuron(float(v_threshold), None if v_reset is None else float(v_reset), alpha,
                         bool(decay_input), leak, bool(detach_reset), kind, _state_args(state_quant))


_cached_settings = functools.lru_cache(maxsize=256)(_build_settings)


def _settings(*args) -> tuple[float, Neuron]:
    """:func:`_build_settings`, memoized so a small call validates each distinct setting once;
    uncached while tracing (dynamo traces the plain function) or for an unhashable argument
    (the plain function then raises its clear error)."""
    if torch.compiler.is_compiling():
        return _build_settings(*args)
    try:
        return _cached_settings(*args)
    except TypeError:
        return _build_settings(*args)


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _kernel_ready(t: Tensor) -> bool:
    """A plain contiguous fp32 CPU tensor: what the kernel reads as it is."""
    return type(t) is Tensor and t.dtype is _F32 and t.is_cpu and t.is_contiguous()


def _run_neuron(x: Tensor, v0: Optional[Tensor], decay: float, n: Neuron) -> tuple[Tensor, Tensor]:
    # Input and state the kernel reads as they are (the common case) need no conversion; a
    # small inference call costs only a few microseconds of kernel, so the check stays short.
    if not (_kernel_ready(x) and x.dim()
            and (v0 is None or (_kernel_ready(v0) and v0.shape == x.shape[1:]))):
        x, v0 = _neuron_inputs(x, v0)
    if eager_cpu(x, v0):
        return lif_inference(x, v0, decay, n)
    s, v, _ = lif_op(x, v0, decay, *n.pack(), _needs_grad(x, v0))
    return s, v


def lif(
    x: Tensor,
    v0: Optional[Tensor] = None,
    *,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    state_quant: Optional[FixedPoint] = None,
) -> tuple[Tensor, Tensor]:
    """Fused multi-step LIF neuron over all timesteps (SpikingJelly ``LIFNode`` semantics).

    Args:
        x: input current ``[T, *]`` (time-major); fp32 on CPU, fp32/fp16/bf16 on CUDA.
        v0: initial membrane potential ``[*]`` (broadcastable); default ``v_reset`` (hard
            reset) or 0 (soft reset).
        tau: membrane time constant, ``> 1``; ``decay = 1 / tau``.
        v_reset: reset potential (hard reset) or ``None`` (soft reset: subtract threshold).
        surrogate: ``sigmoid`` | ``atan`` | ``piecewise_quadratic`` | ``superspike`` | ``triangle``.
        state_quant: fixed-point membrane state (tinySNN): H is rounded onto this grid every
            step before firing (gradients pass straight through the rounding). Parameters are
            used as given; the modules put them on the grid too.
    Returns:
        ``(spikes [T, *] in x.dtype, v_last [*] fp32)``.
    """
    decay, n = _settings(tau, v_threshold, v_reset, decay_input, True, detach_reset, surrogate,
                         alpha, state_quant)
    return _run_neuron(x, v0, decay, n)


def if_neuron(
    x: Tensor,
    v0: Optional[Tensor] = None,
    *,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    state_quant: Optional[FixedPoint] = None,
) -> tuple[Tensor, Tensor]:
    """Integrate-and-fire (no leak): ``H = V + X``; otherwise as :func:`lif`."""
    decay, n = _settings(_NO_TAU, v_threshold, v_reset, True, False, detach_reset, surrogate,
                         alpha, state_quant)
    return _run_neuron(x, v0, decay, n)


def plif(
    x: Tensor,
    w: Tensor,
    v0: Optional[Tensor] = None,
    *,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    state_quant: Optional[FixedPoint] = None,
) -> tuple[Tensor, Tensor]:
    """Parametric LIF: learnable ``decay = sigmoid(w)`` (``w`` a scalar tensor), gradient
    reduced over time and neurons. ``w = -log(tau - 1)`` starts it at time constant ``tau``."""
    C.check_tensor("w", w)
    if w.numel() != 1:
        raise ValueError(f"w: expected a single-element tensor, got shape {tuple(w.shape)}")
    if not w.is_floating_point():
        raise ValueError(f"w: expected a floating-point tensor, got dtype {w.dtype}")
    # Value checks read the tensor, which torch.compile cannot trace; eager mode checks.
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(w).all()):
        raise ValueError(f"w: expected a finite floating-point value, got {w.detach().flatten()[0].item()}")
    _, n = _settings(_NO_TAU, v_threshold, v_reset, decay_input, True, detach_reset, surrogate,
                     alpha, state_quant)
    x, v0 = _neuron_inputs(x, v0)
    decay = torch.sigmoid(w.reshape(()).to(device=x.device, dtype=torch.float32))
    if eager_cpu(x, v0, decay):
        return lif_inference(x, v0, float(decay), n)
    s, v, _ = plif_op(x, v0, decay, *n.pack(), _needs_grad(x, v0, decay))
    return s, v


def tau_to_w(tau: float) -> float:
    """PLIF parameter ``w`` with ``sigmoid(w) = 1 / tau``."""
    return -math.log(C.check_greater("tau", tau, 1.0) - 1.0)


# ---- event-driven spike x weight layers ------------------------------------------------------
_SPIKE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8, torch.bool)


def _spike_input(s: Tensor, check_binary: bool) -> Tensor:
    """Validates a spike tensor; returns it as fp32/uint8/bool (what the kernels read)."""
    C.check_tensor("s", s)
    C.check_dtype("s", s, _SPIKE_DTYPES)
    if s.is_floating_point() and s.dtype != torch.float32:
        s = s.float()  # differentiable: the gradient flows back in s's own dtype
    if check_binary and C.data_checks(s):  # on CUDA opt-in: the check is a host sync
        _, bad = spike_stats(s.contiguous())
        if bad:
            C.check_binary("s", s)  # raises, naming a bad value
    return s


def _layer_weight(weight: Tensor, s: Tensor, dim: int, what: str) -> None:
    C.check_tensor("weight", weight)
    C.check_dim("weight", weight, dim, what)
    C.check_same_device("weight", weight, "s", s)
    C.check_dtype("weight", weight, (torch.float32,))


def _layer_bias(bias: Optional[Tensor], weight: Tensor, n_out: int) -> None:
    if bias is None:
        return
    C.check_tensor("bias", bias)
    C.check_same_device("bias", bias, "weight", weight)
    C.check_dtype("bias", bias, (torch.float32,))
    C.check_shape("bias", bias, (n_out,))


def spike_linear(s: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *,
                 weight_t: Optional[Tensor] = None, check_binary: bool = True) -> Tensor:
    """Event-driven ``linear`` of binary spikes: each active input adds its weight row.

    Args:
        s: spikes ``[..., K]``: float (0/1), bool or uint8. Non-binary values raise
            ``ValueError`` (route analog input to ``torch.nn.functional.linear``).
        weight: ``[N, K]`` fp32 (the ``nn.Linear`` layout; receives ``grad_weight``).
        bias: ``[N]`` fp32 or ``None``.
        weight_t: optional input-major copy ``weight.t().contiguous()`` ``[K, N]``. When
            omitted the kernel's own layout (``ops.spike_linear.kernel_weight``) is built once
            per weight version and cached (``ops.layout_cache``), so repeated calls with the
            same weight do not re-arrange it; leaving it out is the fast way.
        check_binary: verify that ``s`` is binary (one pass; skip only if known). On CUDA
            only with ``SPARSESNN_CUDA_CHECKS=1``: the check reads back to the host.
    Returns:
        ``[..., N]`` fp32, equal to ``F.linear(s.float(), weight, bias)`` up to fp32 rounding.
    """
    C.check_tensor("s", s)
    C.check_min_dim("s", s, 1, "([..., K])")
    _layer_weight(weight, s, 2, "([N, K])")
    K, N = weight.shape[1], weight.shape[0]
    if s.shape[-1] != K:
        raise ValueError(f"s: expected last dim {K} (weight.shape[1]), got shape {tuple(s.shape)}")
    _layer_bias(bias, weight, N)
    if weight_t is None:
        weight_t = kernel_weight(weight)
    else:
        C.check_tensor("weight_t", weight_t)
        C.check_shape("weight_t", weight_t, (K, N))
        C.check_same_device("weight_t", weight_t, "weight", weight)
        C.check_dtype("weight_t", weight_t, (torch.float32,))
        # No .contiguous(): the cached layout has padded rows (not contiguous), and a copy of
        # the whole weight per call is what the cache is for; the op copies only what the
        # kernel cannot read (rows closer than N, or a non-unit column stride).
        weight_t = weight_t.detach()
    s = _spike_input(s, check_binary)
    lead = s.shape[:-1]
    args = (s.reshape(math.prod(lead), K).contiguous(), weight, weight_t,
            None if bias is None else bias.contiguous())
    op = direct(spike_linear_op) if eager_cpu(s, weight, bias) else spike_linear_op
    return op(*args).reshape(*lead, N)


def _pair(name: str, v, minimum: int) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    if not (isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {v!r}")
    if min(v) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {tuple(v)}")
    return int(v[0]), int(v[1])


def conv2d_geometry(in_hw, kernel_hw, stride, padding, dilation):
    """Validated ``(stride, (pad_top, pad_left), (OH, OW), dilation)`` for conv2d arguments as
    ``torch.nn.functional.conv2d`` takes them (``padding`` int, pair, ``"valid"`` or ``"same"``)."""
    stride = _pair("stride", stride, 1)
    dilation = _pair("dilation", dilation, 1)
    (H, W), (KH, KW) = in_hw, kernel_hw
    if isinstance(padding, str):
        C.check_choice("padding", padding, ("valid", "same"))
        if padding == "valid":
            pads, out = (0, 0), None
        else:
            if stride != (1, 1):
                raise ValueError(f"padding: 'same' requires stride 1, got stride {stride}")
            # As torch: total padding d*(k-1), the extra one (odd total) at the bottom/right.
            pads, out = ((dilation[0] * (KH - 1)) // 2, (dilation[1] * (KW - 1)) // 2), (H, W)
    else:
        pads, out = _pair("padding", padding, 0), None
    if out is None:
        out = tuple((n + 2 * p - d * (k - 1) - 1) // st + 1
                    for n, p, d, k, st in zip((H, W), pads, dilation, (KH, KW), stride))
    if min(out) < 1:
        raise ValueError(f"s: input {H}x{W} is smaller than the dilated kernel "
                         f"({KH}x{KW}, dilation {dilation}, padding {pads})")
    return stride, pads, out, dilation


def spike_conv2d(s: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0,
                 dilation=1, groups: int = 1, *, weight_r: Optional[Tensor] = None,
                 check_binary: bool = True) -> Tensor:
    """Event-driven ``conv2d`` of binary spikes: each active input pixel adds its kernel slice.

    Args:
        s: spikes ``[N, C, H, W]`` (time folded into batch) or ``[C, H, W]``; float (0/1),
            bool or uint8. Non-binary values raise ``ValueError``.
        weight: ``[O, C/groups, KH, KW]`` fp32; ``bias`` ``[O]`` fp32 or ``None``.
        stride, padding, dilation, groups: as ``torch.nn.functional.conv2d`` (padding int,
            pair, ``"valid"`` or ``"same"``; zero padding).
        weight_r: optional ``ops.spike_conv2d.rearrange_weight(weight, groups)``; when
            omitted it is built once per weight version and cached (``ops.layout_cache``).
    Returns:
        ``[N, O, OH, OW]`` fp32, equal to ``F.conv2d(s.float(), ...)`` up to fp32 rounding.
    """
    C.check_tensor("s", s)
    if s.dim() == 3:
        return spike_conv2d(s.unsqueeze(0), weight, bias, stride, padding, dilation, groups,
                            weight_r=weight_r, check_binary=check_binary).squeeze(0)
    C.check_dim("s", s, 4, "([N, C, H, W])")
    _layer_weight(weight, s, 4, "([O, C/groups, KH, KW])")
    groups = C.check_positive_int("groups", groups)
    O, Cg, KH, KW = weight.shape
    if O % groups:
        raise ValueError(f"weight: expected out channels divisible by groups={groups}, got {O}")
    if s.shape[1] != Cg * groups:
        raise ValueError(f"s: expected {Cg * groups} channels (weight.shape[1] * groups), "
                         f"got shape {tuple(s.shape)}")
    _layer_bias(bias, weight, O)
    stride, pads, out_hw, dilation = conv2d_geometry(s.shape[-2:], (KH, KW), stride, padding, dilation)
    C.check_alloc("padding", s.shape[0] * O * out_hw[0] * out_hw[1], 4,
                  f"the output [{s.shape[0]}, {O}, {out_hw[0]}, {out_hw[1]}]")
    if weight_r is None:
        weight_r = cached_rearranged_weight(weight, groups)
    else:
        C.check_tensor("weight_r", weight_r)
        C.check_shape("weight_r", weight_r, (groups, KH, KW, Cg, O // groups))
        C.check_same_device("weight_r", weight_r, "weight", weight)
        C.check_dtype("weight_r", weight_r, (torch.float32,))
        weight_r = weight_r.detach().contiguous()
    s = _spike_input(s, check_binary).contiguous()
    op = direct(spike_conv2d_op) if eager_cpu(s, weight, bias) else spike_conv2d_op
    return op(s, weight, weight_r, None if bias is None else bias.contiguous(), list(stride),
              list(pads), list(out_hw), list(dilation), groups)
