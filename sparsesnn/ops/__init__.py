"""torch.library custom ops (``sparsesnn::*``): kernels + fake impls + autograd."""
import torch

from . import lif  # noqa: F401  (registers the ops)
from . import spike_conv2d, spike_linear  # noqa: F401  (event-driven layers)
from . import pack, packed_conv2d, packed_linear, pruned_conv2d, pruned_linear  # noqa: F401  (registers the ops)
from . import spike_linear_auto  # noqa: F401  (SpikingLinear under torch.compile)
from ._fast import defer_dynamo_import as _defer_dynamo_import

for _module in (lif, spike_conv2d, spike_linear, pack, packed_conv2d, packed_linear, pruned_conv2d,
                pruned_linear, spike_linear_auto):
    for _op in vars(_module).values():
        if isinstance(_op, torch.library.CustomOpDef):
            _defer_dynamo_import(_op)
