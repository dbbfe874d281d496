// One presentation of one sample to a Diehl & Cook-style excitatory layer with learning on:
// all T steps in one call (LIF charge, adaptive threshold, direct lateral inhibition, traces,
// event-driven STDP through stdp_update_cpu). The Python loop in sparsesnn/stdp/network.py
// (DiehlCookNetwork._learn_reference) is the reference; per step t:
//   drive = sum of rows weight_t[k, :] over active inputs k (ascending k)
//   v = v_reset + (v - v_reset) * decay_v + drive;  s = v >= v_th + theta
//   x_pre = max(x_pre * decay_pre, s_in[t]);  x_post = max(x_post * decay_post, s)
//   if any spike: v = v_reset where s; v = max(v - w_inh * (n_spikes - s), v_min);
//                 theta += theta_plus * s (then rounded onto its grid when theta_step > 0)
//   if any input or output spike: STDP update with seed stdp.seed + t
// CPU only: the steps are sequential and the layer is small (a GPU gains nothing at batch 1).
#pragma once
#include <cstdint>

#include "sparsesnn/stdp_update.h"

namespace sparsesnn {

struct StdpPresentParams {
  int64_t T = 0;
  StdpParams stdp;  // K, N, learning rates, weight grid, seed base
  float decay_v = 0.f, decay_pre = 0.f, decay_post = 0.f;
  float v_th = 1.f, v_reset = 0.f, v_min = 0.f, theta_plus = 0.f, w_inh = 0.f;
  float theta_step = 0.f;  // 0: fp32 thresholds
  float theta_lo = 0.f, theta_hi = 0.f;
  int theta_rounding = 0;
  uint32_t theta_seed = 0;
  int64_t theta_offset = 0;  // stochastic index of step t: theta_offset + t ... (see .cpp)
};

struct StdpPresentStats {
  int64_t input_spikes = 0, output_spikes = 0, stdp_updates = 0;
};

// weight_t [K, N] and theta [N] updated in place; s_in [T, K] fp32 0/1; counts [N] written.
StdpPresentStats stdp_present_cpu(const StdpPresentParams& p, float* weight_t, float* theta,
                                  const float* s_in, float* counts);

}  // namespace sparsesnn
