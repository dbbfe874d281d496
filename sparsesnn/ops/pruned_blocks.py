"""The blocked form of pruned weights that the CPU spike kernel reads (``pruned_blocks.h``).

The stored layout stays the compressed-row one (``row_ptr``/``index``/``values``: saved,
counted in ``model_bytes``, read by CUDA and the reference). For binary spikes on CPU a
scatter of single entries costs a store per synapse, slower than the dense packed kernel
unless almost all weights are gone; grouping each input's survivors by 16 consecutive outputs
lets one vector expand + add serve a whole block. The blocked form is derived once per weight
buffer (cached like every kernel layout) and holds int8 codes, ~1 byte per survivor plus
8 bytes per non-empty block.

Where inputs have many non-empty blocks (unstructured pruning at 80-95%: most 16-output
blocks keep a weight or two) the dense packed kernel is faster still: it streams a packed row
of ``N * bits / 8`` bytes per active input with a few vector ops per 64 bytes, against one
expand + add per block. :func:`spike_layout` picks, per weight buffer, the layout with fewer
vector steps per active input: the blocked form, or the dense packed rows (pruned weights as
code 0, the same integer sums, so the result is bit-identical). Either costs about the same
memory where the rule switches (1 byte per survivor + 8 per block vs ``bits / 8`` per weight).
The native runtime's plans use the same choice.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference
from .layout_cache import cached_layout

_MAX_BLOCKS = 1 << 16  # block ids are uint16
# "auto": the cheaper layout (spike_layout); "blocks" / "dense" force one (tests cover both).
PREFER = "auto"


def _entry_inputs(row_ptr: Tensor) -> Tensor:
    """The input k of every stored entry (entries are grouped by input)."""
    K = row_ptr.numel() - 1
    return torch.repeat_interleave(torch.arange(K), (row_ptr[1:] - row_ptr[:-1]).long())


def _block_keys(row_ptr: Tensor, index: Tensor, out_features: int) -> Tensor:
    """``k * nblocks + n // 16`` of every stored entry: ascending (by input, then output)."""
    return _entry_inputs(row_ptr) * ((out_features + 15) // 16) + (index.to(torch.int32).long() >> 4)


def build_blocks(row_ptr: Tensor, index: Tensor, values: Tensor, bits: int,
                 out_features: int) -> tuple[Tensor, ...]:
    """``(block_ptr [K+1] int32, block_id [nb] uint16, block_mask [nb] uint16, block_code [nb]
    int32, codes [nnz+16] int8)`` from the compressed-row layout with ``bits``-bit codes."""
    K, nnz = row_ptr.numel() - 1, index.numel()
    nblocks = (out_features + 15) // 16
    n = index.to(torch.int32).long()
    key = _block_keys(row_ptr, index, out_features)
    blocks, inverse, sizes = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    block_code = torch.cumsum(sizes, 0) - sizes
    mask = torch.zeros(blocks.numel(), dtype=torch.int64).index_add_(0, inverse, 1 << (n & 15))
    block_ptr = torch.zeros(K + 1, dtype=torch.int64)
    block_ptr[1:] = torch.cumsum(torch.bincount(blocks // nblocks, minlength=K), 0)
    codes = torch.zeros(nnz + 16, dtype=torch.int8)
    if nnz:
        codes[:nnz] = reference.unpack_codes(values.reshape(1, -1), bits, nnz).reshape(-1)
    return (block_ptr.to(torch.int32), (blocks % nblocks).to(torch.int32).to(torch.uint16),
            mask.to(torch.int32).to(torch.uint16), block_code.to(torch.int32), codes)


def dense_codes(row_ptr: Tensor, index: Tensor, values: Tensor, bits: int,
                out_features: int) -> Tensor:
    """The dense packed rows ``[K, row_bytes]`` (``quant.pack``'s input-major layout) of the
    pruned weights: pruned entries hold code 0, so the dense packed kernel sums exactly the
    same codes. Built row-major from the compressed rows (already by input), no transpose."""
    K, nnz, N = row_ptr.numel() - 1, index.numel(), out_features
    per_byte, off = 8 // bits, 1 << (bits - 1)  # stored byte value = code + off (bits > 1)
    n_pad = -(-N // per_byte) * per_byte
    u = torch.full((K, n_pad), off, dtype=torch.uint8)
    u[:, N:] = 0  # padding slots stay zero, as quant.pack leaves them
    if nnz:
        k = _entry_inputs(row_ptr)
        codes = reference.unpack_codes(values.reshape(1, -1), bits, nnz).reshape(-1)
        u[k, index.to(torch.int32).long()] = (codes.to(torch.int16) + off).to(torch.uint8)
    u = u.view(K, n_pad // per_byte, per_byte)
    packed = u[..., 0].clone()
    for slot in range(1, per_byte):  # code j of a row sits in byte j // P at bit (j % P) * bits
        packed |= u[..., slot] << (slot * bits)
    return packed


def _choose(row_ptr: Tensor, index: Tensor, values: Tensor, bits: int, out_features: int):
    K = row_ptr.numel() - 1
    fits = (out_features + 15) // 16 <= _MAX_BLOCKS
    if bits == 1 or PREFER == "blocks":  # binary codes have no zero: no dense form
        return ("blocks", build_blocks(row_ptr, index, values, bits, out_features)) if fits else None
    if PREFER == "auto" and fits:
        # Vector steps per active input: one per non-empty block, against one per 64 bytes of
        # a dense packed row (each a load and a few integer ops in both kernels).
        blocks = torch.unique_consecutive(_block_keys(row_ptr, index, out_features)).numel()
        if blocks <= max(K, 1) * out_features * bits / 8 / 64:
            return ("blocks", build_blocks(row_ptr, index, values, bits, out_features))
    return ("dense", dense_codes(row_ptr, index, values, bits, out_features))


def spike_layout(row_ptr: Tensor, index: Tensor, values: Tensor, bits: int,
                 out_features: int) -> Optional[tuple[str, object]]:
    """The cached layout the CPU spike kernel reads for these pruned integer buffers:
    ``("blocks", build_blocks(...))`` or ``("dense", dense_codes(...))``; ``None`` for fp32
    values (the compressed-row scatter kernel) or binary codes with too many outputs."""
    if bits == 32:
        return None
    return cached_layout(values, ("pruned_spike", PREFER, bits, out_features, index.data_ptr()),
                         lambda v: _choose(row_ptr, index, v, bits, out_features))


def cpu_blocks(row_ptr: Tensor, index: Tensor, values: Tensor, bits: int,
               out_features: int) -> Optional[tuple[Tensor, ...]]:
    """The cached blocked form of these buffers, or ``None`` where it does not apply (fp32
    values, more than ``16 * 65536`` outputs)."""
    if bits == 32 or (out_features + 15) // 16 > _MAX_BLOCKS:
        return None
    return cached_layout(values, ("pruned_blocks", bits, out_features, index.data_ptr()),
                         lambda v: build_blocks(row_ptr, index, v, bits, out_features))
