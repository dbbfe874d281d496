"""snnTorch ``Leaky`` semantics that the fused LIF kernel cannot express, step by step.

snnTorch's subtractive reset is applied one step late and *after* the decay:
``mem[t] = beta * mem[t-1] + x[t] - thr * S[t-1]``, ``S[t] = (mem[t] > thr)``. sparsesnn's
soft reset subtracts before the decay (``V = H - thr*S`` is what decays next step), i.e. it
subtracts ``beta*thr`` where snnTorch subtracts ``thr``; the two agree only for ``beta = 1``.
With ``reset_delay=False`` snnTorch additionally skips the spike of a neuron whose post-reset
potential is still above threshold ("avoid double reset"). Rather than approximate either, this
module runs snnTorch's own recurrence (same operations, same order) with sparsesnn's surrogate
functions, so spikes and gradients are identical; it is a Python loop over T, not the fused
kernel. Zero-reset neurons with a fixed scalar beta do map exactly and use the fused kernel
(see :mod:`sparsesnn.convert.snntorch`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..nn import BaseNeuron
from ..ops import _checks as C
from ..surrogate import spike

__all__ = ["LeakyLoop"]


class LeakyLoop(BaseNeuron):
    """snnTorch ``Leaky`` (multi-step, time-major ``[T, B, ...]``).

    Args:
        beta: decay, scalar or per-neuron tensor (clamped to [0, 1] at every step, as snnTorch).
        threshold: firing threshold; a spike is ``mem > threshold`` (strict, as snnTorch).
        reset_mechanism: ``"subtract"``, ``"zero"`` or ``"none"``.
        reset_delay: snnTorch's flag (True: the reset of a spike is applied at the next step).
        learn_beta: make ``beta`` a parameter.
        surrogate, alpha: sparsesnn surrogate of the spike (snnTorch's default is atan, alpha 2).
    State ``.v`` is snnTorch's ``mem`` (with ``reset_delay=True``: before the pending reset).
    """

    def __init__(self, beta, threshold: float = 1.0, reset_mechanism: str = "subtract",
                 reset_delay: bool = True, learn_beta: bool = False, surrogate: str = "atan",
                 alpha: Optional[float] = 2.0) -> None:
        C.check_choice("reset_mechanism", reset_mechanism, ("subtract", "zero", "none"))
        super().__init__(threshold, 0.0 if reset_mechanism == "zero" else None, True, surrogate,
                         alpha, "m")
        self.reset_mechanism = reset_mechanism
        self.reset_delay = bool(reset_delay)
        beta = torch.as_tensor(beta, dtype=torch.float32).detach().clone()
        if learn_beta:
            self.beta = nn.Parameter(beta)
        else:
            self.register_buffer("beta", beta)

    def _run(self, x: Tensor, v0: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        thr = self.v_threshold
        mem = torch.zeros_like(x[0]) if v0 is None else v0
        beta = self.beta.clamp(0, 1)
        out = []
        for t in range(x.shape[0]):
            # reset signal from the previous potential, detached (snnTorch's mem_reset)
            reset = (mem > thr).to(x.dtype)
            if self.reset_mechanism == "zero":
                mem = beta * ((1 - reset) * mem) + x[t]
            elif self.reset_mechanism == "subtract":
                mem = beta * mem + x[t] - reset * thr
            else:
                mem = beta * mem + x[t]
            s = self._fire(mem - thr)
            if not self.reset_delay and self.reset_mechanism != "none":
                do_reset = s - reset  # snnTorch: avoid resetting twice for one spike
                mem = mem - do_reset * (thr if self.reset_mechanism == "subtract" else mem)
            out.append(s)
        return torch.stack(out), mem

    def _fire(self, u: Tensor) -> Tensor:
        s = spike(u, self.surrogate, self.alpha)
        # snnTorch fires on u > 0, sparsesnn's spike() on u >= 0: fix the forward value at
        # u == 0 without touching the surrogate gradient.
        return s - (s * (u == 0)).detach()

    def extra_repr(self) -> str:
        return (f"reset_mechanism={self.reset_mechanism}, reset_delay={self.reset_delay}, "
                + super().extra_repr())
