"""Ready SNNs: an MLP and LeNet-, VGG- and SEW-ResNet-style conv nets (multi-step, BN folded
at deployment)."""
from .lenet import SpikingLeNet
from .mlp import SpikingMLP
from .resnet import SEWResNet
from .vgg import VGG_CFGS, SpikingVGG

__all__ = ["SpikingMLP", "SpikingLeNet", "SpikingVGG", "SEWResNet", "VGG_CFGS"]
