"""sparsesnn: a C++/CUDA-accelerated engine for compressed spiking neural networks."""
from __future__ import annotations

from . import dispatch, functional, nn, quant, reference
from . import convert, encode, events, monitor, nir  # noqa: E402  (interop; peers imported lazily)
from ._ext import info, tune_allocator
from .dispatch import calibrate
from .fixed_point import FixedPoint

__version__ = "0.1.0"
__all__ = ["functional", "nn", "reference", "quant", "dispatch", "convert", "encode", "events",
           "monitor", "nir", "FixedPoint", "info",
           "tune_allocator", "calibrate", "__version__"]
