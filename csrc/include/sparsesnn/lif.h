// Fused multi-step LIF / IF / PLIF neuron: all T steps of a neuron in one pass.
//
// Layout: x, spikes, h are [T, N] contiguous (time-major); v0, v_last are [N].
// Semantics (SpikingJelly-compatible, see DESIGN.md), with d = decay:
//   leak, decay_input:    H = V + (X - (V - Vr)) * d
//   leak, !decay_input:   H = V - (V - Vr) * d + X
//   no leak (IF):         H = V + X
//   S = H >= Vth;  hard: V = S ? Vr : H;  soft: V = H - Vth * S   (soft uses Vr = 0)
// With a fixed-point state (state_step > 0) H is quantized before firing; the backward pass
// treats that rounding as identity (straight-through).
#pragma once
#include <cstdint>
#include "sparsesnn/common.h"

namespace sparsesnn {

struct LifParams {
  int64_t T = 0;           // timesteps
  int64_t N = 0;           // neurons (product of the trailing shape)
  float decay = 0.5f;      // 1 / tau (LIF) or sigmoid(w) (PLIF); ignored when !leak
  float v_threshold = 1.0f;
  float v_reset = 0.0f;    // used only when hard_reset
  bool hard_reset = true;
  bool decay_input = true;
  bool leak = true;        // false: IF neuron
  bool detach_reset = false;
  int surrogate = kSigmoid;
  float alpha = 4.0f;
  int threads = 1;         // CPU threads to use (caller passes torch.get_num_threads())
  // Fixed-point membrane state (tinySNN-style): when state_step > 0, H is put on the grid
  // state_step * k, k integer, clamped to [state_min, state_max], right after charging.
  float state_step = 0.0f;
  float state_min = 0.0f;
  float state_max = 0.0f;
  int state_rounding = 0;  // 0 nearest (half away from zero), 1 truncate (toward zero), 2 stochastic
  uint32_t seed = 0;       // stochastic rounding: u = hash(seed, t * N + n) in [0, 1)
  // CPU backward only: floats between consecutive rows of grad_spikes. -1 means N (a [T, N]
  // gradient); 0 means one [N] row used at every step (the gradient of a sum or mean over T,
  // which autograd hands over as a broadcast: no [T, N] copy of it is made).
  int64_t grad_t_stride = -1;
};

// Forward. v0 may be null (then V starts at Vr for hard reset, 0 for soft). Nothing is
// saved for backward: the CPU backward recomputes H from x.
void lif_forward_cpu(const LifParams& p, const float* x, const float* v0, float* spikes,
                     float* v_last);

// Backward from the forward's input x (H is recomputed, bit-identical to forward).
// grad_spikes is [T, N] (or one [N] row when p.grad_t_stride == 0); grad_v_last may be null (zero). grad_v0 may be null. grad_decay
// (PLIF) may be null; else receives sum dL/dd.
void lif_backward_cpu(const LifParams& p, const float* grad_spikes, const float* grad_v_last,
                      const float* x, const float* v0, float* grad_x, float* grad_v0,
                      double* grad_decay);

#if defined(SPARSESNN_WITH_CUDA)
// CUDA versions (backward reads a saved H rather than recomputing it): x / spikes / grad tensors
// in `dtype` (fp32, fp16, bf16); h, v0, v_last and grad_v0 stay fp32 so the recurrence and the
// saved state are exact. decay_dev: PLIF's decay as a device float (read by the kernel, so no
// host synchronisation), or null to use p.decay. grad_decay (device float, may be null) is
// written, not accumulated: a per-block partial in `work` (lif_cuda_work_doubles(N) doubles),
// then a fixed-order sum, so it is deterministic; zero for IF (!leak). Every CUDA entry point
// runs on `device` (restoring the current device after) and throws std::runtime_error when a
// launch fails. stream is a cudaStream_t.
int64_t lif_cuda_work_doubles(int64_t N);
void lif_forward_cuda(const LifParams& p, int dtype, const float* decay_dev, const void* x,
                      const float* v0, void* spikes, float* v_last, float* h_out, int device,
                      void* stream);
void lif_backward_cuda(const LifParams& p, int dtype, const float* decay_dev, const void* grad_spikes,
                       const float* grad_v_last, const float* h, const float* v0, void* grad_x,
                       float* grad_v0, float* grad_decay, double* work, int device, void* stream);
// Always fails (an invalid launch) and throws: tests check the error path with it.
void cuda_launch_error_selftest(int device);
#endif

}  // namespace sparsesnn
