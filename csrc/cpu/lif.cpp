// Fused multi-step LIF forward on CPU, and the exact recomputation of H used by backward.
//
// Neurons are split into chunks; a thread walks all T steps of its chunk with the membrane
// state in a small stack buffer, so each step is a unit-stride SIMD loop over neurons and
// every input element is read exactly once. Nothing is saved for backward: it recomputes H
// from x (recompute_h), bit for bit, because this file is built without FMA contraction.
#include "sparsesnn/lif.h"

#include "lif_common.h"
#include "parallel.h"
#include "sparsesnn/fixed_point.h"

namespace sparsesnn {
namespace lif_cpu {
namespace {

// H[t] of neuron n from V[t-1] and X[t], put on the fixed-point grid when QUANT. Written as
// separate operations so results match the reference bit for bit.
template <int CHARGE, bool QUANT>
inline float charge(const LifParams& p, float v, float x, float vr, int64_t t, int64_t n) {
  const float d = p.decay;
  float h;
  if constexpr (CHARGE == kDecayInput) h = v + (x - (v - vr)) * d;
  else if constexpr (CHARGE == kNoDecayInput) h = v - (v - vr) * d + x;
  else h = v + x;
  if constexpr (QUANT) {
    const float u = p.state_rounding == kStochastic
                        ? hash_uniform(p.seed, static_cast<uint64_t>(t * p.N + n)) : 0.0f;
    h = round_to_grid(h, p.state_step, p.state_min, p.state_max, p.state_rounding, u);
  }
  return h;
}

// Streamed spike rows are staged in an L1 block, then written with streaming stores.
template <int CHARGE, bool HARD, bool QUANT>
void forward_chunk(const LifParams& p, const float* x, const float* v0, float* spikes,
                   float* v_last, int64_t n0, int64_t n1, bool stream) {
  const int64_t len = n1 - n0, N = p.N;
  const float vth = p.v_threshold, vr = HARD ? p.v_reset : 0.0f;
  float v[kChunk];
  float staged[kBlock];
  for (int64_t i = 0; i < len; ++i) v[i] = v0 ? v0[n0 + i] : vr;
  for (int64_t t = 0; t < p.T; ++t) {
    const float* xt = x + t * N + n0;
    float* st = spikes + t * N + n0;
    for (int64_t b0 = 0; b0 < len; b0 += kBlock) {
      const int64_t bl = std::min(kBlock, len - b0);
      if (t + 1 < p.T) prefetch_block(xt + N + b0, bl);
      float* out = stream ? staged : st + b0;
#pragma omp simd
      for (int64_t i = 0; i < bl; ++i) {
        const int64_t k = b0 + i;
        const float h = charge<CHARGE, QUANT>(p, v[k], xt[k], vr, t, n0 + k);
        const float s = h >= vth ? 1.0f : 0.0f;
        out[i] = s;
        v[k] = after_spike<HARD>(h, s, vth, vr);
      }
      if (stream) stream_row(st + b0, staged, bl);
    }
  }
  std::copy(v, v + len, v_last + n0);
  if (stream) stream_fence();
}

template <int CHARGE, bool HARD, bool QUANT>
void recompute_chunk(const LifParams& p, const float* x, const float* v0, float* hb, int64_t n0,
                     int64_t n1) {
  const int64_t len = n1 - n0;
  const float vth = p.v_threshold, vr = HARD ? p.v_reset : 0.0f;
  float v[kChunk];
  for (int64_t i = 0; i < len; ++i) v[i] = v0 ? v0[n0 + i] : vr;
  for (int64_t t = 0; t < p.T; ++t) {
    const float* xt = x + t * p.N + n0;
    float* ht = hb + t * len;
    for (int64_t b0 = 0; b0 < len; b0 += kBlock) {
      const int64_t b1 = std::min(len, b0 + kBlock);
      if (t + 1 < p.T) prefetch_block(xt + p.N + b0, b1 - b0);
#pragma omp simd
      for (int64_t i = b0; i < b1; ++i) {
        const float h = charge<CHARGE, QUANT>(p, v[i], xt[i], vr, t, n0 + i);
        ht[i] = h;
        v[i] = after_spike<HARD>(h, h >= vth ? 1.0f : 0.0f, vth, vr);
      }
    }
  }
}

template <int CHARGE, bool HARD>
void forward_dispatch_quant(const LifParams& p, const float* x, const float* v0, float* s,
                            float* vl) {
  const bool quant = p.state_step > 0.0f, stream = streams(p);
  parallel_chunks(p.N, kChunk, p.threads, [&](int64_t a, int64_t b) {
    if (quant) forward_chunk<CHARGE, HARD, true>(p, x, v0, s, vl, a, b, stream);
    else forward_chunk<CHARGE, HARD, false>(p, x, v0, s, vl, a, b, stream);
  });
}

template <int CHARGE>
void forward_dispatch_reset(const LifParams& p, const float* x, const float* v0, float* s,
                            float* vl) {
  if (p.hard_reset) forward_dispatch_quant<CHARGE, true>(p, x, v0, s, vl);
  else forward_dispatch_quant<CHARGE, false>(p, x, v0, s, vl);
}

template <int CHARGE>
void recompute_reset(const LifParams& p, const float* x, const float* v0, float* hb, int64_t n0,
                     int64_t n1) {
  const bool quant = p.state_step > 0.0f;
  if (p.hard_reset) {
    if (quant) recompute_chunk<CHARGE, true, true>(p, x, v0, hb, n0, n1);
    else recompute_chunk<CHARGE, true, false>(p, x, v0, hb, n0, n1);
  } else {
    if (quant) recompute_chunk<CHARGE, false, true>(p, x, v0, hb, n0, n1);
    else recompute_chunk<CHARGE, false, false>(p, x, v0, hb, n0, n1);
  }
}

}  // namespace

void recompute_h(const LifParams& p, const float* x, const float* v0, float* hb, int64_t n0,
                 int64_t n1) {
  switch (charge_of(p)) {
    case kDecayInput: recompute_reset<kDecayInput>(p, x, v0, hb, n0, n1); break;
    case kNoDecayInput: recompute_reset<kNoDecayInput>(p, x, v0, hb, n0, n1); break;
    default: recompute_reset<kNoLeak>(p, x, v0, hb, n0, n1); break;
  }
}

}  // namespace lif_cpu

void lif_forward_cpu(const LifParams& p, const float* x, const float* v0, float* spikes,
                     float* v_last) {
  using namespace lif_cpu;
  if (p.N == 0) return;
  switch (charge_of(p)) {
    case kDecayInput: forward_dispatch_reset<kDecayInput>(p, x, v0, spikes, v_last); break;
    case kNoDecayInput: forward_dispatch_reset<kNoDecayInput>(p, x, v0, spikes, v_last); break;
    default: forward_dispatch_reset<kNoLeak>(p, x, v0, spikes, v_last); break;
  }
}

}  // namespace sparsesnn
