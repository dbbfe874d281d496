// Packed-weight linear on CUDA: one thread per output neuron n of one input row m. Every
// thread of a block walks the same x row (a broadcast read, no divergence between threads)
// and, for each nonzero input, reads its code from the packed row k (consecutive threads
// read consecutive bytes: coalesced). Binary x: integer sums, scale once per group.
// Blocks loop over rows (grid.y is capped at 65535; M = T x B x ... is often larger).
#include <cuda_runtime.h>

#include <algorithm>

#include "launch.cuh"
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
  if (n >= p.N) return;
  const int64_t K = p.K, N = p.N;
  for (int64_t m = blockIdx.y; m < p.M; m += gridDim.y) {
    const float* xr = x + m * K;
    float out;
    if constexpr (BITS == 32) {
      const float* wt = static_cast<const float*>(weights);
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const float xv = xr[k];
        // x * w is exact for x == 1, so binary input gives the same sum as adding w.
        if (xv != 0.0f) acc = __fadd_rn(acc, __fmul_rn(xv, wt[k * N + n]));
      }
      out = acc;
    } else {
      constexpr int P = 8 / BITS;
      constexpr unsigned MASK = (1u << BITS) - 1u;
      const int mul = BITS == 1 ? 2 : 1, off = BITS == 1 ? 1 : (1 << (BITS - 1));
      const uint8_t* w = static_cast<const uint8_t*>(weights) + n / P;
      const int shift = static_cast<int>(n % P) * BITS;
      const int64_t rb = (N * BITS + 7) / 8;
      const int64_t glen = (p.group_size <= 0 || p.group_size >= K) ? (K > 0 ? K : 1) : p.group_size;
      const int64_t G = (K + glen - 1) / glen;
      out = 0.0f;
      for (int64_t g = 0; g < G; ++g) {
        // Inputs equal to 1 go to the integer lanes (exact); in spike mode any other nonzero
        // value goes to the fp32 lanes, so unchecked analog input is still summed correctly.
        int32_t iacc = 0, cnt = 0;
        float facc = 0.0f, xs = 0.0f;
        const int64_t k1 = min(K, (g + 1) * glen);
        for (int64_t k = g * glen; k < k1; ++k) {
          const float xv = xr[k];
          if (xv == 0.0f) continue;
          const unsigned u = (w[k * rb] >> shift) & MASK;
          if (spike && xv == 1.0f) {
            iacc += static_cast<int32_t>(u);
            ++cnt;
          } else {
            facc = __fadd_rn(facc, __fmul_rn(xv, static_cast<float>(u)));
            xs = __fadd_rn(xs, xv);
          }
        }
        float codes = static_cast<float>(mul * iacc - off * cnt);
        if (!spike || facc != 0.0f || xs != 0.0f)
          codes = __fadd_rn(codes, __fsub_rn(__fmul_rn(static_cast<float>(mul), facc),
                                             __fmul_rn(static_cast<float>(off), xs)));
        // Spelled-out rounding: nvcc would contract this into an FMA, one ulp away from the
        // CPU kernel (built without contraction of this step) when there are several groups.
        out = __fadd_rn(out, __fmul_rn(scale[n * G + g], codes));
      }
    }
    y[m * N + n] = __fadd_rn(out, bias ? bias[n] : 0.0f);
  }
}

}  // namespace

void packed_linear_cuda(const PackedLinearParams& p, bool spike, const float* x,
                        const void* weights, const float* scale, const float* bias, float* y,
                        int device, void* stream) {
  if (p.M == 0 || p.N == 0) return;
  DeviceGuard guard(device, "packed_linear");
  const auto s = static_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>((p.N + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min<int64_t>(p.M, kMaxGridY)));
  switch (p.bits) {
    case 8: packed_linear_kernel<8><<<grid, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    case 4: packed_linear_kernel<4><<<grid, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    case 2: packed_linear_kernel<2><<<grid, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    case 1: packed_linear_kernel<1><<<grid, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    default: packed_linear_kernel<32><<<grid, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
  }
  check_launch("packed_linear");
}

}  // namespace sparsesnn
