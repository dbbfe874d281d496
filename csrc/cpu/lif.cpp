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

enum Emit : int { kEmitSpikes = 0, kEmitH = 1 };

// All T steps of neurons [n0, n1): row t of the output (spikes, or H for backward) goes to
// out + t * out_stride, and V[T-1] to v_last when given. Streamed rows are staged in an L1
// block, then written with streaming stores.
template <int CHARGE, bool HARD, bool QUANT, int EMIT>
void march(const LifParams& p, const float* x, const float* v0, float* out, int64_t out_stride,
           float* v_last, int64_t n0, int64_t n1, bool stream) {
  const int64_t len = n1 - n0, N = p.N;
  const float vth = p.v_threshold, vr = HARD ? p.v_reset : 0.0f;
  float v[kChunk];
  float staged[kBlock];
  for (int64_t i = 0; i < len; ++i) v[i] = v0 ? v0[n0 + i] : vr;
  for (int64_t t = 0; t < p.T; ++t) {
    const float* xt = x + t * N + n0;
    float* ot = out + t * out_stride;
    for (int64_t b0 = 0; b0 < len; b0 += kBlock) {
      const int64_t bl = std::min(kBlock, len - b0);
      if (t + 1 < p.T) prefetch_block(xt + N + b0, bl);
      float* dst = stream ? staged : ot + b0;
#pragma omp simd
      for (int64_t i = 0; i < bl; ++i) {
        const int64_t k = b0 + i;
        const float h = charge<CHARGE, QUANT>(p, v[k], xt[k], vr, t, n0 + k);
        const float s = h >= vth ? 1.0f : 0.0f;
        dst[i] = EMIT == kEmitH ? h : s;
        v[k] = after_spike<HARD>(h, s, vth, vr);
      }
      if (stream) stream_row(ot + b0, staged, bl);
    }
  }
  if (v_last) std::copy(v, v + len, v_last + n0);
  if (stream) stream_fence();
}

using MarchFn = void (*)(const LifParams&, const float*, const float*, float*, int64_t, float*,
                         int64_t, int64_t, bool);

// The instantiation of march for p's charge form, reset and state format.
template <int EMIT>
MarchFn select_march(const LifParams& p) {
  const bool quant = p.state_step > 0.0f;
#define SSNN_MARCH(C, H) (quant ? march<C, H, true, EMIT> : march<C, H, false, EMIT>)
  switch (charge_of(p)) {
    case kDecayInput:
      return p.hard_reset ? SSNN_MARCH(kDecayInput, true) : SSNN_MARCH(kDecayInput, false);
    case kNoDecayInput:
      return p.hard_reset ? SSNN_MARCH(kNoDecayInput, true) : SSNN_MARCH(kNoDecayInput, false);
    default:
      return p.hard_reset ? SSNN_MARCH(kNoLeak, true) : SSNN_MARCH(kNoLeak, false);
  }
#undef SSNN_MARCH
}

}  // namespace

void recompute_h(const LifParams& p, const float* x, const float* v0, float* hb, int64_t n0,
                 int64_t n1) {
  select_march<kEmitH>(p)(p, x, v0, hb, n1 - n0, nullptr, n0, n1, false);
}

}  // namespace lif_cpu

void lif_forward_cpu(const LifParams& p, const float* x, const float* v0, float* spikes,
                     float* v_last) {
  using namespace lif_cpu;
  if (p.N == 0) return;
  const MarchFn march_chunk = select_march<kEmitSpikes>(p);
  const bool stream = streams(p);
  parallel_chunks(p.N, forward_chunk_size(), p.threads, [&](int64_t a, int64_t b) {
    march_chunk(p, x, v0, spikes + a, p.N, v_last, a, b, stream);
  });
}

}  // namespace sparsesnn
