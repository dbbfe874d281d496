"""torch.library custom ops (``sparsesnn::*``): kernels + fake impls + autograd."""
from . import lif  # noqa: F401  (registers the ops)
from . import spike_conv2d, spike_linear  # noqa: F401,E402  (event-driven layers)
from . import pack, packed_conv2d, packed_linear, pruned_linear  # noqa: F401,E402  (registers the ops)
