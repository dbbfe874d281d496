// The plan's conv2d of analog (non-spike) input over low-bit codes with one scale group: the
// direct-encoded stem of a conv SNN. The same sums, in the same order, as the analog path of
// packed_spike_conv2d_cpu (so every output is bit-identical and the next neuron's spikes are
// the eager model's), but output-stationary over codes decoded once at load: no unpacking,
// de-interleaving or allocation per call.
#pragma once
#include <cstdint>
#include <vector>

#include "sparsesnn/packed_conv2d.h"

namespace sparsesnn {
namespace runtime {

// The unsigned codes of packed rows [R, ceil(O * bits / 8)] as floats [R, O] (R = C*KH*KW).
std::vector<float> decode_conv_codes(const uint8_t* rows, int64_t R, int64_t O, int bits);

// x [NB, C, H, W] fp32 -> y [NB, O, OH, OW]: y = scale * (mul * sum x * u - off * sum x) + bias
// per output (pack.h's mul / off; the sums over the nonzero inputs the output reads, in
// ascending input order). codes from decode_conv_codes; scale [O]; bias [O] or null.
void analog_conv2d(const PackedConv2dParams& p, const float* x, const float* codes,
                   const float* scale, const float* bias, float* y);

}  // namespace runtime
}  // namespace sparsesnn
