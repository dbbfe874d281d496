"""``pack`` / ``unpack``: signed codes <-> input-major packed rows (C++/CUDA kernels).

Bit layout (identical in ``csrc/include/sparsesnn/pack.h`` and ``reference.pack``):
``codes`` int8 ``[N, K...]`` (trailing dims flattened to K) becomes ``packed`` uint8
``[K, ceil(N * bits / 8)]``: row k holds input k's codes for all N outputs, so one spike reads
one contiguous packed row. Output n's code sits at bits ``[n*bits, (n+1)*bits)`` of its row
(byte ``n*bits // 8``, shift ``n*bits % 8``, LSB first), stored unsigned as
``u = code + 2^(bits-1)`` for 8/4/2 bits and ``u = (code + 1) / 2`` for 1 bit (binary +-1).
Unused high bits of a row's last byte are zero. ``unpack(pack(c, b), b, c.shape) == c``.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor

from .spec import QuantSpec, as_spec

__all__ = ["pack", "unpack", "storage_bits", "code_range", "row_bytes"]

_BITS = (8, 4, 2, 1)


def storage_bits(bits: Union[int, str, QuantSpec]) -> int:
    """Bits per code: accepts 8/4/2/1, a format name (``'int4'``, ``'ternary'``...) or a spec."""
    if isinstance(bits, int) and not isinstance(bits, bool) and bits in _BITS:
        return bits
    if isinstance(bits, int) and not isinstance(bits, bool) and bits not in (8, 4, 2):
        raise ValueError(f"bits: expected one of 8, 4, 2, 1 or a format name, got {bits!r}")
    try:
        return as_spec(bits).storage_bits  # type: ignore[union-attr]
    except ValueError:
        raise ValueError(f"bits: expected one of 8, 4, 2, 1 or a format name, got {bits!r}") from None


def code_range(bits: int) -> tuple[int, int]:
    """Inclusive code range representable in ``bits`` (binary: -1 and +1 only)."""
    if bits == 1:
        return -1, 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def row_bytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def _check_codes(codes: Tensor, bits: int) -> None:
    if not isinstance(codes, Tensor):
        raise ValueError(f"codes: expected a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype != torch.int8:
        raise ValueError(f"codes: expected dtype int8, got {codes.dtype}")
    if codes.dim() < 2:
        raise ValueError(f"codes: expected at least 2 dims [N, K...], got shape {tuple(codes.shape)}")
    if codes.numel() == 0:
        return
    lo, hi = code_range(bits)
    cmin, cmax = int(codes.min()), int(codes.max())
    if cmin < lo or cmax > hi or (bits == 1 and bool((codes == 0).any())):
        what = "{-1, +1}" if bits == 1 else f"[{lo}, {hi}]"
        raise ValueError(f"codes: expected values in {what} for {bits}-bit packing, got range [{cmin}, {cmax}]")


def pack(codes: Tensor, bits: Union[int, str, QuantSpec]) -> Tensor:
    """Packs int8 ``codes`` ``[N, K...]`` into uint8 ``[K, ceil(N * bits / 8)]`` (input-major)."""
    from ..ops.pack import pack_op

    b = storage_bits(bits)
    _check_codes(codes, b)
    c2 = codes.reshape(codes.shape[0], math.prod(codes.shape[1:])).contiguous()
    return pack_op(c2, b)


def unpack(packed: Tensor, bits: Union[int, str, QuantSpec], shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`pack`: uint8 ``[K, row_bytes]`` -> int8 codes of ``shape`` ``[N, K...]``."""
    from ..ops.pack import unpack_op

    b = storage_bits(bits)
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"packed: expected a 2-D uint8 tensor, got {getattr(packed, 'dtype', type(packed))} "
                         f"shape {tuple(getattr(packed, 'shape', ()))}")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape: expected at least 2 dims [N, K...], got {shape}")
    N = shape[0]
    K = 1
    for s in shape[1:]:
        K *= s
    want = (K, row_bytes(N, b))
    if tuple(packed.shape) != want:
        raise ValueError(f"packed: expected shape {want} for codes of shape {shape} at {b} bits, got {tuple(packed.shape)}")
    return unpack_op(packed.contiguous(), b, N).reshape(shape)
