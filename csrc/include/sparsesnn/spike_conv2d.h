// Event-driven 2-D convolution of binary spikes (same result as torch conv2d).
//
// s is [N, C, H, W] contiguous (fp32 or uint8/bool); the layer weight [O, C/G, KH, KW] is
// passed rearranged as weight_r [G, KH, KW, C/G, O/G] (channels-last inside the kernel), so
// one event (active input channel c at one tap) reads one contiguous row of O/G outputs.
// Padding is given as (top, left) plus the output size, which also covers asymmetric
// padding such as padding="same" with an even kernel.
//
// Forward: for every output pixel, the active input channels of each tap of its receptive
// field add their weight rows to an output-channel tile held in registers.
// grad_weight (event-driven): for every active input pixel and tap, the grad_out row of the
// output pixel it reached (grad_out given channels-last [N, OH, OW, O]) is added to that
// tap's weight gradient; written in the parameter layout [O, C/G, KH, KW].
#pragma once
#include <cstdint>

namespace sparsesnn {

struct SpikeConv2dParams {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t O = 0, KH = 1, KW = 1;       // output channels, kernel size
  int64_t OH = 0, OW = 0;              // output size
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0;
  int64_t dil_h = 1, dil_w = 1;
  int64_t groups = 1;
  int spike_type = 0;  // 0: fp32, 1: uint8 / bool
  int threads = 1;
};

// out [N, O, OH, OW] fp32 (overwritten); bias may be null.
void spike_conv2d_forward_cpu(const SpikeConv2dParams& p, const void* s, const float* weight_r,
                              const float* bias, float* out);

// grad_out_cl [N, OH, OW, O] fp32 -> grad_weight [O, C/G, KH, KW] fp32 (overwritten).
void spike_conv2d_grad_weight_cpu(const SpikeConv2dParams& p, const void* s,
                                  const float* grad_out_cl, float* grad_weight);

#if defined(SPARSESNN_WITH_CUDA)
// CUDA: same layouts; s fp32 or uint8/bool, everything else fp32.
void spike_conv2d_forward_cuda(const SpikeConv2dParams& p, const void* s, const float* weight_r,
                               const float* bias, float* out, int device, void* stream);
void spike_conv2d_grad_weight_cuda(const SpikeConv2dParams& p, const void* s,
                                   const float* grad_out_cl, float* grad_weight, int device,
                                   void* stream);
#endif

}  // namespace sparsesnn
