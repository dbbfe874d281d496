"""nn.Modules: spiking neurons, event-driven layers, packed layers."""
from .conv import SpikingConv2d
from .linear import SpikingLinear
from .neurons import IF, LIF, PLIF, BaseNeuron, reset_net
from .packed import PackedSpikingConv2d, PackedSpikingLinear

__all__ = ["LIF", "PLIF", "IF", "BaseNeuron", "reset_net", "SpikingLinear", "SpikingConv2d",
           "PackedSpikingLinear", "PackedSpikingConv2d"]
