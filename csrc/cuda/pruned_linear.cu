// Pruned compressed-row linear on CUDA. Per scale group: blocks over (input range, row m)
// scatter the surviving synapses of the nonzero inputs into a [M, N] scratch with atomics
// (int32 for binary spikes, so sums are exact and order-free), then a fold kernel adds
// scale * sum to y and clears the scratch. The caller zero-fills y and the scratch.
#include <cuda_runtime.h>

#include <algorithm>

#include "sparsesnn/pack.h"
#include "sparsesnn/pruned_linear.h"

namespace sparsesnn {
namespace {

constexpr int kThreads = 256;
constexpr int kInputsPerBlock = 32;

template <int BITS>
__device__ __forceinline__ int32_t code_at(const uint8_t* vals, int64_t j) {
  constexpr int P = 8 / BITS;
  const unsigned u = (vals[j / P] >> ((j % P) * BITS)) & ((1u << BITS) - 1u);
  return static_cast<int32_t>(u) * (BITS == 1 ? 2 : 1) - (BITS == 1 ? 1 : (1 << (BITS - 1)));
}

template <int BITS, typename Idx>
__global__ void scatter_kernel(PrunedLinearParams p, bool spike, const float* __restrict__ x,
                               const int32_t* __restrict__ rp, const Idx* __restrict__ idx,
                               const void* __restrict__ values, int64_t k_begin, int64_t k_end,
                               float* __restrict__ work) {
  const int64_t m = blockIdx.y;
  const int64_t k0 = k_begin + blockIdx.x * (int64_t)kInputsPerBlock;
  const int64_t k1 = min(k_end, k0 + kInputsPerBlock);
  for (int64_t k = k0; k < k1; ++k) {
    const float xv = x[m * p.K + k];
    if (xv == 0.0f) continue;
    for (int64_t j = rp[k] + threadIdx.x; j < rp[k + 1]; j += blockDim.x) {
      float* dst = work + m * p.N + static_cast<int64_t>(idx[j]);
      if constexpr (BITS == 32) {
        const float v = static_cast<const float*>(values)[j];
        atomicAdd(dst, spike ? v : xv * v);
      } else {
        const int32_t c = code_at<BITS>(static_cast<const uint8_t*>(values), j);
        if (spike) atomicAdd(reinterpret_cast<int*>(dst), c);
        else atomicAdd(dst, xv * static_cast<float>(c));
      }
    }
  }
}

__global__ void fold_kernel(int64_t total, int64_t N, int64_t G, int64_t g, bool as_int, bool scaled,
                            const float* __restrict__ scale, float* __restrict__ work, float* __restrict__ y) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= total) return;
  const float v = as_int ? static_cast<float>(reinterpret_cast<const int*>(work)[i]) : work[i];
  y[i] += scaled ? scale[(i % N) * G + g] * v : v;
  work[i] = 0.0f;  // int 0 and float 0 share the bit pattern
}

__global__ void bias_kernel(int64_t total, int64_t N, const float* __restrict__ bias, float* __restrict__ y) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < total) y[i] += bias[i % N];
}

template <int BITS, typename Idx>
void run(const PrunedLinearParams& p, bool spike, const float* x, const int32_t* rp, const Idx* idx,
         const void* values, const float* scale, const float* bias, float* y, float* work,
         cudaStream_t s) {
  const int64_t K = p.K, total = p.M * p.N;
  const int64_t glen = (p.group_size <= 0 || p.group_size >= K) ? (K > 0 ? K : 1) : p.group_size;
  const int64_t G = BITS == 32 ? 1 : (K + glen - 1) / glen;
  const unsigned fold_blocks = static_cast<unsigned>((total + kThreads - 1) / kThreads);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t kb = BITS == 32 ? 0 : g * glen, ke = BITS == 32 ? K : std::min(K, (g + 1) * glen);
    const dim3 grid(static_cast<unsigned>((ke - kb + kInputsPerBlock - 1) / kInputsPerBlock),
                    static_cast<unsigned>(p.M));
    if (grid.x > 0) scatter_kernel<BITS, Idx><<<grid, kThreads, 0, s>>>(p, spike, x, rp, idx, values, kb, ke, work);
    fold_kernel<<<fold_blocks, kThreads, 0, s>>>(total, p.N, G, g, spike && BITS != 32, BITS != 32, scale, work, y);
  }
  if (bias) bias_kernel<<<fold_blocks, kThreads, 0, s>>>(total, p.N, bias, y);
}

template <typename Idx>
void dispatch(const PrunedLinearParams& p, bool spike, const float* x, const int32_t* rp, const Idx* idx,
              const void* values, const float* scale, const float* bias, float* y, float* work,
              cudaStream_t s) {
  switch (p.bits) {
    case 8: run<8>(p, spike, x, rp, idx, values, scale, bias, y, work, s); break;
    case 4: run<4>(p, spike, x, rp, idx, values, scale, bias, y, work, s); break;
    case 2: run<2>(p, spike, x, rp, idx, values, scale, bias, y, work, s); break;
    case 1: run<1>(p, spike, x, rp, idx, values, scale, bias, y, work, s); break;
    default: run<32>(p, spike, x, rp, idx, values, scale, bias, y, work, s); break;
  }
}

}  // namespace

void pruned_linear_cuda(const PrunedLinearParams& p, bool spike, const float* x,
                        const int32_t* row_ptr, const void* index, const void* values,
                        const float* scale, const float* bias, float* y, float* work,
                        void* stream) {
  if (p.M == 0 || p.N == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (p.index16)
    dispatch(p, spike, x, row_ptr, static_cast<const uint16_t*>(index), values, scale, bias, y, work, s);
  else
    dispatch(p, spike, x, row_ptr, static_cast<const int32_t*>(index), values, scale, bias, y, work, s);
}

}  // namespace sparsesnn
