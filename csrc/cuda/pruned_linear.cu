// Pruned compressed-row linear on CUDA, deterministic: a block owns one row m at a time
// (blocks loop over rows). It walks the row's inputs in ascending k; for each nonzero input
// its threads add that input's surviving synapses into a per-block scratch row, one thread
// per entry. An input's entries have distinct outputs (indices strictly ascending), and a
// barrier separates inputs, so there are no atomics and every output sums its terms in
// ascending k: the same order, hence the same fp32 result, on every run (and as the CPU
// kernel). At the end of each scale group the scratch is folded into y and cleared.
#include <cuda_runtime.h>

#include <algorithm>

#include "launch.cuh"
#include "sparsesnn/pack.h"
#include "sparsesnn/pruned_linear.h"

namespace sparsesnn {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1024;
constexpr int64_t kMaxWorkFloats = int64_t(1) << 24;  // 64 MiB of scratch at most

template <int BITS>
__device__ __forceinline__ int32_t code_at(const uint8_t* vals, int64_t j) {
  constexpr int P = 8 / BITS;
  const unsigned u = (vals[j / P] >> ((j % P) * BITS)) & ((1u << BITS) - 1u);
  return static_cast<int32_t>(u) * (BITS == 1 ? 2 : 1) - (BITS == 1 ? 1 : (1 << (BITS - 1)));
}

// work: per block, N int32 lanes (inputs equal to 1 with packed codes: exact integer sums)
// followed by N fp32 lanes (any other value, and fp32 weights). Zero on entry and on exit.
template <int BITS, typename Idx>
__global__ void pruned_kernel(PrunedLinearParams p, bool spike, const float* __restrict__ x,
                              const int32_t* __restrict__ rp, const Idx* __restrict__ idx,
                              const void* __restrict__ values, const float* __restrict__ scale,
                              const float* __restrict__ bias, float* __restrict__ y,
                              float* __restrict__ work) {
  const int64_t K = p.K, N = p.N;
  int32_t* iw = reinterpret_cast<int32_t*>(work + 2 * N * blockIdx.x);
  float* fw = work + 2 * N * blockIdx.x + N;
  const int64_t glen = BITS == 32 ? (K > 0 ? K : 1)
                                  : ((p.group_size <= 0 || p.group_size >= K) ? (K > 0 ? K : 1) : p.group_size);
  const int64_t G = (K + glen - 1) / glen;
  for (int64_t m = blockIdx.x; m < p.M; m += gridDim.x) {
    const float* xr = x + m * K;
    float* yr = y + m * N;
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x) yr[n] = 0.0f;  // owner thread only
    for (int64_t g = 0; g < G; ++g) {
      bool any = false;  // block-uniform: every thread reads the same x row
      const int64_t k1 = min(K, (g + 1) * glen);
      for (int64_t k = g * glen; k < k1; ++k) {
        const float xv = xr[k];
        if (xv == 0.0f) continue;
        any = true;
        for (int64_t j = rp[k] + threadIdx.x; j < rp[k + 1]; j += blockDim.x) {
          const int64_t n = static_cast<int64_t>(idx[j]);
          if constexpr (BITS == 32) {
            // x * v is exact for x == 1: binary input sums the weights as the CPU does.
            fw[n] = __fadd_rn(fw[n], __fmul_rn(xv, static_cast<const float*>(values)[j]));
          } else {
            const int32_t c = code_at<BITS>(static_cast<const uint8_t*>(values), j);
            if (spike && xv == 1.0f) iw[n] += c;
            else fw[n] = __fadd_rn(fw[n], __fmul_rn(xv, static_cast<float>(c)));
          }
        }
        __syncthreads();  // the next input may reach the same outputs from other threads
      }
      if (!any) continue;  // nothing accumulated: y unchanged (as on CPU)
      for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
        if constexpr (BITS == 32) {
          yr[n] = fw[n];
        } else {
          const float v = __fadd_rn(static_cast<float>(iw[n]), fw[n]);
          // Spelled-out rounding: no FMA contraction, as the CPU kernel computes it.
          yr[n] = __fadd_rn(yr[n], __fmul_rn(scale[n * G + g], v));
          iw[n] = 0;
        }
        fw[n] = 0.0f;
      }
      __syncthreads();  // scratch cleared before the next group's scatter
    }
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x)
      yr[n] = __fadd_rn(yr[n], bias ? bias[n] : 0.0f);
  }
}

int64_t blocks_for(const PrunedLinearParams& p) {
  const int64_t by_work = std::max<int64_t>(1, kMaxWorkFloats / std::max<int64_t>(1, 2 * p.N));
  return std::max<int64_t>(1, std::min({p.M, kMaxBlocks, by_work}));
}

template <typename Idx>
void dispatch(const PrunedLinearParams& p, bool spike, const float* x, const int32_t* rp, const Idx* idx,
              const void* values, const float* scale, const float* bias, float* y, float* work,
              cudaStream_t s) {
  const unsigned blocks = static_cast<unsigned>(blocks_for(p));
  switch (p.bits) {
    case 8: pruned_kernel<8, Idx><<<blocks, kThreads, 0, s>>>(p, spike, x, rp, idx, values, scale, bias, y, work); break;
    case 4: pruned_kernel<4, Idx><<<blocks, kThreads, 0, s>>>(p, spike, x, rp, idx, values, scale, bias, y, work); break;
    case 2: pruned_kernel<2, Idx><<<blocks, kThreads, 0, s>>>(p, spike, x, rp, idx, values, scale, bias, y, work); break;
    case 1: pruned_kernel<1, Idx><<<blocks, kThreads, 0, s>>>(p, spike, x, rp, idx, values, scale, bias, y, work); break;
    default: pruned_kernel<32, Idx><<<blocks, kThreads, 0, s>>>(p, spike, x, rp, idx, values, scale, bias, y, work); break;
  }
}

}  // namespace

int64_t pruned_linear_cuda_work_floats(const PrunedLinearParams& p) {
  if (p.M == 0 || p.N == 0) return 0;
  return blocks_for(p) * 2 * p.N;
}

void pruned_linear_cuda(const PrunedLinearParams& p, bool spike, const float* x,
                        const int32_t* row_ptr, const void* index, const void* values,
                        const float* scale, const float* bias, float* y, float* work,
                        int device, void* stream) {
  if (p.M == 0 || p.N == 0) return;
  DeviceGuard guard(device, "pruned_linear");
  const auto s = static_cast<cudaStream_t>(stream);
  if (p.index16)
    dispatch(p, spike, x, row_ptr, static_cast<const uint16_t*>(index), values, scale, bias, y, work, s);
  else
    dispatch(p, spike, x, row_ptr, static_cast<const int32_t*>(index), values, scale, bias, y, work, s);
  check_launch("pruned_linear");
}

}  // namespace sparsesnn
