"""Conv geometries and helpers shared by the packed and pruned conv tests."""
import torch

from sparsesnn import reference
from sparsesnn.ops.pruned_conv2d import dense_rows

CONV_GEOMS = [  # (C, O, k, stride, padding, dilation, H, W)
    (3, 8, 3, 1, 1, 1, 9, 9),
    (4, 17, 3, 2, 1, 1, 10, 7),
    (2, 5, (1, 3), 1, (0, 2), 1, 6, 8),
    (5, 9, 3, 1, 2, 2, 8, 8),
    (1, 1, 1, 1, 0, 1, 1, 1),
    (6, 33, 5, 3, 0, 1, 11, 13),
    (2, 3, 3, 1, 4, 1, 5, 5),  # padding past the kernel's reach: border output rows read no input
]


def spikes(shape, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < density).float()


def dense_reference(m, x):
    """reference.packed_conv2d on the dense rows equal to m's (pruned or dense) layout; x is
    ``[..., C, H, W]``."""
    rows = m.weights if m.layout == "dense" else dense_rows(
        m.index, m.values, m.bits, m.out_channels, m.in_channels * m.kernel_size[0] * m.kernel_size[1])
    y = reference.packed_conv2d(x.reshape(-1, *x.shape[-3:]), rows, m.scale, m.bias, m.bits, m.out_channels,
                                m.kernel_size, m.stride, m.padding, m.dilation, m.group_size)
    return y.reshape(*x.shape[:-3], *y.shape[1:])
