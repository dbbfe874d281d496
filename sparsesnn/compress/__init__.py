"""Compression algorithms. Each exposes hooks (``penalty()``, ``step()``, ``epoch_end()``,
``finalize()``) instead of owning the training loop; :func:`fit` is an optional helper loop."""
from __future__ import annotations

from .activity import ActivityRegularizer, neuron_layers
from .admm import ADMM, LayerTarget
from .projections import (dequantize, fake_quantize, project, project_sparse, quantize,
                          sparsity_mask)
from .state import CompressionState, compressible_layers, get_state
from .train import evaluate, fit, reset_states
from . import tinysnn  # noqa: E402  (tinysnn.explore, QuantConfig, ...)
from . import distributed  # noqa: E402  (rank-consistency helpers for DDP)
from .minimax import MinimaxPruner, minimax_prune
from .pca import pca_prune, spatial_prune
from .search import JointSearch, lite_search
from .temporal import temporal_prune

__all__ = [
    "ADMM", "LayerTarget", "ActivityRegularizer", "neuron_layers", "CompressionState",
    "compressible_layers", "get_state", "project", "project_sparse", "sparsity_mask", "quantize",
    "dequantize", "fake_quantize", "fit", "evaluate", "reset_states",
    "pca_prune", "spatial_prune", "temporal_prune", "MinimaxPruner", "minimax_prune", "tinysnn",
    "JointSearch", "lite_search", "distributed",
]
