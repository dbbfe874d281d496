"""Multi-step pooling: ``[T, B, C, H, W]`` (time folded into the batch) or ``[N, C, H, W]``.

Max pooling of binary spikes is binary (the next layer stays on the event-driven path); average
pooling gives fractions (the next layer takes the analog / dense path).
"""
from __future__ import annotations

from torch import Tensor, nn

from ._multistep import fold_time


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` for multi-step input; args as ``nn.MaxPool2d``."""

    def forward(self, x: Tensor) -> Tensor:
        return fold_time(super().forward, x, 3)


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` for multi-step input; args as ``nn.AvgPool2d``."""

    def forward(self, x: Tensor) -> Tensor:
        return fold_time(super().forward, x, 3)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` for multi-step input (e.g. global pooling, ``output_size=1``)."""

    def forward(self, x: Tensor) -> Tensor:
        return fold_time(super().forward, x, 3)
