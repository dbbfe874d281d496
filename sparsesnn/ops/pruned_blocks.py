"""The blocked form of pruned weights that the CPU spike kernel reads (``pruned_blocks.h``).

The stored layout stays the compressed-row one (``row_ptr``/``index``/``values``: saved,
counted in ``model_bytes``, read by CUDA and the reference). For binary spikes on CPU a
scatter of single entries costs a store per synapse, slower than the dense packed kernel
unless almost all weights are gone; grouping each input's survivors by 16 consecutive outputs
lets one vector expand + add serve a whole block. The blocked form is derived once per weight
buffer (cached like every kernel layout) and holds int8 codes, ~1 byte per survivor plus
8 bytes per non-empty block.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference
from .layout_cache import cached_layout

_MAX_BLOCKS = 1 << 16  # block ids are uint16


def build_blocks(row_ptr: Tensor, index: Tensor, values: Tensor, bits: int,
                 out_features: int) -> tuple[Tensor, ...]:
    """``(block_ptr [K+1] int32, block_id [nb] uint16, block_mask [nb] uint16, block_code [nb]
    int32, codes [nnz+16] int8)`` from the compressed-row layout with ``bits``-bit codes."""
    K, nnz = row_ptr.numel() - 1, index.numel()
    nblocks = (out_features + 15) // 16
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    k = torch.repeat_interleave(torch.arange(K), counts)
    n = index.to(torch.int32).long()
    key = k * nblocks + n // 16  # ascending: entries are sorted by input, then output
    blocks, inverse, sizes = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    block_code = torch.cumsum(sizes, 0) - sizes
    mask = torch.zeros(blocks.numel(), dtype=torch.int64).index_add_(0, inverse, 1 << (n % 16))
    block_ptr = torch.zeros(K + 1, dtype=torch.int64)
    block_ptr[1:] = torch.cumsum(torch.bincount(blocks // nblocks, minlength=K), 0)
    codes = torch.zeros(nnz + 16, dtype=torch.int8)
    if nnz:
        codes[:nnz] = reference.unpack_codes(values.reshape(1, -1), bits, nnz).reshape(-1)
    return (block_ptr.to(torch.int32), (blocks % nblocks).to(torch.int32).to(torch.uint16),
            mask.to(torch.int32).to(torch.uint16), block_code.to(torch.int32), codes)


def cpu_blocks(row_ptr: Tensor, index: Tensor, values: Tensor, bits: int,
               out_features: int) -> Optional[tuple[Tensor, ...]]:
    """The cached blocked form of these buffers, or ``None`` where it does not apply (fp32
    values, more than ``16 * 65536`` outputs)."""
    if bits == 32 or (out_features + 15) // 16 > _MAX_BLOCKS:
        return None
    return cached_layout(values, f"pruned_blocks_{bits}_{out_features}_{index.data_ptr()}",
                         lambda v: build_blocks(row_ptr, index, v, bits, out_features))
