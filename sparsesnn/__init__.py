"""sparsesnn: a C++/CUDA-accelerated engine for compressed spiking neural networks."""
from __future__ import annotations

from . import dispatch, functional, nn, reference
from ._ext import info
from .dispatch import calibrate

__version__ = "0.1.0"
__all__ = ["functional", "nn", "reference", "info", "calibrate", "dispatch", "__version__"]
