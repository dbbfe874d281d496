"""Compression algorithms. Each exposes hooks (``penalty()``, ``step()``, ``epoch_end()``,
``finalize()``) instead of owning the training loop; :func:`fit` is an optional helper loop."""
from __future__ import annotations

from .activity import ActivityRegularizer, neuron_layers
from .admm import ADMM, LayerTarget
from .projections import (dequantize, fake_quantize, project, project_sparse, quantize,
                          sparsity_mask)
from .state import CompressionState, compressible_layers, get_state
from .train import evaluate, fit, reset_states

__all__ = [
    "ADMM", "LayerTarget", "ActivityRegularizer", "neuron_layers", "CompressionState",
    "compressible_layers", "get_state", "project", "project_sparse", "sparsity_mask", "quantize",
    "dequantize", "fake_quantize", "fit", "evaluate", "reset_states",
]
