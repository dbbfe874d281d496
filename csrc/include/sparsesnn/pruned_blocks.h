// Pruned weights in a blocked form for the CPU spike kernel: the surviving synapses of each
// input neuron, grouped by blocks of 16 consecutive outputs. A spike on input k adds, for each
// of its non-empty blocks, the survivors' codes expanded into the block's 16 accumulators
// (one masked expand + add with AVX-512) instead of scattering entry by entry.
//
//   block_ptr  [K + 1] int32: blocks of input k are [block_ptr[k], block_ptr[k+1])
//   block_id   [nb]    uint16: output block (outputs 16*id .. 16*id+15), ascending per input
//   block_mask [nb]    uint16: bit i set = output 16*id + i survives
//   block_code [nb]    int32: where the block's codes start in codes
//   codes      [nnz + 16] int8: survivors' integer codes in (input, output) order, followed
//              by 16 bytes of padding (vector loads read up to 16 codes)
// Built from the compressed-row layout (pruned_linear.h) by sparsesnn/ops/pruned_blocks.py.
#pragma once
#include <cstdint>

#include "sparsesnn/pruned_linear.h"

namespace sparsesnn {

// Binary spikes x [M, K] fp32 (0/1) -> y [M, N]; p.group_size and scale [N, G] as in
// pruned_linear.h (the codes are int8 already, whatever the stored bit width).
// Requires N <= 16 * 65536.
void pruned_blocks_spike_linear_cpu(const PrunedLinearParams& p, const float* x,
                                    const int32_t* block_ptr, const uint16_t* block_id,
                                    const uint16_t* block_mask, const int32_t* block_code,
                                    const int8_t* codes, const float* scale, const float* bias,
                                    float* y);

}  // namespace sparsesnn
