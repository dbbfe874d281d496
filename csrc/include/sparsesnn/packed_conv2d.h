// Event-driven 2-D convolution over packed low-bit (or fp32) weights.
//
// Weights are input-major rows r = (c * KH + ky) * KW + kx, each holding the O output-channel
// codes (pack.h layout, bits 8/4/2/1) or O floats (bits == 32); i.e. the pack of the
// conv weight reshaped to [O, C*KH*KW]. scale is [O, G] over groups of group_size rows.
// Each nonzero input pixel (c, y, x) scatters its rows into the output positions it reaches
// (channels-last accumulators inside the kernel). Binary input: integer accumulation, scale
// once per output at the end; analog input (spike == false): fp32 accumulation of x * code.
#pragma once
#include <cstdint>

namespace sparsesnn {

struct PackedConv2dParams {
  int64_t NB = 0, C = 0, H = 0, W = 0;  // input [NB, C, H, W]
  int64_t O = 0, KH = 1, KW = 1;        // output channels and kernel size
  int64_t OH = 0, OW = 0;               // output size
  int sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  int bits = 4;                         // 8/4/2/1 or 32
  int64_t group_size = 0;               // rows per scale group; 0: one group
  int threads = 1;
};

// x [NB, C, H, W] fp32, y [NB, O, OH, OW] fp32.
void packed_spike_conv2d_cpu(const PackedConv2dParams& p, bool spike, const float* x,
                             const void* weights, const float* scale, const float* bias,
                             float* y);

// Binary spikes, one scale group (scale [O]), bits 8/4/2/1: register-tiled gather kernel
// over the chunked kernel layout wk [C*KH*KW, num_chunks * 64] (see csrc/cpu/conv_gather.h;
// built once per weight by sparsesnn/ops/packed_conv2d.py). Integer accumulation of codes,
// the scale once per output at the end. Returns false (y undefined) if x is not binary where the
// convolution reads it: run the analog kernel then.
bool packed_spike_conv2d_chunked_cpu(const PackedConv2dParams& p, const float* x,
                                     const uint8_t* wk, const float* scale, const float* bias,
                                     float* y);

// Any input values (analog input, integer spike sums), one scale group, bits 8/4/2/1, over the
// chunked layout wk (row_map null) or the pruned layout's chunked kept rows and row map (see
// pruned_conv2d.h): the gather kernel with every listed row weighted by its input value, fp32
// sums, y = scale * (mul * sum(x * u) - off * sum(x)) + bias. Returns false only if the weight
// is too large for the kernel's int32 row offsets (> 2 GiB); run packed_spike_conv2d_cpu then.
bool packed_conv2d_chunked_analog_cpu(const PackedConv2dParams& p, const float* x, const uint8_t* wk,
                                      const int32_t* row_map, const float* scale, const float* bias,
                                      float* y);

#if defined(SPARSESNN_WITH_CUDA)
void packed_conv2d_cuda(const PackedConv2dParams& p, bool spike, const float* x,
                        const void* weights, const float* scale, const float* bias, float* y,
                        int device, void* stream);
#endif

}  // namespace sparsesnn
