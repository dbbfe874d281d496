"""Models of other SNN libraries -> sparsesnn modules with the same spikes.

``from_spikingjelly(model)`` and ``from_snntorch(model)``; what cannot be mapped is listed in
one :class:`UnconvertibleError` (module path, type, reason). NIR graphs: :mod:`sparsesnn.nir`.
"""
from ._tree import UnconvertibleError
from .layers import SeqToANN, SequenceDropout
from .leaky import LeakyLoop
from .snntorch import PerStep, TimeMajor, from_snntorch
from .spikingjelly import from_spikingjelly

__all__ = ["from_spikingjelly", "from_snntorch", "UnconvertibleError", "TimeMajor", "PerStep",
           "SeqToANN", "SequenceDropout", "LeakyLoop"]
