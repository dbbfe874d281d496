// Event-driven pair STDP update on the GPU (see stdp_update.h). Two launches on one stream, so
// depression (phase 1) completes before potentiation (phase 2), as on the CPU. Blocks of
// inactive rows return at once; explicit _rn intrinsics keep the CPU's (non-FMA) rounding.
#include <cuda_runtime.h>

#include "launch.cuh"
#include "sparsesnn/fixed_point.h"
#include "sparsesnn/stdp_update.h"

namespace sparsesnn {

namespace {

__device__ __forceinline__ float settle_d(float w, const StdpParams& p, uint64_t index) {
  if (p.step > 0.f) {
    const float u = p.rounding == kStochastic ? hash_uniform(p.seed, index) : 0.f;
    return round_to_grid(w, p.step, p.w_min, p.w_max, p.rounding, u);
  }
  return fminf(fmaxf(w, p.w_min), p.w_max);
}

// grid.x over rows i (grid-stride), threads over columns j; only rows with a pre spike work.
__global__ void depress_kernel(StdpParams p, float* w, const float* pre, const float* x_post) {
  for (int64_t i = blockIdx.x; i < p.K; i += gridDim.x) {
    if (pre[i] == 0.f) continue;
    float* wi = w + i * p.N;
    for (int64_t j = threadIdx.x; j < p.N; j += blockDim.x) {
      const float d = __fmul_rn(p.eta_pre, x_post[j]);
      wi[j] = settle_d(__fsub_rn(wi[j], d), p, static_cast<uint64_t>(i * p.N + j));
    }
  }
}

// Every row, only the columns with a post spike.
__global__ void potentiate_kernel(StdpParams p, float* w, const float* post, const float* x_pre) {
  const uint64_t base = static_cast<uint64_t>(p.K * p.N);
  for (int64_t i = blockIdx.x; i < p.K; i += gridDim.x) {
    float* wi = w + i * p.N;
    const float d = __fmul_rn(p.eta_post, x_pre[i]);
    for (int64_t j = threadIdx.x; j < p.N; j += blockDim.x) {
      if (post[j] == 0.f) continue;
      wi[j] = settle_d(__fadd_rn(wi[j], d), p, base + static_cast<uint64_t>(i * p.N + j));
    }
  }
}

}  // namespace

void stdp_update_cuda(const StdpParams& p, float* weight_t, const float* pre, const float* post,
                      const float* x_pre, const float* x_post, int device, void* stream) {
  if (p.K == 0 || p.N == 0) return;
  DeviceGuard guard(device, "stdp_update");
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int threads = 128;
  const int blocks = static_cast<int>(p.K < 65535 ? p.K : 65535);
  depress_kernel<<<blocks, threads, 0, s>>>(p, weight_t, pre, x_post);
  check_launch("stdp_update");
  potentiate_kernel<<<blocks, threads, 0, s>>>(p, weight_t, post, x_pre);
  check_launch("stdp_update");
}

}  // namespace sparsesnn
