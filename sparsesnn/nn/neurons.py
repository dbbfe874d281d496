"""Spiking neuron modules (LIF, PLIF, IF) on the fused kernels, SpikingJelly-style state.

Multi-step mode (``step_mode='m'``, default) takes ``[T, B, ...]`` and runs all T steps in one
kernel call; single-step mode (``'s'``) takes ``[B, ...]``. The membrane potential persists in
``.v`` across calls until :meth:`reset` (or :func:`reset_net`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import functional as F
from ..fixed_point import FixedPoint
from ..ops import _checks as C
from ..surrogate import resolve as _resolve_surrogate


class BaseNeuron(nn.Module):
    """State handling shared by the neuron modules."""

    def __init__(self, v_threshold: float, v_reset: Optional[float], detach_reset: bool,
                 surrogate: str, alpha: Optional[float], step_mode: str) -> None:
        super().__init__()
        C.check_finite("v_threshold", v_threshold)
        if v_reset is not None:
            C.check_finite("v_reset", v_reset)
        C.check_choice("step_mode", step_mode, ("m", "s"))
        self.surrogate, _, self.alpha = _resolve_surrogate(surrogate, alpha)
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.detach_reset = bool(detach_reset)
        self.step_mode = step_mode
        self.state_quant: Optional[FixedPoint] = None
        self.v: Optional[Tensor] = None

    def quantize_state(self, fmt: Optional[FixedPoint]) -> "BaseNeuron":
        """Run with a fixed-point membrane state ``fmt`` (None: back to fp32). Threshold, reset
        and decay are put on the same grid, so the whole neuron computes in fixed point."""
        if fmt is not None and not isinstance(fmt, FixedPoint):
            raise ValueError(f"fmt: expected a sparsesnn.FixedPoint or None, got {type(fmt).__name__}")
        if fmt is not None:
            self.v_threshold = fmt.quantize_value(self.v_threshold)
            if self.v_reset is not None:
                self.v_reset = fmt.quantize_value(self.v_reset)
        self.state_quant = fmt
        return self

    def reset(self) -> None:
        """Forget the membrane potential (next call starts from ``v_reset`` / 0)."""
        self.__dict__["v"] = None  # a plain attribute: skips nn.Module.__setattr__'s checks

    def _run(self, x: Tensor, v0: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        single = self.step_mode == "s"
        seq = x.unsqueeze(0) if single else x
        v0 = self.v
        if v0 is not None and v0.shape != seq.shape[1:]:
            raise ValueError(
                f"x: shape {tuple(x.shape)} does not match the stored state {tuple(v0.shape)}; "
                "call reset() between inputs of different shapes"
            )
        spikes, v = self._run(seq, v0)
        # ``v`` is a plain tensor attribute (never a parameter or buffer): a direct write skips
        # nn.Module.__setattr__'s type checks, which cost more than a small kernel call.
        self.__dict__["v"] = v if v.dtype == x.dtype or not x.is_floating_point() else v.to(x.dtype)
        return spikes[0] if single else spikes

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
                f"detach_reset={self.detach_reset}, surrogate={self.surrogate}({self.alpha}), "
                f"step_mode={self.step_mode}")


class LIF(BaseNeuron):
    """Leaky integrate-and-fire neuron, ``decay = 1/tau`` (SpikingJelly ``LIFNode``)."""

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                 decay_input: bool = True, detach_reset: bool = False, surrogate: str = "sigmoid",
                 alpha: Optional[float] = None, step_mode: str = "m") -> None:
        super().__init__(v_threshold, v_reset, detach_reset, surrogate, alpha, step_mode)
        self.tau = C.check_greater("tau", tau, 1.0)
        self.decay_input = bool(decay_input)

    def _run(self, x: Tensor, v0: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return F.lif(x, v0, tau=self.tau, v_threshold=self.v_threshold, v_reset=self.v_reset,
                     decay_input=self.decay_input, detach_reset=self.detach_reset,
                     surrogate=self.surrogate, alpha=self.alpha, state_quant=self.state_quant)

    def quantize_state(self, fmt: Optional[FixedPoint]) -> "LIF":
        super().quantize_state(fmt)
        if fmt is not None:  # decay = 1/tau on the grid too (kept > 0 so tau stays finite)
            decay = max(fmt.quantize_value(1.0 / self.tau), fmt.step)
            self.tau = 1.0 / decay if decay < 1.0 else self.tau
        return self

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class IF(BaseNeuron):
    """Integrate-and-fire neuron (no leak)."""

    def __init__(self, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                 detach_reset: bool = False, surrogate: str = "sigmoid",
                 alpha: Optional[float] = None, step_mode: str = "m") -> None:
        super().__init__(v_threshold, v_reset, detach_reset, surrogate, alpha, step_mode)

    def _run(self, x: Tensor, v0: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return F.if_neuron(x, v0, v_threshold=self.v_threshold, v_reset=self.v_reset,
                           detach_reset=self.detach_reset, surrogate=self.surrogate,
                           alpha=self.alpha, state_quant=self.state_quant)


class PLIF(BaseNeuron):
    """Parametric LIF: one learnable ``w`` per layer, ``decay = sigmoid(w)``, starting at
    ``init_tau`` (SpikingJelly ``ParametricLIFNode``)."""

    def __init__(self, init_tau: float = 2.0, v_threshold: float = 1.0,
                 v_reset: Optional[float] = 0.0, decay_input: bool = True,
                 detach_reset: bool = False, surrogate: str = "sigmoid",
                 alpha: Optional[float] = None, step_mode: str = "m") -> None:
        super().__init__(v_threshold, v_reset, detach_reset, surrogate, alpha, step_mode)
        self.w = nn.Parameter(torch.tensor(F.tau_to_w(init_tau)))
        self.decay_input = bool(decay_input)

    @property
    def tau(self) -> float:
        return float(1.0 / torch.sigmoid(self.w.detach()))

    def _run(self, x: Tensor, v0: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return F.plif(x, self.w, v0, v_threshold=self.v_threshold, v_reset=self.v_reset,
                      decay_input=self.decay_input, detach_reset=self.detach_reset,
                      surrogate=self.surrogate, alpha=self.alpha, state_quant=self.state_quant)


def reset_net(model: nn.Module) -> None:
    """Reset the state of every neuron in ``model`` (call between input sequences)."""
    for m in model.modules():
        if isinstance(m, BaseNeuron):
            m.reset()
