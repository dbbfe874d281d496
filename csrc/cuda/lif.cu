// Fused multi-step LIF forward/backward on CUDA: one thread per neuron walks all T steps,
// so x is read once, spikes and H written once, and the state never leaves registers.
#include <cuda_runtime.h>

#include <cstdio>

#include "dtype.cuh"
#include "sparsesnn/fixed_point.h"
#include "sparsesnn/lif.h"
#include "sparsesnn/surrogate.h"

namespace sparsesnn {
namespace {

constexpr int kThreads = 256;

// Same operation order as the CPU kernel and the reference; __fmul_rn/__fadd_rn stop the
// compiler from contracting into FMAs so spikes match bit for bit.
__device__ __forceinline__ float charge(int mode, float v, float x, float d, float vr) {
  if (mode == 0) return __fadd_rn(v, __fmul_rn(__fsub_rn(x, __fsub_rn(v, vr)), d));
  if (mode == 1) return __fadd_rn(__fsub_rn(v, __fmul_rn(__fsub_rn(v, vr), d)), x);
  return __fadd_rn(v, x);
}

__host__ int charge_mode(const LifParams& p) { return !p.leak ? 2 : (p.decay_input ? 0 : 1); }

template <typename T>
__global__ void forward_kernel(LifParams p, int mode, const T* __restrict__ x,
                               const float* __restrict__ v0, T* __restrict__ spikes,
                               float* __restrict__ v_last, float* __restrict__ h_out) {
  const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (n >= p.N) return;
  const float d = p.decay, vth = p.v_threshold, vr = p.hard_reset ? p.v_reset : 0.0f;
  float v = v0 ? v0[n] : vr;
  for (int64_t t = 0; t < p.T; ++t) {
    const int64_t i = t * p.N + n;
    float h = charge(mode, v, to_float(x[i]), d, vr);
    if (p.state_step > 0.0f) {
      const float u = p.state_rounding == kStochastic ? hash_uniform(p.seed, static_cast<uint64_t>(i)) : 0.0f;
      h = round_to_grid(h, p.state_step, p.state_min, p.state_max, p.state_rounding, u);
    }
    const float s = h >= vth ? 1.0f : 0.0f;
    spikes[i] = from_float<T>(s);
    if (h_out) h_out[i] = h;
    v = p.hard_reset ? (s != 0.0f ? vr : h) : __fsub_rn(h, __fmul_rn(vth, s));
  }
  v_last[n] = v;
}

template <typename T>
__global__ void backward_kernel(LifParams p, int mode, const T* __restrict__ gs,
                                const float* __restrict__ gv_last, const float* __restrict__ h,
                                const float* __restrict__ v0, T* __restrict__ gx,
                                float* __restrict__ gv0, float* __restrict__ gdecay) {
  const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const bool active = n < p.N;
  const float d = p.decay, vth = p.v_threshold, vr = p.hard_reset ? p.v_reset : 0.0f;
  const float dh_dv = mode == 2 ? 1.0f : 1.0f - d;
  const float dh_dx = mode == 0 ? d : 1.0f;
  float gv = active && gv_last ? gv_last[n] : 0.0f;
  float acc = 0.0f;
  for (int64_t t = p.T - 1; active && t >= 0; --t) {
    const int64_t i = t * p.N + n;
    const float hh = h[i];
    const float s = hh >= vth ? 1.0f : 0.0f;
    const float g = surrogate_grad(p.surrogate, hh - vth, p.alpha);
    const float dv_dh = p.hard_reset ? (p.detach_reset ? 1.0f - s : 1.0f - s + (vr - hh) * g)
                                     : (p.detach_reset ? 1.0f : 1.0f - vth * g);
    const float gh = to_float(gs[i]) * g + gv * dv_dh;
    gx[i] = from_float<T>(gh * dh_dx);
    gv = gh * dh_dv;
    if (gdecay) {
      float vprev;
      if (t > 0) {
        const float hp = h[i - p.N];
        const float sp = hp >= vth ? 1.0f : 0.0f;
        vprev = p.hard_reset ? (sp != 0.0f ? vr : hp) : hp - vth * sp;
      } else {
        vprev = v0 ? v0[n] : vr;
      }
      acc += gh * (mode == 0 ? (hh - vprev) / d : -(vprev - vr));
    }
  }
  if (active && gv0) gv0[n] = gv;
  if (gdecay) block_atomic_add(acc, gdecay);
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) std::fprintf(stderr, "sparsesnn: %s failed: %s\n", what, cudaGetErrorString(err));
}

}  // namespace

void lif_forward_cuda(const LifParams& p, int dtype, const void* x, const float* v0,
                      void* spikes, float* v_last, float* h_out, void* stream) {
  if (p.N == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  const int mode = charge_mode(p);
  switch (dtype) {
    case kFloat16:
      forward_kernel<__half><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, static_cast<const __half*>(x), v0, static_cast<__half*>(spikes), v_last, h_out);
      break;
    case kBFloat16:
      forward_kernel<__nv_bfloat16><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, static_cast<const __nv_bfloat16*>(x), v0, static_cast<__nv_bfloat16*>(spikes),
          v_last, h_out);
      break;
    default:
      forward_kernel<float><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, static_cast<const float*>(x), v0, static_cast<float*>(spikes), v_last, h_out);
  }
  check_launch("lif_forward_cuda");
}

void lif_backward_cuda(const LifParams& p, int dtype, const void* grad_spikes,
                       const float* grad_v_last, const float* h, const float* v0, void* grad_x,
                       float* grad_v0, float* grad_decay, void* stream) {
  if (p.N == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  const int mode = charge_mode(p);
  switch (dtype) {
    case kFloat16:
      backward_kernel<__half><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, static_cast<const __half*>(grad_spikes), grad_v_last, h, v0,
          static_cast<__half*>(grad_x), grad_v0, grad_decay);
      break;
    case kBFloat16:
      backward_kernel<__nv_bfloat16><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, static_cast<const __nv_bfloat16*>(grad_spikes), grad_v_last, h, v0,
          static_cast<__nv_bfloat16*>(grad_x), grad_v0, grad_decay);
      break;
    default:
      backward_kernel<float><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, static_cast<const float*>(grad_spikes), grad_v_last, h, v0,
          static_cast<float*>(grad_x), grad_v0, grad_decay);
  }
  check_launch("lif_backward_cuda");
}

}  // namespace sparsesnn
