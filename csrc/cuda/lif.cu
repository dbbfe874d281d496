// Fused multi-step LIF forward/backward on CUDA: one thread per neuron walks all T steps,
// so x is read once, spikes and H written once, and the state never leaves registers.
#include <cuda_runtime.h>

#include "dtype.cuh"
#include "launch.cuh"
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

// decay_dev: PLIF's decay read on the device (no host read of a device tensor); else p.decay.
template <typename T>
__global__ void forward_kernel(LifParams p, int mode, const float* __restrict__ decay_dev,
                               const T* __restrict__ x, const float* __restrict__ v0,
                               T* __restrict__ spikes, float* __restrict__ v_last,
                               float* __restrict__ h_out) {
  const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (n >= p.N) return;
  const float d = decay_dev ? *decay_dev : p.decay, vth = p.v_threshold, vr = p.hard_reset ? p.v_reset : 0.0f;
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

// gdecay_part: one partial sum of dL/d(decay) per block (null: not wanted), summed by
// finish_decay in a fixed order: deterministic, unlike fp32 atomics, and in double as on CPU.
template <typename T>
__global__ void backward_kernel(LifParams p, int mode, const float* __restrict__ decay_dev,
                                const T* __restrict__ gs, const float* __restrict__ gv_last,
                                const float* __restrict__ h, const float* __restrict__ v0,
                                T* __restrict__ gx, float* __restrict__ gv0,
                                double* __restrict__ gdecay_part) {
  const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const bool active = n < p.N;
  const float d = decay_dev ? *decay_dev : p.decay, vth = p.v_threshold, vr = p.hard_reset ? p.v_reset : 0.0f;
  const float dh_dv = mode == 2 ? 1.0f : 1.0f - d;
  const float dh_dx = mode == 0 ? d : 1.0f;
  float gv = active && gv_last ? gv_last[n] : 0.0f;
  double acc = 0.0;
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
    if (gdecay_part) {  // never for IF (mode 2): H does not depend on decay there
      float vprev;
      if (t > 0) {
        const float hp = h[i - p.N];
        const float sp = hp >= vth ? 1.0f : 0.0f;
        vprev = p.hard_reset ? (sp != 0.0f ? vr : hp) : hp - vth * sp;
      } else {
        vprev = v0 ? v0[n] : vr;
      }
      acc += static_cast<double>(gh * (mode == 0 ? (hh - vprev) / d : -(vprev - vr)));
    }
  }
  if (active && gv0) gv0[n] = gv;
  if (gdecay_part) {
    acc = block_sum(acc);
    if (threadIdx.x == 0) gdecay_part[blockIdx.x] = acc;
  }
}

// One block sums the per-block partials in a fixed order and writes the fp32 result.
__global__ void finish_decay(const double* __restrict__ part, int64_t n, float* __restrict__ out) {
  double v = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += part[i];
  v = block_sum(v);
  if (threadIdx.x == 0) *out = static_cast<float>(v);
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

int64_t lif_cuda_work_doubles(int64_t N) { return N > 0 ? static_cast<int64_t>(blocks_for(N)) : 0; }

void lif_forward_cuda(const LifParams& p, int dtype, const float* decay_dev, const void* x,
                      const float* v0, void* spikes, float* v_last, float* h_out, int device,
                      void* stream) {
  if (p.N == 0) return;
  DeviceGuard guard(device, "lif");
  const auto s = static_cast<cudaStream_t>(stream);
  const int mode = charge_mode(p);
  const float* dd = p.leak ? decay_dev : nullptr;
  switch (dtype) {
    case kFloat16:
      forward_kernel<__half><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, dd, static_cast<const __half*>(x), v0, static_cast<__half*>(spikes), v_last, h_out);
      break;
    case kBFloat16:
      forward_kernel<__nv_bfloat16><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, dd, static_cast<const __nv_bfloat16*>(x), v0, static_cast<__nv_bfloat16*>(spikes),
          v_last, h_out);
      break;
    default:
      forward_kernel<float><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, dd, static_cast<const float*>(x), v0, static_cast<float*>(spikes), v_last, h_out);
  }
  check_launch("lif");
}

void lif_backward_cuda(const LifParams& p, int dtype, const float* decay_dev, const void* grad_spikes,
                       const float* grad_v_last, const float* h, const float* v0, void* grad_x,
                       float* grad_v0, float* grad_decay, double* work, int device, void* stream) {
  DeviceGuard guard(device, "lif_backward");
  const auto s = static_cast<cudaStream_t>(stream);
  // IF (no leak): H does not depend on decay, so its gradient is exactly zero (as on CPU).
  const bool want_decay = grad_decay != nullptr && p.leak && p.N > 0;
  if (grad_decay && !want_decay) {
    if (cudaError_t err = cudaMemsetAsync(grad_decay, 0, sizeof(float), s); err != cudaSuccess)
      throw_cuda("lif_backward", "cudaMemsetAsync failed", err);
  }
  if (p.N == 0) return;
  const int mode = charge_mode(p);
  const float* dd = p.leak ? decay_dev : nullptr;
  double* part = want_decay ? work : nullptr;
  switch (dtype) {
    case kFloat16:
      backward_kernel<__half><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, dd, static_cast<const __half*>(grad_spikes), grad_v_last, h, v0,
          static_cast<__half*>(grad_x), grad_v0, part);
      break;
    case kBFloat16:
      backward_kernel<__nv_bfloat16><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, dd, static_cast<const __nv_bfloat16*>(grad_spikes), grad_v_last, h, v0,
          static_cast<__nv_bfloat16*>(grad_x), grad_v0, part);
      break;
    default:
      backward_kernel<float><<<blocks_for(p.N), kThreads, 0, s>>>(
          p, mode, dd, static_cast<const float*>(grad_spikes), grad_v_last, h, v0,
          static_cast<float*>(grad_x), grad_v0, part);
  }
  check_launch("lif_backward");
  if (want_decay) {
    finish_decay<<<1, kThreads, 0, s>>>(part, static_cast<int64_t>(blocks_for(p.N)), grad_decay);
    check_launch("lif_backward");
  }
}

}  // namespace sparsesnn
