// Event-driven conv2d over the pruned tap-row layout (pruned_conv2d.h): the gather kernel of
// conv_gather.h, whose per-pixel row lists go through the row map so dropped taps cost no
// accumulation (their events are filtered while the list is built: a gather and a compress
// per 16 events).
#include "sparsesnn/pruned_conv2d.h"

#include "conv_gather.h"

namespace sparsesnn {

void pruned_spike_conv2d_cpu(const PackedConv2dParams& p, const float* x, const uint8_t* wk,
                             const int32_t* row_map, const float* scale, const float* bias,
                             float* y) {
  conv_gather::dispatch(p, x, wk, row_map, scale, bias, y);
}

}  // namespace sparsesnn
