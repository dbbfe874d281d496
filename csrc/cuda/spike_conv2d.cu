// Event-driven 2-D convolution of spikes on CUDA, forward and grad_weight.
//
// Forward: one thread per output element (ox fastest, so neighbouring threads read
// neighbouring input pixels); it walks its receptive field and reads a weight only where the
// input spiked. The weight address depends only on (o, c, tap), shared by the warp.
// grad_weight: one block per (input channel, tap); the block walks that channel's pixels
// (a uniform branch per pixel) and, at each spike, its threads add the channels-last
// grad_out row of the output pixel reached (coalesced over output channels).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "launch.cuh"
#include "sparsesnn/spike_conv2d.h"

namespace sparsesnn {
namespace {

constexpr int kThreads = 256;

template <typename S>
__global__ void forward_kernel(SpikeConv2dParams p, const S* __restrict__ s,
                               const float* __restrict__ wr, const float* __restrict__ bias,
                               float* __restrict__ out) {
  const int64_t total = p.N * p.O * p.OH * p.OW;
  const int64_t Cg = p.C / p.groups, Og = p.O / p.groups;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ox = i % p.OW, oy = (i / p.OW) % p.OH, o = (i / (p.OW * p.OH)) % p.O;
    const int64_t n = i / (p.OW * p.OH * p.O);
    const int64_t g = o / Og, ol = o % Og;
    float acc = bias ? bias[o] : 0.0f;
    for (int64_t cl = 0; cl < Cg; ++cl) {
      const S* plane = s + ((n * p.C + g * Cg + cl) * p.H) * p.W;
      for (int64_t ky = 0; ky < p.KH; ++ky) {
        const int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dil_h;
        if (iy < 0 || iy >= p.H) continue;
        for (int64_t kx = 0; kx < p.KW; ++kx) {
          const int64_t ix = ox * p.stride_w - p.pad_left + kx * p.dil_w;
          if (ix < 0 || ix >= p.W) continue;
          if (static_cast<float>(plane[iy * p.W + ix]) != 0.0f)
            acc += wr[(((g * p.KH + ky) * p.KW + kx) * Cg + cl) * Og + ol];
        }
      }
    }
    out[i] = acc;
  }
}

template <typename S>
__global__ void grad_weight_kernel(SpikeConv2dParams p, const S* __restrict__ s,
                                   const float* __restrict__ gcl, float* __restrict__ gw) {
  const int64_t Cg = p.C / p.groups, Og = p.O / p.groups, HW = p.H * p.W;
  const int64_t kx = blockIdx.x % p.KW, ky = (blockIdx.x / p.KW) % p.KH;
  const int64_t c = blockIdx.x / (p.KW * p.KH);
  const int64_t g = c / Cg, cl = c % Cg;
  for (int64_t ol = threadIdx.x; ol < Og; ol += blockDim.x) {
    float acc = 0.0f;
    for (int64_t n = 0; n < p.N; ++n) {
      const S* plane = s + (n * p.C + c) * HW;
      for (int64_t pix = 0; pix < HW; ++pix) {
        if (static_cast<float>(plane[pix]) == 0.0f) continue;  // uniform across the block
        const int64_t ty = pix / p.W + p.pad_top - ky * p.dil_h;
        const int64_t tx = pix % p.W + p.pad_left - kx * p.dil_w;
        if (ty < 0 || tx < 0 || ty % p.stride_h || tx % p.stride_w) continue;
        const int64_t oy = ty / p.stride_h, ox = tx / p.stride_w;
        if (oy >= p.OH || ox >= p.OW) continue;
        acc += gcl[((n * p.OH + oy) * p.OW + ox) * p.O + g * Og + ol];
      }
    }
    gw[((g * Og + ol) * Cg + cl) * p.KH * p.KW + ky * p.KW + kx] = acc;
  }
}

}  // namespace

void spike_conv2d_forward_cuda(const SpikeConv2dParams& p, const void* s, const float* weight_r,
                               const float* bias, float* out, int device, void* stream) {
  const int64_t total = p.N * p.O * p.OH * p.OW;
  if (total == 0) return;
  DeviceGuard guard(device, "spike_conv2d");
  const int blocks = static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20));
  auto st = static_cast<cudaStream_t>(stream);
  if (p.spike_type == 0)
    forward_kernel<float><<<blocks, kThreads, 0, st>>>(p, static_cast<const float*>(s), weight_r, bias, out);
  else
    forward_kernel<uint8_t><<<blocks, kThreads, 0, st>>>(p, static_cast<const uint8_t*>(s), weight_r, bias, out);
  check_launch("spike_conv2d");
}

void spike_conv2d_grad_weight_cuda(const SpikeConv2dParams& p, const void* s,
                                   const float* grad_out_cl, float* grad_weight, int device,
                                   void* stream) {
  const int64_t blocks = p.C * p.KH * p.KW;
  if (blocks == 0 || p.O == 0) return;
  DeviceGuard guard(device, "spike_conv2d_grad_weight");
  const int threads = static_cast<int>(std::min<int64_t>(kThreads, ((p.O / p.groups + 31) / 32) * 32));
  auto st = static_cast<cudaStream_t>(stream);
  if (p.spike_type == 0)
    grad_weight_kernel<float><<<static_cast<unsigned>(blocks), threads, 0, st>>>(
        p, static_cast<const float*>(s), grad_out_cl, grad_weight);
  else
    grad_weight_kernel<uint8_t><<<static_cast<unsigned>(blocks), threads, 0, st>>>(
        p, static_cast<const uint8_t*>(s), grad_out_cl, grad_weight);
  check_launch("spike_conv2d_grad_weight");
}

}  // namespace sparsesnn
