"""SEW-ResNet-style spiking CNN (Fang et al., NeurIPS 2021) with ``SEWBlock`` stages."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..nn import AdaptiveAvgPool2d, BatchNorm2d, Flatten, SEWBlock, SpikingConv2d, SpikingLinear
from ..nn.sew import CONNECTS
from ..ops import _checks as C
from ._base import ConvSNN


class SEWResNet(ConvSNN):
    """3x3 stem conv, stages of ``SEWBlock`` (the first block of every stage after the first
    halves the size), global average pooling, linear readout.

    Args:
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` (SEW-ResNet-18 layout).
        channels: channels per stage (the stem has ``channels[0]``).
        in_channels, num_classes, T: input channels, classes, time steps.
        connect: ``"ADD"`` (spike counts flow between blocks), ``"AND"`` or ``"IAND"``.
        encoder, neuron, tau, v_threshold, detach_reset, surrogate: see ``SpikingVGG``.
    Shapes: ``x [B, in_channels, H, W]`` -> logits ``[B, num_classes]``.
    """

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), channels: Sequence[int] = (64, 128, 256, 512),
                 in_channels: int = 3, num_classes: int = 10, T: int = 4, *, connect: str = "ADD",
                 encoder: str = "direct", neuron: str = "lif", tau: float = 2.0,
                 v_threshold: float = 1.0, detach_reset: bool = True, surrogate: str = "sigmoid") -> None:
        super().__init__(in_channels, num_classes, T, encoder, neuron, tau, v_threshold,
                         detach_reset, surrogate)
        if not layers or len(layers) != len(channels):
            raise ValueError(f"layers/channels: expected two non-empty lists of the same length, "
                             f"got {layers!r} and {channels!r}")
        self.layers = [C.check_positive_int("layers", n) for n in layers]
        self.channels = [C.check_positive_int("channels", c) for c in channels]
        C.check_choice("connect", connect, CONNECTS)
        self.connect = connect
        c = self.channels[0]
        self.stem = nn.Sequential(SpikingConv2d(in_channels, c, 3, 1, 1, bias=False), BatchNorm2d(c))
        body: list[nn.Module] = [self.make_neuron()]
        for i, (n, cout) in enumerate(zip(self.layers, self.channels)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                body.append(SEWBlock(c, cout, stride, connect, neuron, tau, v_threshold,
                                     detach_reset, surrogate))
                c = cout
        self.body = nn.Sequential(*body)
        self.head = nn.Sequential(AdaptiveAvgPool2d(1), Flatten(), SpikingLinear(c, num_classes))
