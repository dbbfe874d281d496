// Pruned conv2d layout for binary spikes: only the tap rows (c, ky, kx) that have a nonzero
// weight for some output channel are stored ("nonzero taps per input channel"); a spike on
// input channel c reads only the kept taps of c. Stored: index [R] int32 (kept row ids
// (c * KH + ky) * KW + kx, ascending) and their packed rows values [R, ceil(O * bits / 8)]
// (pack.h layout). The kernel reads the chunked form of values (conv_gather.h) and a row map
// [C*KH*KW] int32 (kept row -> its position in values, dropped row -> -1), both derived once
// per weight by sparsesnn/ops/pruned_conv2d.py.
#pragma once
#include <cstdint>

#include "sparsesnn/packed_conv2d.h"

namespace sparsesnn {

// x [NB, C, H, W] binary fp32 -> y [NB, O, OH, OW]; one scale group (scale [O]); bits 8/4/2/1.
// Returns false (y undefined) if x is not binary where the convolution reads it.
bool pruned_spike_conv2d_cpu(const PackedConv2dParams& p, const float* x, const uint8_t* wk,
                             const int32_t* row_map, const float* scale, const float* bias,
                             float* y);

}  // namespace sparsesnn
