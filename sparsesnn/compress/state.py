"""Which layers can be compressed, and the compression state attached to them.

The state (mask, quantization spec, fitted scale) lives on the layer as the attribute
``sparsesnn_compression`` so it travels with the model (``copy.deepcopy``) and
:func:`sparsesnn.deploy.deploy` can choose each layer's packed format from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

ATTR = "sparsesnn_compression"


@dataclass
class CompressionState:
    """Per-layer result of compression.

    mask:  bool ``[N, ...]`` (weight shape) of surviving synapses, or None (dense).
    spec:  quantization spec (``sparsesnn.quant.QuantSpec``) or None (float weights).
    scale: fp32 ``[N]`` per-output-channel scale fitted at finalize, or None.
    sparsity: the target sparsity (None when not pruned).
    """

    mask: torch.Tensor | None = None
    spec: Any = None
    scale: torch.Tensor | None = None
    sparsity: float | None = None


def _spiking_types() -> tuple[type, ...]:
    """Our layer classes when present (they may or may not subclass nn.Linear/nn.Conv2d)."""
    from .. import nn as snn

    return tuple(
        getattr(snn, name) for name in ("SpikingLinear", "SpikingConv2d") if hasattr(snn, name)
    )


def _packed_types() -> tuple[type, ...]:
    from .. import nn as snn

    return tuple(
        getattr(snn, name)
        for name in ("PackedSpikingLinear", "PackedSpikingConv2d")
        if hasattr(snn, name)
    )


def is_compressible(module: nn.Module) -> bool:
    """Float synaptic layers: ``nn.Linear``, ``nn.Conv1d/2d`` and our Spiking* layers."""
    if isinstance(module, _packed_types()):
        return False
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) or isinstance(module, _spiking_types()):
        w = getattr(module, "weight", None)
        return isinstance(w, torch.Tensor) and w.dim() >= 2
    return False


def compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{qualified name: layer}`` in module order; a bare layer is named ``""``."""
    return {name: m for name, m in model.named_modules() if is_compressible(m)}


def get_state(module: nn.Module) -> CompressionState | None:
    return getattr(module, ATTR, None)


def set_state(module: nn.Module, state: CompressionState | None) -> None:
    if state is None:
        if hasattr(module, ATTR):
            delattr(module, ATTR)
        return
    # object.__setattr__: a dataclass is not a Module/Parameter, plain attribute is what we want
    object.__setattr__(module, ATTR, state)
