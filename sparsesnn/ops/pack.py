"""``sparsesnn::pack`` / ``sparsesnn::unpack``: codes <-> input-major packed rows.

Arguments arrive validated and contiguous from ``sparsesnn.quant.packing``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext, reference


_BITS = (1, 2, 4, 8)


def _row_bytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def _check_bits(bits: int) -> None:
    # The kernels divide by bits (8 // bits codes per byte): 0 would divide by zero on the device.
    if bits not in _BITS:
        raise ValueError(f"bits: expected one of {_BITS}, got {bits!r}")


@torch.library.custom_op("sparsesnn::pack", mutates_args=(), device_types=("cpu", "cuda"))
def pack_op(codes: Tensor, bits: int) -> Tensor:
    """int8 ``[N, K]`` -> uint8 ``[K, ceil(N * bits / 8)]``."""
    _check_bits(bits)
    N, K = codes.shape
    if not _ext.use_kernel(codes):
        return reference.pack_codes(codes, bits)
    out = torch.empty(K, _row_bytes(N, bits), dtype=torch.uint8, device=codes.device)
    if N and K:
        if codes.is_cuda:
            _ext._C.pack_cuda(codes.data_ptr(), N, K, bits, out.data_ptr(), codes.device.index,
                              _ext.cuda_stream(codes.device))
        else:
            _ext._C.pack_cpu(codes.data_ptr(), N, K, bits, out.data_ptr(), _ext.num_threads())
    return out


@pack_op.register_fake
def _(codes, bits):
    _check_bits(bits)
    N, K = codes.shape
    return codes.new_empty((K, _row_bytes(N, bits)), dtype=torch.uint8)


@torch.library.custom_op("sparsesnn::unpack", mutates_args=(), device_types=("cpu", "cuda"))
def unpack_op(packed: Tensor, bits: int, n: int) -> Tensor:
    """uint8 ``[K, row_bytes]`` -> int8 ``[n, K]``."""
    _check_bits(bits)
    K = packed.shape[0]
    if not _ext.use_kernel(packed):
        return reference.unpack_codes(packed, bits, n)
    out = torch.empty(n, K, dtype=torch.int8, device=packed.device)
    if n and K:
        if packed.is_cuda:
            _ext._C.unpack_cuda(packed.data_ptr(), n, K, bits, out.data_ptr(), packed.device.index,
                                _ext.cuda_stream(packed.device))
        else:
            _ext._C.unpack_cpu(packed.data_ptr(), n, K, bits, out.data_ptr(), _ext.num_threads())
    return out


@unpack_op.register_fake
def _(packed, bits, n):
    return packed.new_empty((n, packed.shape[0]), dtype=torch.int8)


def pack_stream(codes: Tensor, bits: int) -> Tensor:
    """Flat int8 codes ``[nnz]`` -> bit stream uint8 ``[ceil(nnz * bits / 8)]`` (the value
    buffer of the pruned layout; equal to packing ``codes`` as one input row)."""
    return pack_op(codes.reshape(-1, 1).contiguous(), bits).reshape(-1)
