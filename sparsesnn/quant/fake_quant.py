"""Fake quantization with the straight-through estimator (STE), for quantization-aware
training: the forward pass sees the dequantized low-bit weight, the backward pass passes the
gradient through unchanged (optionally zeroed outside the representable range)."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .quantizers import dequantize, quantize
from .spec import QuantSpec, as_spec

__all__ = ["fake_quantize", "FakeQuantize", "FakeQuantLinear"]


def fake_quantize(w: Tensor, spec: Union[QuantSpec, int, str], scale: Optional[Tensor] = None) -> Tensor:
    """``dequantize(quantize(w))`` in the forward pass, identity gradient (STE)."""
    spec = as_spec(spec)
    codes, s = quantize(w.detach(), spec, scale)
    wq = dequantize(codes, s, spec).to(w.dtype)
    return w + (wq - w).detach()


class FakeQuantize(nn.Module):
    """Module form of :func:`fake_quantize`; ``enabled=False`` makes it the identity."""

    def __init__(self, spec: Union[QuantSpec, int, str], enabled: bool = True) -> None:
        super().__init__()
        self.spec = as_spec(spec)
        self.enabled = enabled

    def forward(self, w: Tensor) -> Tensor:
        return fake_quantize(w, self.spec) if self.enabled else w

    def extra_repr(self) -> str:
        return f"spec={self.spec}, enabled={self.enabled}"


class FakeQuantLinear(nn.Linear):
    """``nn.Linear`` whose weight is fake-quantized with ``spec`` in every forward pass
    (train it, then deploy with ``PackedSpikingLinear.from_float(layer, layer.spec)``)."""

    def __init__(self, in_features: int, out_features: int, spec: Union[QuantSpec, int, str],
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.spec = as_spec(spec)
        self.weight_fake_quant = FakeQuantize(self.spec)

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.linear(x, self.weight_fake_quant(self.weight), self.bias)
