// Event-driven spike x weight on CUDA, forward and grad_weight.
//
// Forward: a block owns one row m and blockDim.x output columns. It walks the row's spikes in
// chunks of blockDim.x, compacts the active inputs of each chunk into shared memory (ballot +
// warp prefix, order preserved so results are deterministic), and every thread adds the
// weight_t rows of those inputs at its column: coalesced reads of only the active rows.
// grad_weight: a block owns 32 inputs x blockDim.x columns; per row m it builds a 32-bit mask
// of which of its inputs fired, skips rows with no event, and adds grad_out[m, n] to the
// accumulators of the inputs that fired.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "launch.cuh"
#include "sparsesnn/spike_linear.h"

namespace sparsesnn {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename S>
__global__ void forward_kernel(SpikeLinearParams p, const S* __restrict__ s,
                               const float* __restrict__ wt, const float* __restrict__ bias,
                               float* __restrict__ out) {
  __shared__ int32_t list[kThreads];
  __shared__ int warp_count[kWarps];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + tid;
  const bool col = n < p.N;
  for (int64_t m = blockIdx.y; m < p.M; m += gridDim.y) {
    const S* row = s + m * p.K;
    float acc = (col && bias) ? bias[n] : 0.0f;
    for (int64_t k0 = 0; k0 < p.K; k0 += kThreads) {
      const int64_t k = k0 + tid;
      const bool active = k < p.K && static_cast<float>(row[k]) != 0.0f;
      const unsigned ballot = __ballot_sync(0xffffffffu, active);
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int offset = 0, total = 0;
      for (int w = 0; w < kWarps; ++w) {
        offset += w < warp ? warp_count[w] : 0;
        total += warp_count[w];
      }
      if (active) list[offset + __popc(ballot & ((1u << lane) - 1u))] = static_cast<int32_t>(k);
      __syncthreads();
      if (col)
        for (int i = 0; i < total; ++i) acc += wt[static_cast<int64_t>(list[i]) * p.N + n];
      __syncthreads();
    }
    if (col) out[m * p.N + n] = acc;
  }
}

constexpr int kKB = 32;  // inputs per grad_weight block (one bit each in a row mask)

template <typename S>
__global__ void grad_weight_kernel(SpikeLinearParams p, const S* __restrict__ s,
                                   const float* __restrict__ gout, float* __restrict__ gw) {
  __shared__ unsigned masks[kThreads];
  const int tid = threadIdx.x;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + tid;
  const bool col = n < p.N;
  for (int64_t kb = blockIdx.y; kb * kKB < p.K; kb += gridDim.y) {
    const int64_t k0 = kb * kKB;
    const int nk = static_cast<int>(min(static_cast<int64_t>(kKB), p.K - k0));
    float acc[kKB];
#pragma unroll
    for (int j = 0; j < kKB; ++j) acc[j] = 0.0f;
    for (int64_t m0 = 0; m0 < p.M; m0 += kThreads) {
      const int64_t m = m0 + tid;
      unsigned mask = 0;
      if (m < p.M) {
        const S* row = s + m * p.K + k0;
        for (int j = 0; j < nk; ++j) mask |= (static_cast<float>(row[j]) != 0.0f ? 1u : 0u) << j;
      }
      masks[tid] = mask;
      __syncthreads();
      const int rows = static_cast<int>(min(static_cast<int64_t>(kThreads), p.M - m0));
      for (int r = 0; r < rows; ++r) {
        const unsigned mk = masks[r];  // same for the whole block: no divergence
        if (mk == 0u || !col) continue;
        const float g = gout[(m0 + r) * p.N + n];
#pragma unroll
        for (int j = 0; j < kKB; ++j)
          if (mk & (1u << j)) acc[j] += g;
      }
      __syncthreads();
    }
    if (col) {
#pragma unroll
      for (int j = 0; j < kKB; ++j)
        if (j < nk) gw[n * p.K + k0 + j] = acc[j];
    }
  }
}

dim3 grid_for(int64_t tiles, int64_t rows) {
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, tiles)),
              static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(rows, kMaxGridY))));
}

}  // namespace

void spike_linear_forward_cuda(const SpikeLinearParams& p, const void* s, const float* weight_t,
                               const float* bias, float* out, int device, void* stream) {
  if (p.M == 0 || p.N == 0) return;
  DeviceGuard guard(device, "spike_linear");
  const dim3 grid = grid_for((p.N + kThreads - 1) / kThreads, p.M);
  auto st = static_cast<cudaStream_t>(stream);
  if (p.spike_type == 0)
    forward_kernel<float><<<grid, kThreads, 0, st>>>(p, static_cast<const float*>(s), weight_t, bias, out);
  else
    forward_kernel<uint8_t><<<grid, kThreads, 0, st>>>(p, static_cast<const uint8_t*>(s), weight_t, bias, out);
  check_launch("spike_linear");
}

void spike_linear_grad_weight_cuda(const SpikeLinearParams& p, const void* s,
                                   const float* grad_out, float* grad_weight, int device,
                                   void* stream) {
  if (p.K == 0 || p.N == 0) return;
  DeviceGuard guard(device, "spike_linear_grad_weight");
  const dim3 grid = grid_for((p.N + kThreads - 1) / kThreads, (p.K + kKB - 1) / kKB);
  auto st = static_cast<cudaStream_t>(stream);
  if (p.spike_type == 0)
    grad_weight_kernel<float><<<grid, kThreads, 0, st>>>(p, static_cast<const float*>(s), grad_out, grad_weight);
  else
    grad_weight_kernel<uint8_t><<<grid, kThreads, 0, st>>>(p, static_cast<const uint8_t*>(s), grad_out, grad_weight);
  check_launch("spike_linear_grad_weight");
}

}  // namespace sparsesnn
