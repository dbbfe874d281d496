// Max pooling of binary spike maps (the plan's MAX_POOL2D after a neuron): the max of 0/1
// values is their OR, so no NaN handling and no -inf start value; 2x2 windows with stride 2
// and no padding (every VGG/LeNet-style pool) take a branch-free row-pair loop.
#pragma once
#include <cstdint>

namespace sparsesnn {
namespace runtime {

struct PoolShape {
  int64_t planes = 0, H = 0, W = 0, OH = 0, OW = 0;
  int kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
};

// x [planes, H, W] of 0/1 floats -> y [planes, OH, OW]; equal to PyTorch's max_pool2d there.
void max_pool_spikes(const PoolShape& s, const float* x, float* y);

}  // namespace runtime
}  // namespace sparsesnn
