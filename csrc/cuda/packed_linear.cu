// Packed-weight linear on CUDA: one thread per output neuron n of one input row m. Every
// thread of a block walks the same x row (a broadcast read, no divergence between threads)
// and, for each nonzero input, reads its code from the packed row k (consecutive threads
// read consecutive bytes: coalesced). Binary x: integer sums, scale once per group.
#include <cuda_runtime.h>

#include "sparsesnn/pack.h"
#include "sparsesnn/packed_linear.h"

namespace sparsesnn {
namespace {

constexpr int kThreads = 256;

template <int BITS>
__global__ void packed_linear_kernel(PackedLinearParams p, bool spike, const float* __restrict__ x,
                                     const void* __restrict__ weights, const float* __restrict__ scale,
                                     const float* __restrict__ bias, float* __restrict__ y) {
  const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t m = blockIdx.y;
  if (n >= p.N) return;
  const int64_t K = p.K, N = p.N;
  const float* xr = x + m * K;
  float out;
  if constexpr (BITS == 32) {
    const float* wt = static_cast<const float*>(weights);
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const float xv = xr[k];
      if (xv != 0.0f) acc += spike ? wt[k * N + n] : xv * wt[k * N + n];
    }
    out = acc;
  } else {
    constexpr int P = 8 / BITS;
    constexpr unsigned M = (1u << BITS) - 1u;
    const int mul = BITS == 1 ? 2 : 1, off = BITS == 1 ? 1 : (1 << (BITS - 1));
    const uint8_t* w = static_cast<const uint8_t*>(weights) + n / P;
    const int shift = static_cast<int>(n % P) * BITS;
    const int64_t rb = (N * BITS + 7) / 8;
    const int64_t glen = (p.group_size <= 0 || p.group_size >= K) ? (K > 0 ? K : 1) : p.group_size;
    const int64_t G = (K + glen - 1) / glen;
    out = 0.0f;
    for (int64_t g = 0; g < G; ++g) {
      int32_t iacc = 0, cnt = 0;
      float facc = 0.0f, xs = 0.0f;
      const int64_t k1 = min(K, (g + 1) * glen);
      for (int64_t k = g * glen; k < k1; ++k) {
        const float xv = xr[k];
        if (xv == 0.0f) continue;
        const unsigned u = (w[k * rb] >> shift) & M;
        if (spike) {
          iacc += static_cast<int32_t>(u);
          ++cnt;
        } else {
          facc += xv * static_cast<float>(u);
          xs += xv;
        }
      }
      const float codes = spike ? static_cast<float>(mul * iacc - off * cnt)
                                : static_cast<float>(mul) * facc - static_cast<float>(off) * xs;
      out += scale[n * G + g] * codes;
    }
  }
  y[m * N + n] = out + (bias ? bias[n] : 0.0f);
}

}  // namespace

void packed_linear_cuda(const PackedLinearParams& p, bool spike, const float* x,
                        const void* weights, const float* scale, const float* bias, float* y,
                        void* stream) {
  if (p.M == 0 || p.N == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>((p.N + kThreads - 1) / kThreads), static_cast<unsigned>(p.M));
  switch (p.bits) {
    case 8: packed_linear_kernel<8><<<grid, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    case 4: packed_linear_kernel<4><<<grid, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    case 2: packed_linear_kernel<2><<<grid, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    case 1: packed_linear_kernel<1><<<grid, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    default: packed_linear_kernel<32><<<grid, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
  }
}

}  // namespace sparsesnn
