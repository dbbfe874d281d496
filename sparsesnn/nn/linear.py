"""``SpikingLinear``: drop-in ``nn.Linear`` that runs event-driven when the input is sparse.

Per call it measures the spike density (one pass, which also detects analog input) and picks
the event-driven kernel below the break-even density measured for its shape (``dispatch.choose``), the dense
``nn.Linear`` path otherwise, so it is never much slower than ``nn.Linear``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import _ext, dispatch
from .. import functional as F
from ..ops import _checks as C
from ..ops.spike_linear import SPIKE_TYPES, input_major_weight, spike_stats
from ..ops.spike_linear_auto import spike_linear_auto_op

MODES = ("auto", "event", "dense")
# Below this many multiply-accumulates the dense product takes about as long as the event
# path's fixed per-call cost (density pass, dispatch, op call: tens of microseconds), so
# "auto" goes dense without measuring anything.
MIN_MACS = 1 << 20


def dispatch_settings(mode: str, break_even: Optional[float], min_macs: int) -> tuple:
    """Validated ``(mode, break_even, min_macs)`` shared by the spiking layers."""
    C.check_choice("mode", mode, MODES)
    if break_even is not None:
        C.check_finite("break_even", break_even)
    return mode, break_even, C.check_positive_int("min_macs", min_macs, 0)


class SpikingLinear(nn.Linear):
    """``nn.Linear`` for spikes ``[..., in_features]`` (e.g. ``[T, B, K]``: time is folded
    into the batch) with dense / event-driven dispatch by measured density.

    Args:
        in_features, out_features, bias, device, dtype: as ``nn.Linear``.
        break_even: density threshold overriding the measured one (see ``sparsesnn.dispatch``).
        mode: ``"auto"`` (dispatch by density), ``"event"`` (event-driven whenever the input
            is binary) or ``"dense"``.
        min_macs: in ``"auto"`` mode, calls with fewer dense multiply-accumulates than this
            run dense without measuring the density (the event path's fixed cost dominates).
    Attributes:
        last_path: ``"event"`` or ``"dense"``: which path served the last call.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None,
                 *, break_even: Optional[float] = None, mode: str = "auto", min_macs: int = MIN_MACS) -> None:
        C.check_positive_int("in_features", in_features, 0)
        C.check_positive_int("out_features", out_features, 0)
        C.check_alloc("in_features*out_features", in_features * out_features, 4, "the weight")
        super().__init__(in_features, out_features, bias, device, dtype)
        self.mode, self.break_even, self.min_macs = dispatch_settings(mode, break_even, min_macs)
        self.last_path: Optional[str] = None

    @classmethod
    def from_linear(cls, layer: nn.Linear, **kwargs) -> "SpikingLinear":
        """A SpikingLinear sharing ``layer``'s parameters."""
        new = cls(layer.in_features, layer.out_features, layer.bias is not None,
                  device=layer.weight.device, dtype=layer.weight.dtype, **kwargs)
        new.weight, new.bias = layer.weight, layer.bias
        return new

    def weight_t(self) -> Tensor:
        """Input-major copy ``[K, N]`` of the weight, rebuilt only when the weight changed
        (in-place updates bump ``weight._version``; ``.to()`` changes the storage)."""
        return input_major_weight(self.weight)

    def _event_ok(self, x: Tensor) -> bool:
        if self.mode == "dense" or x.numel() == 0 or self.weight.dtype != torch.float32:
            return False
        if self.mode == "auto" and x.numel() * self.out_features < self.min_macs:
            return False
        if x.dtype not in SPIKE_TYPES or x.device != self.weight.device:
            return False
        return x.device.type == "cpu" or _ext.use_kernel(x)

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return self._forward_traced(x)
        if self._event_ok(x):
            xc = x.contiguous()
            nonzero, nonbinary = spike_stats(xc)
            if not nonbinary:
                m = xc.numel() // max(1, self.in_features)
                event = lambda: F.spike_linear(xc, self.weight, self.bias, check_binary=False)  # noqa: E731
                if self.mode == "event":
                    self.last_path = "event"
                    return event()
                self.last_path, y = dispatch.choose(
                    "linear", nonzero / xc.numel(), m, x.device.type, self.break_even,
                    (self.in_features, self.out_features), lambda: self._dense(xc), event)
                return y
        self.last_path = "dense"
        return self._dense(x)

    def _dense(self, x: Tensor) -> Tensor:
        return super().forward(x if x.is_floating_point() else x.to(self.weight.dtype))

    def _forward_traced(self, x: Tensor) -> Tensor:
        """Under torch.compile: the density is measured inside one op (no graph break)."""
        if not self._event_ok(x):
            return super().forward(x if x.is_floating_point() else x.to(self.weight.dtype))
        threshold = 2.0 if self.mode == "event" else (-1.0 if self.break_even is None else self.break_even)
        y = spike_linear_auto_op(x.reshape(-1, self.in_features).contiguous(), self.weight,
                                 self.bias, threshold)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}, break_even={self.break_even}"
