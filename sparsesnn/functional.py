"""Public functional API. Validates every argument, then calls the ``sparsesnn::*`` ops."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from . import ops as _ops  # noqa: F401  (registers the custom ops)
from .fixed_point import FixedPoint
from .ops import _checks as C
from .ops.lif import lif_op, plif_op
from .surrogate import resolve as _resolve_surrogate

__all__ = ["lif", "plif", "if_neuron"]

_NEURON_DTYPES = {"cpu": (torch.float32,), "cuda": (torch.float32, torch.float16, torch.bfloat16)}


def _neuron_inputs(x: Tensor, v0: Optional[Tensor], v_threshold: float, v_reset: Optional[float]):
    C.check_tensor("x", x)
    C.check_min_dim("x", x, 1, "([T, *] time-major)")
    if x.device.type not in _NEURON_DTYPES:
        raise ValueError(f"x: expected a cpu or cuda tensor, got device {x.device}")
    C.check_dtype("x", x, _NEURON_DTYPES[x.device.type])
    C.check_finite("v_threshold", v_threshold)
    if v_reset is not None:
        C.check_finite("v_reset", v_reset)
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


def _quant_args(state_quant: Optional[FixedPoint]) -> tuple[int, int, int, int]:
    if state_quant is None:
        return (0, 0, 0, 0)
    if not isinstance(state_quant, FixedPoint):
        raise ValueError(f"state_quant: expected a sparsesnn.FixedPoint or None, got {type(state_quant).__name__}")
    return (state_quant.bits, state_quant.frac_bits, state_quant.mode, state_quant.seed)


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
    tau = C.check_greater("tau", tau, 1.0)
    _, kind, alpha = _resolve_surrogate(surrogate, alpha)
    x, v0 = _neuron_inputs(x, v0, v_threshold, v_reset)
    s, v, _ = lif_op(x, v0, 1.0 / tau, float(v_threshold), v_reset, bool(decay_input), True,
                     bool(detach_reset), kind, alpha, _needs_grad(x, v0), *_quant_args(state_quant))
    return s, v


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
    _, kind, alpha = _resolve_surrogate(surrogate, alpha)
    x, v0 = _neuron_inputs(x, v0, v_threshold, v_reset)
    s, v, _ = lif_op(x, v0, 1.0, float(v_threshold), v_reset, True, False, bool(detach_reset),
                     kind, alpha, _needs_grad(x, v0), *_quant_args(state_quant))
    return s, v


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
    _, kind, alpha = _resolve_surrogate(surrogate, alpha)
    x, v0 = _neuron_inputs(x, v0, v_threshold, v_reset)
    decay = torch.sigmoid(w.reshape(()).to(device=x.device, dtype=torch.float32))
    s, v, _ = plif_op(x, v0, decay, float(v_threshold), v_reset, bool(decay_input),
                      bool(detach_reset), kind, alpha, _needs_grad(x, v0, decay),
                      *_quant_args(state_quant))
    return s, v


def tau_to_w(tau: float) -> float:
    """PLIF parameter ``w`` with ``sigmoid(w) = 1 / tau``."""
    return -math.log(C.check_greater("tau", tau, 1.0) - 1.0)
