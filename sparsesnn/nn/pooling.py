"""Multi-step pooling: ``[T, B, C, H, W]`` (time folded into the batch) or ``[N, C, H, W]``.

Max pooling of binary spikes is binary (the next layer stays on the event-driven path); average
pooling gives fractions (the next layer takes the analog / dense path).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._multistep import fold_time


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` for multi-step input; args as ``nn.MaxPool2d``.

    Inference with 2x2 windows at stride 2 (the SNN default) takes the max of the two rows, then
    of the two columns, as two strided ``torch.maximum`` calls: the same values as
    ``max_pool2d`` (NaN included), several times faster on CPU (``max_pool2d``'s NCHW kernel is
    scalar). Under autograd it stays ``max_pool2d``: ``maximum`` splits the gradient of a tie,
    and ties are the rule in spike maps."""

    def _two_by_two(self, x: Tensor) -> bool:
        return (_pair(self.kernel_size) == (2, 2) and _pair(self.stride) == (2, 2)
                and _pair(self.padding) == (0, 0) and _pair(self.dilation) == (1, 1)
                and not self.return_indices and x.dim() in (4, 5) and x.is_floating_point()
                and x.shape[-1] >= 2 and x.shape[-2] >= 2
                and not (self.ceil_mode and (x.shape[-1] % 2 or x.shape[-2] % 2))
                and not (x.requires_grad and torch.is_grad_enabled()))

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and self._two_by_two(x):
            oh, ow = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # floor mode: drop an odd last row/column
            r = torch.maximum(x[..., 0:oh:2, :ow], x[..., 1:oh:2, :ow])
            return torch.maximum(r[..., 0::2], r[..., 1::2])
        return fold_time(super().forward, x, 3)


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` for multi-step input; args as ``nn.AvgPool2d``."""

    def forward(self, x: Tensor) -> Tensor:
        return fold_time(super().forward, x, 3)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` for multi-step input (e.g. global pooling, ``output_size=1``)."""

    def forward(self, x: Tensor) -> Tensor:
        return fold_time(super().forward, x, 3)
