// Linear layer over packed low-bit (or fp32, input-major) weights, event-driven and dense.
//
// y[m, n] = bias[n] + sum_g scale[n, g] * sum_{k in group g} x[m, k] * code[n, k]
// Weights: packed [K, row_bytes] in the layout of pack.h (bits 8/4/2/1), or, with bits == 32,
// the fp32 weight stored input-major wt [K, N] (the fp32 event-driven kernel; scale unused).
// Groups: scale is [N, G] with G = ceil(K / group_size) (G = 1: per output channel).
//
// spike kernel: x must be binary (0/1). Each row lists its active inputs; for each N tile the
//   packed rows of the active inputs are unpacked with shifts/masks and summed in integer
//   lanes (uint16 registers, widened to int32 before they can overflow); the per-output
//   scale is applied once per group at the end. No multiplications in the hot loop.
// dense kernel: any real x (analog input, high density): fp32 accumulation of x * code,
//   skipping x == 0, scale applied once per group.
#pragma once
#include <cstdint>

namespace sparsesnn {

struct PackedLinearParams {
  int64_t M = 0;           // rows of x (batch * time)
  int64_t K = 0;           // inputs
  int64_t N = 0;           // outputs
  int bits = 4;            // 8, 4, 2, 1, or 32 (fp32 input-major weights)
  int64_t group_size = 0;  // inputs per scale group; 0 or >= K: one group
  int threads = 1;
};

// True when every x[i] is exactly 0 or 1 (the spike kernels' precondition); one pass.
bool is_binary_f32_cpu(const float* x, int64_t n);

// x [M, K] fp32; weights as above; scale [N, G] fp32 (ignored for bits 32); bias [N] or null;
// y [M, N] fp32.
void packed_spike_linear_cpu(const PackedLinearParams& p, const float* x, const void* weights,
                             const float* scale, const float* bias, float* y);
void packed_dense_linear_cpu(const PackedLinearParams& p, const float* x, const void* weights,
                             const float* scale, const float* bias, float* y);

#if defined(SPARSESNN_WITH_CUDA)
// spike == true: inputs equal to 1 are summed in integers (exact), any other nonzero input in
// fp32, so non-binary x is still summed correctly; false: fp32 accumulation. device: the
// tensors' CUDA device; launch failures throw std::runtime_error.
void packed_linear_cuda(const PackedLinearParams& p, bool spike, const float* x,
                        const void* weights, const float* scale, const float* bias, float* y,
                        int device, void* stream);
#endif

}  // namespace sparsesnn
