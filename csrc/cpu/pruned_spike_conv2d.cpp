// Event-driven conv2d over the pruned tap-row layout (pruned_conv2d.h): the gather kernel of
// conv_gather.h, whose row lists are built per (input pixel, tap) from the kept taps of each
// channel, so a dropped tap costs neither a list entry nor an accumulation.
#include "sparsesnn/pruned_conv2d.h"

#include "conv_gather.h"

namespace sparsesnn {

bool pruned_spike_conv2d_cpu(const PackedConv2dParams& p, const float* x, const uint8_t* wk,
                             const int32_t* row_map, const float* scale, const float* bias,
                             float* y) {
  return conv_gather::dispatch(p, x, wk, row_map, scale, bias, y);
}

}  // namespace sparsesnn
