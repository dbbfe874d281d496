"""Writes the fuzzing seed corpus: small valid model files covering every stored module kind.

    python fuzz/make_corpus.py        # -> fuzz/corpus/*.ssnn
"""
import os

import torch
from torch import nn

from sparsesnn import FixedPoint, model_file
from sparsesnn.models import SpikingMLP
from sparsesnn.nn import IF, LIF, PLIF, PackedSpikingConv2d, PackedSpikingLinear


def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    lin, conv = nn.Linear(10, 6), nn.Conv2d(2, 3, 3, padding=1)
    mask = torch.rand(6, 10) > 0.6
    mlp = SpikingMLP(8, (6,), 3, T=2)
    mlp.fc1 = PackedSpikingLinear.from_float(mlp.fc1, 4, mask=mlp.fc1.weight.abs() > 0.2)
    mlp.fc2 = PackedSpikingLinear.from_float(mlp.fc2, "binary")
    return {
        "linear_int4_dense": PackedSpikingLinear.from_float(lin, 4),
        "linear_ternary_pruned": PackedSpikingLinear.from_float(lin, "ternary", mask=mask),
        "linear_fp32_pruned": PackedSpikingLinear.from_float(lin, None, mask=mask),
        "conv_int8": PackedSpikingConv2d.from_float(conv, 8),
        "conv_binary": PackedSpikingConv2d.from_float(conv, "binary"),
        "neurons_fixed_point": nn.Sequential(LIF().quantize_state(FixedPoint(12, 6, "stochastic", 3)),
                                             IF(detach_reset=True), PLIF(surrogate="atan", alpha=3.0)),
        "torch_modules": nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                                       nn.Flatten(), nn.Linear(2, 2)),
        "demo_mlp_deployed": mlp.eval(),
    }


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, m in models().items():
        model_file.save(m, os.path.join(out, name + ".ssnn"))
        print(name, os.path.getsize(os.path.join(out, name + ".ssnn")), "bytes")
