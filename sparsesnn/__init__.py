"""sparsesnn: a C++/CUDA-accelerated engine for compressed spiking neural networks."""
from __future__ import annotations

from . import functional, nn, quant, reference
from ._ext import info, tune_allocator
from .fixed_point import FixedPoint

__version__ = "0.1.0"
__all__ = ["functional", "nn", "reference", "quant", "FixedPoint", "info", "tune_allocator", "__version__"]
