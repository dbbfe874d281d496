"""nn.Modules: spiking neurons, event-driven layers, packed layers."""
from .neurons import IF, LIF, PLIF, BaseNeuron, reset_net
from .packed import PackedSpikingConv2d, PackedSpikingLinear

__all__ = ["LIF", "PLIF", "IF", "BaseNeuron", "reset_net", "PackedSpikingLinear", "PackedSpikingConv2d"]
