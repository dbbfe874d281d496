// Packed-weight conv2d on CUDA: one thread per output element (image, o, oy, ox), ox fastest,
// so a warp reads neighbouring input pixels (coalesced) and one packed byte (broadcast). The
// taps run in row order r = (c, ky, kx), so scale groups (ranges of r) fold as they end.
// Binary input: integer sums of codes; analog: fp32 sums of x * code. In spike mode an input
// other than 0/1 still goes to the fp32 lanes, so unchecked analog input is summed correctly.
#include <cuda_runtime.h>

#include "launch.cuh"
#include "sparsesnn/pack.h"
#include "sparsesnn/packed_conv2d.h"

namespace sparsesnn {
namespace {

constexpr int kThreads = 256;

// out + scale * (codes of the group), rounded step by step: nvcc would otherwise contract it
// into an FMA and differ from the CPU kernel by an ulp when there are several groups.
template <bool F32>
__device__ __forceinline__ float fold(float out, float scale, int mul, int off, int32_t iacc,
                                      int32_t cnt, float facc, float xs) {
  if (F32) return __fadd_rn(out, facc);
  float codes = static_cast<float>(mul * iacc - off * cnt);
  if (facc != 0.0f || xs != 0.0f)
    codes = __fadd_rn(codes, __fsub_rn(__fmul_rn(static_cast<float>(mul), facc),
                                       __fmul_rn(static_cast<float>(off), xs)));
  return __fadd_rn(out, __fmul_rn(scale, codes));
}

template <int BITS>
__global__ void packed_conv2d_kernel(PackedConv2dParams p, bool spike, const float* __restrict__ x,
                                     const void* __restrict__ weights, const float* __restrict__ scale,
                                     const float* __restrict__ bias, float* __restrict__ y) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t total = p.NB * p.O * p.OH * p.OW;
  if (i >= total) return;
  const int64_t ox = i % p.OW, oy = (i / p.OW) % p.OH, o = (i / (p.OW * p.OH)) % p.O;
  const int64_t b = i / (p.OW * p.OH * p.O);
  const int64_t KK = p.C * p.KH * p.KW;
  const float* xb = x + b * p.C * p.H * p.W;
  constexpr bool F32 = BITS == 32;
  constexpr int P = F32 ? 1 : 8 / BITS;
  const int64_t rb = F32 ? p.O : (p.O * BITS + 7) / 8;
  const int64_t glen = F32 || p.group_size <= 0 || p.group_size >= KK ? KK : p.group_size;
  const int64_t G = (KK + glen - 1) / glen;
  const int mul = BITS == 1 ? 2 : 1, off = F32 ? 0 : (BITS == 1 ? 1 : (1 << ((F32 ? 2 : BITS) - 1)));
  const int shift = F32 ? 0 : static_cast<int>(o % P) * (F32 ? 0 : BITS);
  float out = 0.0f;
  int32_t iacc = 0, cnt = 0;
  float facc = 0.0f, xs = 0.0f;
  int64_t g = 0;
  for (int64_t r = 0; r < KK; ++r) {
    if (r / glen != g) {  // group g ends: fold it
      out = fold<F32>(out, F32 ? 1.0f : scale[o * G + g], mul, off, iacc, cnt, facc, xs);
      iacc = cnt = 0;
      facc = xs = 0.0f;
      g = r / glen;
    }
    const int64_t kx = r % p.KW, ky = (r / p.KW) % p.KH, c = r / (p.KW * p.KH);
    const int64_t iy = oy * p.sh - p.ph + ky * p.dh, ix = ox * p.sw - p.pw + kx * p.dw;
    if (iy < 0 || iy >= p.H || ix < 0 || ix >= p.W) continue;
    const float xv = xb[(c * p.H + iy) * p.W + ix];
    if (xv == 0.0f) continue;
    if constexpr (F32) {
      const float wv = static_cast<const float*>(weights)[r * rb + o];
      facc = __fadd_rn(facc, __fmul_rn(xv, wv));  // exact product for x == 1
    } else {
      const unsigned u = (static_cast<const uint8_t*>(weights)[r * rb + o / P] >> shift) & ((1u << BITS) - 1u);
      if (spike && xv == 1.0f) {
        iacc += static_cast<int32_t>(u);
        ++cnt;
      } else {
        facc = __fadd_rn(facc, __fmul_rn(xv, static_cast<float>(u)));
        xs = __fadd_rn(xs, xv);
      }
    }
  }
  out = fold<F32>(out, F32 ? 1.0f : scale[o * G + g], mul, off, iacc, cnt, facc, xs);
  y[i] = __fadd_rn(out, bias ? bias[o] : 0.0f);
}

}  // namespace

void packed_conv2d_cuda(const PackedConv2dParams& p, bool spike, const float* x,
                        const void* weights, const float* scale, const float* bias, float* y,
                        int device, void* stream) {
  const int64_t total = p.NB * p.O * p.OH * p.OW;
  if (total == 0) return;
  DeviceGuard guard(device, "packed_conv2d");
  const auto s = static_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>((total + kThreads - 1) / kThreads);
  switch (p.bits) {
    case 8: packed_conv2d_kernel<8><<<blocks, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    case 4: packed_conv2d_kernel<4><<<blocks, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    case 2: packed_conv2d_kernel<2><<<blocks, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    case 1: packed_conv2d_kernel<1><<<blocks, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
    default: packed_conv2d_kernel<32><<<blocks, kThreads, 0, s>>>(p, spike, x, weights, scale, bias, y); break;
  }
  check_launch("packed_conv2d");
}

}  // namespace sparsesnn
