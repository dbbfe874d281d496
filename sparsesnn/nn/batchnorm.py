"""Multi-step batch normalization (SpikingJelly ``layer.BatchNorm2d`` semantics).

Input ``[T, B, C, H, W]`` is normalized as one batch of ``T * B`` frames: the statistics (and
the running estimates) are taken over time, batch and space together. ``[N, C, H, W]`` is a
plain single-step call. ``sparsesnn.deploy`` folds these layers into the preceding conv/linear.
"""
from __future__ import annotations

from torch import Tensor, nn

from ._multistep import fold_time


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over ``[T, B, C, H, W]`` (time folded into the batch) or ``[N, C, H, W]``.

    Args: as ``nn.BatchNorm2d`` (``num_features, eps, momentum, affine, track_running_stats``).
    """

    def forward(self, x: Tensor) -> Tensor:
        return fold_time(super().forward, x, 3)


class BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over features: ``[T, B, F]`` (time folded into the batch) or ``[N, F]``."""

    def forward(self, x: Tensor) -> Tensor:
        return fold_time(super().forward, x, 1)
