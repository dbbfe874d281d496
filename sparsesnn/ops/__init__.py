"""torch.library custom ops (``sparsesnn::*``): kernels + fake impls + autograd."""
from . import lif  # noqa: F401  (registers the ops)
