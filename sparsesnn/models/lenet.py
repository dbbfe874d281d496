"""LeNet-style spiking CNN (the MNIST model class of the compression papers)."""
from __future__ import annotations

from typing import Sequence, Union

from torch import nn

from ..nn import AvgPool2d, BatchNorm2d, Flatten, MaxPool2d, SpikingConv2d, SpikingLinear
from ..ops import _checks as C
from ._base import ConvSNN, pair


class SpikingLeNet(ConvSNN):
    """conv-BN-neuron-pool x 2, then fully connected layers.

    Args:
        in_channels, num_classes, T: input channels, classes, time steps.
        image_size: input ``H`` (or ``(H, W)``), at least 4.
        channels: output channels of the two convs. kernel_size: their kernel ("same" padding).
        hidden: widths of the hidden fully connected layers.
        pool: ``"max"`` (binary spikes to the next conv) or ``"avg"`` (analog).
        encoder, neuron, tau, v_threshold, detach_reset, surrogate: see ``SpikingVGG``.
    Shapes: ``x [B, in_channels, H, W]`` -> logits ``[B, num_classes]``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, T: int = 4, *,
                 image_size: Union[int, Sequence[int]] = 28, channels: Sequence[int] = (6, 16),
                 kernel_size: int = 5, hidden: Sequence[int] = (120, 84), pool: str = "max",
                 encoder: str = "direct", neuron: str = "lif", tau: float = 2.0,
                 v_threshold: float = 1.0, detach_reset: bool = True, surrogate: str = "sigmoid") -> None:
        super().__init__(in_channels, num_classes, T, encoder, neuron, tau, v_threshold,
                         detach_reset, surrogate)
        self.image_size = pair(image_size, "image_size")
        if min(self.image_size) < 4:
            raise ValueError(f"image_size: expected at least 4 (two 2x2 poolings), got {image_size!r}")
        if len(channels) != 2:
            raise ValueError(f"channels: expected two channel counts, got {channels!r}")
        self.channels = [C.check_positive_int("channels", c) for c in channels]
        self.kernel_size = C.check_positive_int("kernel_size", kernel_size)
        self.hidden = [C.check_positive_int("hidden", h) for h in hidden]
        C.check_choice("pool", pool, ("max", "avg"))
        self.pool = pool
        c1, c2 = self.channels
        k, p = self.kernel_size, self.kernel_size // 2

        def pooling() -> nn.Module:
            return MaxPool2d(2) if pool == "max" else AvgPool2d(2)

        self.stem = nn.Sequential(SpikingConv2d(in_channels, c1, k, 1, p, bias=False), BatchNorm2d(c1))
        self.body = nn.Sequential(self.make_neuron(), pooling(),
                                  SpikingConv2d(c1, c2, k, 1, p, bias=False), BatchNorm2d(c2),
                                  self.make_neuron(), pooling())
        # "same" padding keeps the size for odd kernels; even kernels grow it by one
        h, w = (s + 2 * p - k + 1 for s in self.image_size)
        h, w = h // 2, w // 2
        h, w = (h + 2 * p - k + 1) // 2, (w + 2 * p - k + 1) // 2
        if min(h, w) < 1:
            raise ValueError(f"image_size: {image_size!r} is too small for kernel_size {k}")
        head: list[nn.Module] = [Flatten()]
        n_in = c2 * h * w
        for n in self.hidden:
            head += [SpikingLinear(n_in, n), self.make_neuron()]
            n_in = n
        head.append(SpikingLinear(n_in, num_classes))
        self.head = nn.Sequential(*head)
