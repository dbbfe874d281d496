// Event-driven pair STDP with traces, in place on an input-major weight (tinySNN / Diehl & Cook).
//
// weight_t [K, N] (pre x post, contiguous fp32) is updated in two phases, each followed by
// clamping to [w_min, w_max] and, when step > 0, rounding onto the grid step * k:
//   1. depression, every active pre i (row i, contiguous):  w[i, :] -= eta_pre  * x_post[:]
//   2. potentiation, every active post j (column j):        w[:, j] += eta_post * x_pre[:]
// Only rows of active inputs and columns of active outputs are touched, so the work is
// (#pre spikes) * N + K * (#post spikes). Spikes are fp32 0/1 (any non-zero is a spike); the
// traces are the caller's (already decayed and incremented for this step).
// Stochastic rounding draws u = hash_uniform(seed, index) with index = i * N + j in phase 1 and
// K * N + i * N + j in phase 2 (sparsesnn/stdp/reference.py does the same arithmetic).
#pragma once
#include <cstdint>

namespace sparsesnn {

struct StdpParams {
  int64_t K = 0;         // presynaptic neurons (rows of weight_t)
  int64_t N = 0;         // postsynaptic neurons (columns)
  float eta_pre = 0.f;   // depression rate (on a pre spike, times the post trace)
  float eta_post = 0.f;  // potentiation rate (on a post spike, times the pre trace)
  float w_min = 0.f;
  float w_max = 1.f;
  float step = 0.f;      // grid step of the stored weights; 0: fp32, no rounding
  int rounding = 0;      // Rounding (fixed_point.h): 0 nearest, 1 truncate, 2 stochastic
  uint32_t seed = 0;     // stochastic rounding stream (change it every call)
  int threads = 1;
};

// Returns the number of synapse updates performed (phase 1 + phase 2).
int64_t stdp_update_cpu(const StdpParams& p, float* weight_t, const float* pre, const float* post,
                        const float* x_pre, const float* x_post);

#if defined(SPARSESNN_WITH_CUDA)
// Same update on the GPU (all pointers on `device`, stream a cudaStream_t). Launch failures throw.
void stdp_update_cuda(const StdpParams& p, float* weight_t, const float* pre, const float* post,
                      const float* x_pre, const float* x_post, int device, void* stream);
#endif

}  // namespace sparsesnn
