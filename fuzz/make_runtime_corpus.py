"""Writes the seed corpus of the runtime loader's fuzzer: small valid plan files covering every
op kind (encoders, linear dense/pruned/blocked in several formats, conv, neurons with
fixed-point state, pooling, flatten, SEW blocks).

    python fuzz/make_runtime_corpus.py        # -> fuzz/runtime_corpus/*.plan
"""
import os

import torch
from torch import nn

from sparsesnn import FixedPoint, runtime
from sparsesnn.deploy import deploy
from sparsesnn.models import SEWResNet, SpikingLeNet, SpikingMLP, SpikingVGG
from sparsesnn.nn import IF, LIF, PackedSpikingLinear


def plans() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    mlp = SpikingMLP(8, (16,), 3, T=2)
    mlp.fc1 = PackedSpikingLinear.from_float(mlp.fc1, 4, mask=mlp.fc1.weight.abs() > 0.2)
    mlp.fc2 = PackedSpikingLinear.from_float(mlp.fc2, "ternary")
    lin = nn.Sequential(PackedSpikingLinear.from_float(nn.Linear(6, 8), 8),
                        LIF().quantize_state(FixedPoint(12, 6, "stochastic", 3)),
                        PackedSpikingLinear.from_float(nn.Linear(8, 4), None, mask=torch.rand(4, 8) > 0.5), IF())
    small = dict(in_channels=1, num_classes=3, T=2)
    return {
        "mlp_int4_pruned_ternary": (mlp.eval(), torch.rand(1, 8)),
        "linear_fixed_point": (lin, torch.rand(2, 1, 6)),
        "lenet_int4": (deploy(SpikingLeNet(**small, image_size=4, channels=(2, 3), kernel_size=3,
                                           hidden=(4,)), default_bits=4).eval(), torch.rand(1, 1, 4, 4)),
        "vgg_avg_rate": (deploy(SpikingVGG([2, "A", 3, "M"], **small, image_size=4, encoder="rate"),
                                default_bits=2).eval(), torch.rand(1, 1, 4, 4)),
        "sew_add": (deploy(SEWResNet((1,), (2,), **small), default_bits=8).eval(), torch.rand(1, 1, 4, 4)),
    }


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runtime_corpus")
    os.makedirs(out, exist_ok=True)
    for name, (m, x) in plans().items():
        runtime.export(m, os.path.join(out, name + ".plan"), x)
