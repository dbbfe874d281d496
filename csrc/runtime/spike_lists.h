// The plan's compact spike form between a spike producer (encoder, neuron) and an event-driven
// linear layer: per row (one time step of one sample) the ascending list of active inputs.
// The producer writes it once; the consumer reads only the listed weight rows, with no scan of
// a dense spike map and no allocation per call.
#pragma once
#include <cstdint>
#include <vector>

#include "sparsesnn/packed_linear.h"

namespace sparsesnn {
namespace runtime {

struct SpikeLists {
  int64_t rows = 0, K = 0, total = 0;
  std::vector<int32_t> idx;  // row m's active inputs: idx[m*K, m*K + cnt[m])
  std::vector<int32_t> cnt;  // [rows]
  // Nested form (a thermometer encoder: step t's inputs include step t+1's): rows are
  // [steps, B]; row (t, b) lists only the inputs active at t but not at t+1 and active[m]
  // counts all inputs active at t. The consumer sums steps from the last to the first, adding
  // only the new inputs: every input row is read once per sample instead of once per step.
  bool nested = false;
  int64_t steps = 1;
  std::vector<int32_t> active;  // [rows], nested only

  // Room for `rows` rows of K inputs (grows only).
  void reserve(int64_t rows_, int64_t K_);
  // Lists the nonzero entries of each row of x [rows, K].
  void from_dense(const float* x, int64_t rows_, int64_t K_, int threads);
  // Nested lists of s[t, b, k] = x[b, k] > thr[t] for non-decreasing thr [steps] (x [B, K]).
  void thermometer(const float* x, const float* thr, int64_t steps_, int64_t B, int64_t K_);
  const int32_t* row(int64_t m) const { return idx.data() + m * K; }
};

// True when event_linear_lists can run this layer (bits 4 on an AVX-512 build); other layers
// keep the kernels of csrc/cpu.
bool event_linear_lists_supported(const PackedLinearParams& p);

// y [rows, N] = the packed spike linear (packed_linear.h) of the listed spikes: the same integer
// sums and the same fp32 fold (per group: yf += scale * (acc - off * count); y = yf + bias), so
// the result is bit-identical to packed_spike_linear_cpu. p.M must equal s.rows.
void event_linear_lists(const PackedLinearParams& p, const SpikeLists& s, const uint8_t* w,
                        const float* scale, const float* bias, float* y);

}  // namespace runtime
}  // namespace sparsesnn
