"""``SpikingConv2d``: drop-in ``nn.Conv2d`` that runs event-driven when the input is sparse.

Takes ``[N, C, H, W]`` or multi-step ``[T, B, C, H, W]`` (time folded into the batch), measures
the spike density per call and picks the event-driven kernel below the break-even measured for its shape
density, the dense ``nn.Conv2d`` path otherwise.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import _ext, dispatch
from .. import functional as F
from ..ops import _checks as C
from ..ops.spike_conv2d import cached_rearranged_weight
from ..ops.spike_linear import SPIKE_TYPES, spike_stats
from .linear import MIN_MACS, dispatch_settings


class SpikingConv2d(nn.Conv2d):
    """``nn.Conv2d`` for spikes with dense / event-driven dispatch by measured density.

    Args: as ``nn.Conv2d``, plus ``break_even`` (density threshold overriding the
    measured one), ``mode`` (``"auto"`` | ``"event"`` | ``"dense"``) and ``min_macs`` (in
    ``"auto"`` mode, smaller calls run dense without measuring the density). The event-driven path
    needs ``padding_mode="zeros"``; other padding modes always run dense.
    Input: ``[N, C, H, W]``, ``[C, H, W]`` or ``[T, B, C, H, W]``; output matches.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, break_even: Optional[float] = None, mode: str = "auto",
                 min_macs: int = MIN_MACS) -> None:
        C.check_positive_int("in_channels", in_channels)
        C.check_positive_int("out_channels", out_channels)
        k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        C.check_alloc("kernel_size", in_channels * out_channels * math.prod(k) // max(groups, 1), 4,
                      "the weight")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, device, dtype)
        self.mode, self.break_even, self.min_macs = dispatch_settings(mode, break_even, min_macs)
        self.last_path: Optional[str] = None

    @classmethod
    def from_conv(cls, layer: nn.Conv2d, **kwargs) -> "SpikingConv2d":
        """A SpikingConv2d sharing ``layer``'s parameters."""
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                  layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode,
                  device=layer.weight.device, dtype=layer.weight.dtype, **kwargs)
        new.weight, new.bias = layer.weight, layer.bias
        return new

    def weight_r(self) -> Tensor:
        """Channels-last copy ``[G, KH, KW, C/G, O/G]`` of the weight, rebuilt only when the
        weight changed."""
        return cached_rearranged_weight(self.weight, self.groups)

    def _event_ok(self, x: Tensor) -> bool:
        if self.mode == "dense" or self.padding_mode != "zeros" or x.numel() == 0:
            return False
        if self.weight.dtype != torch.float32 or x.dtype not in SPIKE_TYPES or x.device != self.weight.device:
            return False
        # Dense MACs, taking the output size as the input size (exact for stride 1, "same").
        macs = x.numel() * self.out_channels * self.kernel_size[0] * self.kernel_size[1] // self.groups
        if self.mode == "auto" and macs < self.min_macs:
            return False
        return x.device.type == "cpu" or _ext.use_kernel(x)

    def _check_output_size(self, x: Tensor) -> None:
        if isinstance(self.padding, str) or x.dim() != 4:
            return  # "same"/"valid" keep the output no larger than the input
        oh, ow = ((x.shape[2 + i] + 2 * self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) - 1)
                  // self.stride[i] + 1 for i in (0, 1))
        C.check_alloc("padding", x.shape[0] * self.out_channels * max(oh, 0) * max(ow, 0), 4,
                      f"the output [{x.shape[0]}, {self.out_channels}, {oh}, {ow}]")

    def _forward4(self, x: Tensor) -> Tensor:
        self._check_output_size(x)
        if self._event_ok(x):
            xc = x.contiguous()
            nonzero, nonbinary = spike_stats(xc)
            if not nonbinary:
                m = xc.shape[0] * xc.shape[-1] * xc.shape[-2]
                event = lambda: F.spike_conv2d(xc, self.weight, self.bias, self.stride, self.padding,  # noqa: E731
                                               self.dilation, self.groups, weight_r=self.weight_r(),
                                               check_binary=False)
                if self.mode == "event":
                    self.last_path = "event"
                    return event()
                shape = (tuple(self.weight.shape), self.stride, self.padding, self.dilation, self.groups,
                         tuple(xc.shape[1:]))
                self.last_path, y = dispatch.choose("conv2d", nonzero / xc.numel(), m, x.device.type,
                                                    self.break_even, shape, lambda: self._dense(xc), event)
                return y
        self.last_path = "dense"
        return self._dense(x)

    def _dense(self, x: Tensor) -> Tensor:
        return super().forward(x if x.is_floating_point() else x.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:
            T, B = x.shape[:2]
            y = self._forward4(x.flatten(0, 1))
            return y.reshape(T, B, *y.shape[1:])
        if x.dim() == 3:
            return self._forward4(x.unsqueeze(0)).squeeze(0)
        return self._forward4(x)
