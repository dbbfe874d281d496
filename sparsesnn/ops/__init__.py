"""torch.library custom ops (``sparsesnn::*``): kernels + fake impls + autograd."""
from . import lif  # noqa: F401  (registers the ops)
from . import pack, packed_conv2d, packed_linear, pruned_linear  # noqa: F401,E402  (registers the ops)
