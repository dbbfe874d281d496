"""nn.Modules: spiking neurons, event-driven layers, packed layers, multi-step building blocks."""
from .batchnorm import BatchNorm1d, BatchNorm2d
from .conv import SpikingConv2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import SpikingLinear
from .neurons import IF, LIF, PLIF, BaseNeuron, reset_net
from .packed import PackedSpikingConv2d, PackedSpikingLinear
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .sew import SEWBlock

__all__ = ["LIF", "PLIF", "IF", "BaseNeuron", "reset_net", "SpikingLinear", "SpikingConv2d",
           "PackedSpikingLinear", "PackedSpikingConv2d", "BatchNorm1d", "BatchNorm2d", "MaxPool2d",
           "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "Dropout", "SEWBlock"]
