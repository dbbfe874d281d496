// Shared by the CPU LIF forward (lif.cpp) and backward (lif_backward.cpp).
#pragma once
#include <algorithm>
#include <cstdint>

#include "sparsesnn/cache_info.h"
#include "sparsesnn/lif.h"
#include "stream_store.h"

namespace sparsesnn {
namespace lif_cpu {

// Most neurons per chunk (the state arrays live on the stack): long unit-stride runs per
// timestep keep the hardware prefetchers busy (measured: 512 -> 55% of copy bandwidth, 8192
// -> 80-90%).
constexpr int64_t kChunk = 8192;

// Forward neurons per chunk on this CPU: kChunk where the chunk's state (4 bytes a neuron)
// stays under 1/32 of L2 beside the streamed rows, fewer on a small L2; a multiple of 16.
inline int64_t forward_chunk_size() {
  static const int64_t chunk =
      std::clamp<int64_t>(cache_sizes().l2 / 32 / int64_t(sizeof(float)) / 16 * 16, 1024, kChunk);
  return chunk;
}
// Rows are processed in blocks of this many floats: the unit of prefetching and of staging
// streamed outputs in L1.
constexpr int64_t kBlock = 512;

enum Charge : int { kDecayInput = 0, kNoDecayInput = 1, kNoLeak = 2 };

inline int charge_of(const LifParams& p) {
  if (!p.leak) return kNoLeak;
  return p.decay_input ? kDecayInput : kNoDecayInput;
}

// V[t] after the spike decision.
template <bool HARD>
inline float after_spike(float h, float s, float vth, float vr) {
  if constexpr (HARD) return s != 0.0f ? vr : h;
  return h - vth * s;
}

// Prefetch the block of the row a loop reads next: each timestep reads only a short run of
// a row, too short for the hardware prefetcher to lock on before the run ends.
inline void prefetch_block(const float* row, int64_t len) {
  for (int64_t i = 0; i < len; i += 64 / int64_t(sizeof(float))) __builtin_prefetch(row + i, 0, 3);
}

// Whether [T, N] outputs are big enough to write with streaming stores.
inline bool streams(const LifParams& p) {
  return p.T * p.N * int64_t(sizeof(float)) >= stream_min_bytes();
}

// Writes H [T, n1 - n0] (row t at hb + t * (n1 - n0)) of neurons [n0, n1), recomputed from x
// bit for bit as the forward computed it. Defined in lif.cpp, built without FMA contraction.
void recompute_h(const LifParams& p, const float* x, const float* v0, float* hb, int64_t n0,
                 int64_t n1);

}  // namespace lif_cpu
}  // namespace sparsesnn
