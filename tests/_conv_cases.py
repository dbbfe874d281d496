"""Conv geometries shared by the packed and pruned conv tests."""

CONV_GEOMS = [  # (C, O, k, stride, padding, dilation, H, W)
    (3, 8, 3, 1, 1, 1, 9, 9),
    (4, 17, 3, 2, 1, 1, 10, 7),
    (2, 5, (1, 3), 1, (0, 2), 1, 6, 8),
    (5, 9, 3, 1, 2, 2, 8, 8),
    (1, 1, 1, 1, 0, 1, 1, 1),
    (6, 33, 5, 3, 0, 1, 11, 13),
    (2, 3, 3, 1, 4, 1, 5, 5),  # padding past the kernel's reach: border output rows read no input
]
