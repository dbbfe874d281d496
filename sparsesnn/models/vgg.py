"""VGG-style spiking CNN (the model class of ADMM / PCA / minimax papers on CIFAR-10)."""
from __future__ import annotations

from typing import Sequence, Union

from torch import nn

from ..nn import AvgPool2d, BatchNorm2d, Dropout, Flatten, MaxPool2d, SpikingConv2d, SpikingLinear
from ..ops import _checks as C
from ._base import ConvSNN, pair

# "M": 2x2 max pooling (spikes stay binary), "A": 2x2 average pooling (analog output).
VGG_CFGS: dict[str, list] = {
    "vgg9": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _check_cfg(cfg: Union[str, Sequence]) -> list:
    if isinstance(cfg, str):
        if cfg not in VGG_CFGS:
            raise ValueError(f"cfg: expected one of {tuple(VGG_CFGS)} or a list, got {cfg!r}")
        return list(VGG_CFGS[cfg])
    cfg = list(cfg)
    if not cfg or isinstance(cfg[0], str):
        raise ValueError(f"cfg: expected a list starting with a channel count, got {cfg!r}")
    for v in cfg:
        if v not in ("M", "A") and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"cfg: entries must be channel counts >= 1, 'M' or 'A', got {v!r}")
    return cfg


class SpikingVGG(ConvSNN):
    """``cfg`` of 3x3 conv (+ BN + neuron) layers and 2x2 pools, then a classifier.

    Args:
        cfg: a name in ``VGG_CFGS`` or a list like ``[64, "M", 128, "M", ...]`` (ints: conv
            output channels; ``"M"``/``"A"``: 2x2 max/avg pooling).
        in_channels, num_classes, T: input channels, classes, time steps.
        image_size: input ``H`` (or ``(H, W)``): sizes the classifier's first layer.
        hidden: widths of hidden fully connected layers (each + neuron + dropout).
        dropout: dropout probability in the classifier (one mask over time).
        encoder: ``"direct"`` (analog input to the first conv) or ``"rate"``.
        neuron, tau, v_threshold, detach_reset, surrogate: the neurons.
    Shapes: ``x [B, in_channels, H, W]`` -> logits ``[B, num_classes]``.
    """

    def __init__(self, cfg: Union[str, Sequence] = "vgg11", in_channels: int = 3,
                 num_classes: int = 10, T: int = 4, *, image_size: Union[int, Sequence[int]] = 32,
                 hidden: Sequence[int] = (), dropout: float = 0.0, encoder: str = "direct",
                 neuron: str = "lif", tau: float = 2.0, v_threshold: float = 1.0,
                 detach_reset: bool = True, surrogate: str = "sigmoid") -> None:
        super().__init__(in_channels, num_classes, T, encoder, neuron, tau, v_threshold,
                         detach_reset, surrogate)
        self.cfg = _check_cfg(cfg)
        self.image_size = pair(image_size, "image_size")
        self.hidden = [C.check_positive_int("hidden", h) for h in hidden]
        self.dropout = float(dropout)
        Dropout(self.dropout)  # validates p
        first = self.cfg[0]
        self.stem = nn.Sequential(SpikingConv2d(in_channels, first, 3, 1, 1, bias=False), BatchNorm2d(first))
        body: list[nn.Module] = [self.make_neuron()]
        c, (h, w) = first, self.image_size
        for v in self.cfg[1:]:
            if v in ("M", "A"):
                if h < 2 or w < 2:
                    raise ValueError(f"cfg: too many poolings for image_size {self.image_size}")
                body.append(MaxPool2d(2) if v == "M" else AvgPool2d(2))
                h, w = h // 2, w // 2
            else:
                body += [SpikingConv2d(c, v, 3, 1, 1, bias=False), BatchNorm2d(v), self.make_neuron()]
                c = v
        self.body = nn.Sequential(*body)
        head: list[nn.Module] = [Flatten()]
        k = c * h * w
        for n in self.hidden:
            head += [SpikingLinear(k, n), self.make_neuron()]
            if self.dropout > 0:
                head.append(Dropout(self.dropout))
            k = n
        head.append(SpikingLinear(k, num_classes))
        self.head = nn.Sequential(*head)
