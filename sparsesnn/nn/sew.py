"""SEW residual block (spike-element-wise ResNet, Fang et al., NeurIPS 2021), multi-step.

``out = g(SN(BN(conv(SN(BN(conv(x)))))), shortcut(x))`` with ``shortcut`` the identity or, when
the shape changes, ``SN(BN(conv1x1(x)))``. ``connect``: ``ADD`` (``a + s``: spike counts, small
integers, so the next block's first conv takes the dense/analog path), ``AND`` (``a * s``) or
``IAND`` (``(1 - a) * s``), both binary.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..ops import _checks as C
from ._neuron_factory import check_neuron, make_neuron
from .batchnorm import BatchNorm2d
from .conv import SpikingConv2d

CONNECTS = ("ADD", "AND", "IAND")


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    """``SpikingConv2d`` (no bias, "same" padding) + ``BatchNorm2d``: the pair deploy folds."""
    return nn.Sequential(SpikingConv2d(in_channels, out_channels, kernel_size, stride,
                                       kernel_size // 2, bias=False), BatchNorm2d(out_channels))


class SEWBlock(nn.Module):
    """Basic SEW block: two 3x3 conv-BN-neuron units and a spike-element-wise shortcut.

    Args:
        in_channels, out_channels: channels of the input and the output.
        stride: of the first conv (and of the 1x1 shortcut conv); > 1 downsamples.
        connect: ``"ADD"`` | ``"AND"`` | ``"IAND"``.
        neuron, tau, v_threshold, detach_reset, surrogate: the neurons (see ``make_neuron``).
    Shapes: ``[T, B, in_channels, H, W]`` -> ``[T, B, out_channels, H / stride, W / stride]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, connect: str = "ADD",
                 neuron: str = "lif", tau: float = 2.0, v_threshold: float = 1.0,
                 detach_reset: bool = True, surrogate: str = "sigmoid") -> None:
        super().__init__()
        self.in_channels = C.check_positive_int("in_channels", in_channels)
        self.out_channels = C.check_positive_int("out_channels", out_channels)
        self.stride = C.check_positive_int("stride", stride)
        C.check_choice("connect", connect, CONNECTS)
        self.connect, self.neuron = connect, check_neuron(neuron)
        self.tau, self.v_threshold = float(tau), float(v_threshold)
        self.detach_reset, self.surrogate = bool(detach_reset), surrogate

        def unit(cin: int, cout: int, k: int, s: int) -> nn.Sequential:
            return nn.Sequential(*conv_bn(cin, cout, k, s),
                                 make_neuron(neuron, tau, v_threshold, detach_reset, surrogate))

        self.conv1 = unit(in_channels, out_channels, 3, stride)
        self.conv2 = unit(out_channels, out_channels, 3, 1)
        self.downsample = (unit(in_channels, out_channels, 1, stride)
                           if stride != 1 or in_channels != out_channels else None)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[2] != self.in_channels:
            raise ValueError(f"input: expected [T, B, {self.in_channels}, H, W], got shape {tuple(x.shape)}")
        shortcut = x if self.downsample is None else self.downsample(x)
        a = self.conv2(self.conv1(x))
        if self.connect == "ADD":
            return a + shortcut
        if self.connect == "AND":
            return a * shortcut
        return (1.0 - a) * shortcut

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, stride={self.stride}, connect={self.connect}, "
                f"neuron={self.neuron}")
